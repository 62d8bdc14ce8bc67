//! A client connection moves to the shard that owns the partitions it uses (`moving` in
//! the server's protocol module), against a real `shardlogd` with two shards: one
//! connection produces to a partition of each shard in turn, pipelined and then one
//! request at a time, so it must move at least three times whichever shard it landed on.
//! Every acknowledged record is read back in order, byte for byte; the node counts the
//! moves; over a node that requires SASL the moved connection stays authenticated; a
//! Kafka connection moves the same way.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;
#[path = "common/kafka_client.rs"]
#[allow(dead_code)] // the group steps are for the group tests
mod kafka_client;

use std::time::Duration;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardlog_net::api::{Acks, TopicConfig};
use shardlog_net::client::{Client, ClientConfig, SaslCredentials};
use shardlog_net::scram::Mechanism;
use shardlog_net::testing::{Shardlogd, metric};

/// Requests in a row to one partition: past the server's `MOVE_AFTER` (16).
const IN_A_ROW: usize = 40;
/// Requests of a pipelined phase, all in flight at once.
const PIPELINED: usize = 600;

fn value(partition: u32, i: usize) -> Vec<u8> {
    let mut v = format!("p{partition}-r{i}-").into_bytes();
    v.extend((0..(i % 200)).map(|j| u8::try_from((j * 13 + i) % 251).unwrap()));
    v
}

/// Produces to `partition`, `PIPELINED` requests at once (the switch to this partition's
/// shard comes with requests read ahead), then one at a time (the connection ends the
/// phase on the partition's shard): each is acknowledged at the next offset.
async fn produce_phase(client: &Client, partition: u32, first: usize) -> usize {
    let sends: Vec<_> = (first..first + PIPELINED)
        .map(|i| {
            let batch = common::batch(&[value(partition, i)]);
            client.produce("moves", partition, Acks::All, batch)
        })
        .collect();
    for (i, base) in (first..).zip(futures::future::join_all(sends).await) {
        assert_eq!(
            base.unwrap(),
            Some(i as u64),
            "partition {partition}, request {i}"
        );
    }
    let first = first + PIPELINED;
    for i in first..first + IN_A_ROW {
        let batch = common::batch(&[value(partition, i)]);
        let base = client.produce("moves", partition, Acks::All, batch).await;
        assert_eq!(
            base.unwrap(),
            Some(i as u64),
            "partition {partition}, request {i}"
        );
    }
    first + IN_A_ROW
}

/// Runs the phases on partitions 0 and 1 (owned by the two shards: a topic's partitions
/// go round-robin over them) and checks what the node kept and counted.
fn moves_and_keeps_every_record(server: &Shardlogd, config: ClientConfig) {
    // No retries: a request lost in a move fails the test instead of being sent again.
    let config = ClientConfig {
        retries: 0,
        request_timeout: Duration::from_secs(10),
        ..config
    };
    let brokers = server.brokers();
    common::run(move || async move {
        // A node requiring SASL creates its superuser once it serves: retry until then.
        let started = std::time::Instant::now();
        let client = loop {
            let created = match Client::connect(&brokers, config.clone()).await {
                Ok(client) => client
                    .create_topic("moves", 2, 1, TopicConfig::default())
                    .await
                    .map(|()| client),
                Err(e) => Err(e),
            };
            match created {
                Ok(client) => break client,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    eprintln!("create_topic: {e}; retrying");
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("create_topic: {e}"),
            }
        };
        let mut next = [0usize; 2];
        for round in 0..2 {
            for partition in 0..2u32 {
                let at = &mut next[partition as usize];
                *at = produce_phase(&client, partition, *at).await;
                assert_eq!(*at, (round + 1) * (IN_A_ROW + PIPELINED));
            }
        }
        read_back(&client, next).await;
    });
    assert_moved_on_each_switch(server);
}

/// Every record of partitions 0 and 1 (`next` of each), in order, byte for byte.
async fn read_back(client: &Client, next: [usize; 2]) {
    for partition in 0..2u32 {
        let records = common::consume_all(client, "moves", partition, 0).await;
        assert_eq!(records.len(), next[partition as usize]);
        for (i, (offset, v)) in records.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            assert_eq!(v, &value(partition, i), "partition {partition}, offset {i}");
        }
    }
}

/// Four switches between the two shards' partitions: the first may find the connection
/// already where it should be, the other three move it.
fn assert_moved_on_each_switch(server: &Shardlogd) {
    let moved = metric(
        server.admin_addr.unwrap(),
        "shardlog_connections_moved_total",
    );
    let moved = moved.unwrap();
    assert!((3.0..=4.0).contains(&moved), "{moved} moves");
}

#[test]
fn a_connection_moves_to_its_partitions_shard_and_loses_nothing() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    moves_and_keeps_every_record(&server, ClientConfig::default());
}

#[test]
fn a_moved_connection_stays_authenticated() {
    let dir = common::data_dir();
    let superuser = ("admin", "admin-secret");
    let server = Shardlogd::start_with_superuser(dir.path(), superuser, &["--shards", "2"]);
    let server = server.unwrap();
    let config = ClientConfig {
        sasl: Some(SaslCredentials {
            user: "admin".into(),
            password: "admin-secret".into(),
            mechanism: Mechanism::Sha256,
        }),
        ..ClientConfig::default()
    };
    moves_and_keeps_every_record(&server, config);
}

/// One record to `partition` of "moves" over Kafka's Produce v7, acks=all: its offset.
fn kafka_produce(conn: &mut kafka_client::KafkaConn, partition: u32, i: usize) -> i64 {
    let batch = common::batch(&[value(partition, i)]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("moves")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(i32::try_from(partition).unwrap())
                        .with_records(Some(batch)),
                ]),
        ]);
    let response: ProduceResponse = conn.call(ApiKey::Produce, 7, &request).unwrap();
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(
        answer.error_code, 0,
        "partition {partition}, request {i}: {answer:?}"
    );
    answer.base_offset
}

#[test]
fn a_kafka_connection_moves_too() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        let config = TopicConfig::default();
        client.create_topic("moves", 2, 1, config).await.unwrap();
    });
    // One request at a time (a blocking client), IN_A_ROW to each partition in turn.
    let mut conn = kafka_client::KafkaConn::connect(&server.kafka_addr.to_string()).unwrap();
    let mut next = [0usize; 2];
    for _round in 0..2 {
        for partition in 0..2u32 {
            let at = &mut next[partition as usize];
            for i in *at..*at + IN_A_ROW {
                assert_eq!(kafka_produce(&mut conn, partition, i), i as i64);
            }
            *at += IN_A_ROW;
        }
    }
    let brokers = server.brokers();
    common::run(move || async move {
        read_back(&common::connect(&brokers).await, next).await;
    });
    assert_moved_on_each_switch(&server);
}
