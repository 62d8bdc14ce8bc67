//! Batches compressed by a client (gzip, snappy, lz4, zstd), made by the `kafka-protocol`
//! crate's record encoder and codecs (Kafka's clients' format, an implementation
//! independent of ours), produced to a real `shardlogd`, which stores them as they came:
//! `shardlog consume` (online) and `shardlog dump` (offline, on the server's files) print
//! their records; a batch whose payload does not decompress is a clear error in both. The
//! same batches sent as Kafka Produce requests to the Kafka listener are stored as they
//! came too.
#![cfg(test)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shardlog_engine::TimestampMs;
use shardlog_engine::record::BatchBuilder;
use shardlog_net::api::Acks;

use common::{Server, describe, shardlog};

const CODECS: [(Compression, &str); 4] = [
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];
const RECORDS: usize = 12;

fn key(codec: &str, i: usize) -> String {
    format!("{codec}-{i}")
}

/// Long and repetitive, so it compresses; distinct per codec and record.
fn value(codec: &str, i: usize) -> String {
    format!("{codec} record {i};").repeat(30)
}

/// Now, in ms: records older than the retention time would be deleted under the test.
fn now_ms() -> i64 {
    TimestampMs::now().0
}

fn client_batch(compression: Compression, codec: &str) -> Bytes {
    client_batch_at(compression, codec, now_ms())
}

fn client_batch_at(compression: Compression, codec: &str, timestamp: i64) -> Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_static_str("codec"),
                Some(Bytes::from(codec.to_owned())),
            );
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i64::try_from(i).unwrap(),
                // The encoder groups records whose offset - sequence agree: base sequence -1.
                sequence: i32::try_from(i).unwrap() - 1,
                timestamp,
                key: Some(Bytes::from(key(codec, i))),
                value: Some(Bytes::from(value(codec, i))),
                headers,
            }
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut out, &records, &options).unwrap();
    assert!(
        out.len() < RECORDS * value(codec, 0).len() / 2,
        "compressed"
    );
    out.freeze()
}

