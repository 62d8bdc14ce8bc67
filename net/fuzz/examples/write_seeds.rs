//! Writes the seed corpus of `frame_decode`: one valid frame per request and response
//! type, batches included, into the directory given (default `seeds/frame_decode`).
//!
//!     cargo run --example write_seeds -- seeds/frame_decode

use std::path::PathBuf;

use shardlog_engine::TimestampMs;
use shardlog_engine::record::BatchBuilder;
use shardlog_net::api::{
    Acks, Api, BrokerMetadata, CreateTopicRequest, DeleteTopicRequest, ErrorResponse, FetchRequest,
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetSpec, PartitionMetadata, ProduceRequest, ProduceResponse, REPLICATE_VERSION,
    ReplicateRequest, TopicConfig, TopicMetadata, TopicResponse, VERSION,
};
use shardlog_net::frame::{FLAG_ERROR, encode_head};
use shardlog_replicator::NodeId;
use shardlog_replicator::message::{self, Message, Ship};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "seeds/frame_decode".to_owned()),
    );
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let batch = record_batch(3);
    let two_batches = [record_batch(1), record_batch(2)].concat();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "metadata_all",
            frame(Api::Metadata, 0, &MetadataRequest { topics: vec![] }, &[]),
        ),
        (
            "metadata_one",
            frame(
                Api::Metadata,
                0,
                &MetadataRequest {
                    topics: vec!["orders".into()],
                },
                &[],
            ),
        ),
        (
            "create_topic",
            frame(Api::CreateTopic, 0, &create_topic(), &[]),
        ),
        (
            "delete_topic",
            frame(
                Api::DeleteTopic,
                0,
                &DeleteTopicRequest {
                    name: "orders".into(),
                },
                &[],
            ),
        ),
        ("produce", frame(Api::Produce, 0, &produce(), &batch)),
        ("fetch", frame(Api::Fetch, 0, &fetch(), &[])),
        (
            "list_offsets_earliest",
            frame(Api::ListOffsets, 0, &list(OffsetSpec::Earliest), &[]),
        ),
        (
            "list_offsets_time",
            frame(Api::ListOffsets, 0, &list(OffsetSpec::Timestamp(7)), &[]),
        ),
        (
            "metadata_response",
            frame(Api::Metadata, 0, &metadata_response(), &[]),
        ),
        (
            "topic_response",
            frame(Api::CreateTopic, 0, &topic_response(), &[]),
        ),
        (
            "produce_response",
            frame(Api::Produce, 0, &produce_response(), &[]),
        ),
        (
            "fetch_response",
            frame(Api::Fetch, 0, &fetch_response(), &two_batches),
        ),
        (
            "list_offsets_response",
            frame(Api::ListOffsets, 0, &list_response(), &[]),
        ),
        (
            "error_response",
            frame(Api::Produce, FLAG_ERROR, &error_response(), &[]),
        ),
        ("replicate_ship", replicate(&batch)),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("seeds written to {}", dir.display());
}

/// A Replicate frame carrying a ship of `batch`, as a peer would send it: the envelope
/// in the meta, the batch as the data region.
fn replicate(batch: &[u8]) -> Vec<u8> {
    let mut batches = message::Batches::default();
    batches.push(bytes::Bytes::copy_from_slice(batch), 1);
    let ship = Message::Ship(Ship {
        leader_epoch: 2,
        prev_offset: 0,
        prev_epoch: 1,
        high_watermark: 0,
        batches,
    });
    let (envelope, _) = message::seal(3, NodeId(1), NodeId(2), ship);
    let meta = ReplicateRequest {
        topic: "orders".into(),
        envelope,
    };
    let mut out = Vec::new();
    encode_head(
        &mut out,
        Api::Replicate as u16,
        REPLICATE_VERSION,
        42,
        0,
        &meta,
        batch.len(),
    )
    .expect("encode");
    out.extend_from_slice(batch);
    out
}

fn frame<T>(api: Api, flags: u16, meta: &T, data: &[u8]) -> Vec<u8>
where
    T: shardlog_net::frame::Meta,
{
    let mut out = Vec::new();
    encode_head(&mut out, api as u16, VERSION, 42, flags, meta, data.len()).expect("encode");
    out.extend_from_slice(data);
    out
}

fn record_batch(records: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        let value = format!("value-{i}");
        let key = format!("key-{i}");
        let key = (i % 2 == 0).then_some(key.as_bytes());
        let headers: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"v"))];
        builder.push(
            TimestampMs(1_700_000_000_000 + i64::from(i)),
            key,
            Some(value.as_bytes()),
            if i == 1 { headers } else { &[] },
        );
    }
    builder.finish()
}

fn create_topic() -> CreateTopicRequest {
    CreateTopicRequest {
        name: "orders".into(),
        partitions: 3,
        replication_factor: 1,
        config: TopicConfig {
            segment_bytes: Some(1 << 20),
            retention_bytes: None,
            retention_ms: Some(86_400_000),
            min_insync: Some(2),
        },
    }
}

fn produce() -> ProduceRequest {
    ProduceRequest {
        topic: "orders".into(),
        partition: 1,
        acks: Acks::All,
        timeout_ms: 30_000,
    }
}

fn fetch() -> FetchRequest {
    FetchRequest {
        topic: "orders".into(),
        partition: 1,
        offset: 5,
        max_bytes: 1 << 20,
        max_wait_ms: 500,
        min_bytes: 1,
    }
}

fn list(spec: OffsetSpec) -> ListOffsetsRequest {
    ListOffsetsRequest {
        topic: "orders".into(),
        partition: 0,
        spec,
    }
}

fn metadata_response() -> MetadataResponse {
    MetadataResponse {
        node_id: 0,
        controller: Some(0),
        brokers: vec![BrokerMetadata {
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
            live: true,
            draining: false,
        }],
        topics: vec![TopicMetadata {
            name: "orders".into(),
            error: 0,
            partitions: vec![PartitionMetadata {
                partition: 0,
                leader: Some(0),
                leader_epoch: 1,
                replicas: vec![0],
                isr: vec![0],
            }],
        }],
    }
}

fn topic_response() -> TopicResponse {
    TopicResponse {
        error: 9,
        message: "topic orders exists".into(),
    }
}

fn produce_response() -> ProduceResponse {
    ProduceResponse {
        error: 0,
        base_offset: 17,
        leader_hint: None,
        message: String::new(),
    }
}

fn fetch_response() -> FetchResponse {
    FetchResponse {
        error: 0,
        high_watermark: 3,
        log_start: 0,
        next_offset: 3,
        leader_hint: Some(0),
        message: String::new(),
    }
}

fn list_response() -> ListOffsetsResponse {
    ListOffsetsResponse {
        error: 0,
        offset: Some(3),
        leader_hint: None,
        message: String::new(),
    }
}

fn error_response() -> ErrorResponse {
    ErrorResponse {
        error: 8,
        message: "meta does not decode".into(),
    }
}