/// A batch marked gzip whose payload is the plain records (not gzip), CRC recomputed:
/// the broker stores it (it never decompresses); the tools must say it is broken.
fn broken_gzip_batch() -> Bytes {
    let mut builder = BatchBuilder::new();
    for i in 0..3 {
        builder.push(
            TimestampMs(1),
            None,
            Some(format!("plain {i}").as_bytes()),
            &[],
        );
    }
    let mut bytes = builder.finish();
    bytes[22] |= 1;
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

/// Produces `batches` to partition 0 of `topic`, one request each, with acks=all.
fn produce(brokers: &str, topic: &'static str, batches: Vec<Bytes>) {
    let brokers = brokers.to_owned();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let client = shardlog_net::client::Client::connect(&brokers, Default::default())
                .await
                .unwrap();
            for batch in batches {
                client.produce(topic, 0, Acks::All, batch).await.unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// `DATA/<topic>-<id>/0`.
fn partition_dir(data: &Path, topic: &str) -> PathBuf {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{topic}-")))
        })
        .unwrap_or_else(|| panic!("no {topic} directory in {}", data.display()))
        .join("0")
}

#[test]
fn consume_and_dump_print_the_records_of_every_codec() {
    let server = Server::start();
    server.create("zipped", 1);
    let now = now_ms();
    let batches = CODECS
        .iter()
        .map(|(c, name)| client_batch_at(*c, name, now))
        .collect();
    produce(&server.brokers(), "zipped", batches);

    let json = server.ok(
        &[
            "consume",
            "--topic",
            "zipped",
            "--from",
            "beginning",
            "--format",
            "json",
        ],
        "",
    );
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), CODECS.len() * RECORDS, "{json}");
    for (c, (_, codec)) in CODECS.iter().enumerate() {
        for i in 0..RECORDS {
            let line = &lines[c * RECORDS + i];
            assert_eq!(line["offset"], c * RECORDS + i, "{line}");
            assert_eq!(line["key"], key(codec, i), "{line}");
            assert_eq!(line["value"], value(codec, i), "{line}");
            assert_eq!(line["timestamp"], now, "{line}");
            assert_eq!(line["headers"][0]["value"], *codec, "{line}");
        }
    }

    let partition = partition_dir(server.dir.path(), "zipped");
    let dump = shardlog(&["dump", "--json", partition.to_str().unwrap()], "");
    assert_eq!(dump.status.code(), Some(0), "{}", describe(&dump));
    let dumped: Vec<serde_json::Value> = String::from_utf8(dump.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codecs: Vec<_> = dumped
        .iter()
        .filter(|l| l["type"] == "batch")
        .map(|l| l["compression"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codecs, ["gzip", "snappy", "lz4", "zstd"]);
    let records: Vec<_> = dumped.iter().filter(|l| l["type"] == "record").collect();
    assert_eq!(records.len(), CODECS.len() * RECORDS);
    for (c, (_, codec)) in CODECS.iter().enumerate() {
        let record = records[c * RECORDS + 5];
        assert_eq!(record["offset"], c * RECORDS + 5);
        assert_eq!(record["key"], key(codec, 5));
        assert_eq!(record["value_len"], value(codec, 5).len());
    }
}

#[test]
fn a_payload_that_does_not_decompress_is_an_error() {
    let server = Server::start();
    server.create("broken", 1);
    produce(
        &server.brokers(),
        "broken",
        vec![client_batch(Compression::Lz4, "lz4"), broken_gzip_batch()],
    );

    let consume = server.run(&["consume", "--topic", "broken", "--from", "beginning"], "");
    let stderr = String::from_utf8_lossy(&consume.stderr);
    assert_eq!(consume.status.code(), Some(1), "{}", describe(&consume));
    assert!(
        stderr.contains("the batch at offset 12")
            && stderr.contains("gzip payload does not decompress"),
        "{stderr}"
    );
    // The good batch before it was printed.
    assert_eq!(
        String::from_utf8_lossy(&consume.stdout).lines().count(),
        RECORDS
    );

    let partition = partition_dir(server.dir.path(), "broken");
    let dump = shardlog(&["dump", partition.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&dump.stdout);
    assert_eq!(dump.status.code(), Some(1), "{}", describe(&dump));
    assert!(
        stdout.contains("records unreadable: the gzip payload does not decompress"),
        "{stdout}"
    );
    assert!(stdout.contains("compression lz4"), "{stdout}");
}

/// Sends one Kafka Produce v7 request (acks=-1) of `batch` to partition 0 of `topic` over
/// `stream`; returns the partition's error code and base offset.
fn kafka_produce(
    stream: &mut TcpStream,
    correlation: i32,
    topic: &str,
    batch: Bytes,
) -> (i16, i64) {
    const VERSION: i16 = 7;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_records(Some(batch)),
                ]),
        ]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(correlation);
    let mut body = BytesMut::new();
    header
        .encode(&mut body, ApiKey::Produce.request_header_version(VERSION))
        .unwrap();
    request.encode(&mut body, VERSION).unwrap();
    stream
        .write_all(&u32::try_from(body.len()).unwrap().to_be_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut frame = vec![0u8; usize::try_from(u32::from_be_bytes(length)).unwrap()];
    stream.read_exact(&mut frame).unwrap();
    let mut frame = Bytes::from(frame);
    let header =
        ResponseHeader::decode(&mut frame, ApiKey::Produce.response_header_version(VERSION))
            .unwrap();
    assert_eq!(header.correlation_id, correlation);
    let response = ProduceResponse::decode(&mut frame, VERSION).unwrap();
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[test]
fn kafka_produce_of_every_codec_is_stored_as_it_came() {
    let server = Server::start();
    server.create("kafka-zipped", 1);
    let mut stream = TcpStream::connect(server.shardlogd.kafka_addr).unwrap();
    for (c, (compression, codec)) in CODECS.iter().enumerate() {
        let (error, base) = kafka_produce(
            &mut stream,
            i32::try_from(c).unwrap(),
            "kafka-zipped",
            client_batch(*compression, codec),
        );
        assert_eq!(
            (error, base),
            (0, i64::try_from(c * RECORDS).unwrap()),
            "{codec}"
        );
    }
    // Codec 6 is no codec: CORRUPT_MESSAGE (2), nothing stored.
    let mut bad = client_batch(Compression::Gzip, "gzip").to_vec();
    bad[22] = (bad[22] & !7) | 6;
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let (error, _) = kafka_produce(&mut stream, 9, "kafka-zipped", Bytes::from(bad));
    assert_eq!(error, 2, "a batch of codec 6");

    let values = server.ok(
        &["consume", "--topic", "kafka-zipped", "--from", "beginning"],
        "",
    );
    let expected: Vec<String> = CODECS
        .iter()
        .flat_map(|(_, codec)| (0..RECORDS).map(|i| value(codec, i)))
        .collect();
    assert_eq!(values.lines().collect::<Vec<_>>(), expected);
}
