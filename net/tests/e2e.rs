//! End to end against a real `shardlogd` child process on 127.0.0.1: topics, produce
//! across partitions, consume back in order byte for byte, list offsets, long polls, and
//! four shards on two cores with every partition reachable from any connection.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::too_many_lines
)]

mod common;

use std::time::{Duration, Instant};

use shardlog_engine::record::RecordIter;
use shardlog_net::ErrorCode;
use shardlog_net::api::{Acks, OffsetSpec, TopicConfig};
use shardlog_net::client::FetchOptions;
use shardlog_net::testing::Shardlogd;

fn value(partition: u32, i: usize) -> Vec<u8> {
    let mut v = format!("p{partition}-r{i}-").into_bytes();
    v.extend((0..(i % 300)).map(|j| (j * 7 + i) as u8));
    v
}

#[test]
fn produce_and_consume_across_partitions() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        client
            .create_topic("orders", 3, 1, TopicConfig::default())
            .await
            .unwrap();
        let again = client
            .create_topic("orders", 3, 1, TopicConfig::default())
            .await;
        assert_eq!(again.unwrap_err().code(), Some(ErrorCode::TopicExists));
        assert_eq!(client.partition_count("orders").await.unwrap(), 3);

        // 3 partitions x 20 batches of 10 records, all in flight at once; record i of a
        // partition is stamped base + i ms.
        let base_ms = common::now_ms();
        let mut sends = Vec::new();
        for partition in 0..3u32 {
            for b in 0..20usize {
                let values: Vec<Vec<u8>> = (0..10).map(|r| value(partition, b * 10 + r)).collect();
                sends.push((
                    partition,
                    b,
                    client.produce(
                        "orders",
                        partition,
                        Acks::Leader,
                        common::batch_at(base_ms + (b * 10) as i64, &values),
                    ),
                ));
            }
        }
        for (partition, b, send) in sends {
            let base = send.await.unwrap().unwrap();
            assert_eq!(
                base,
                (b * 10) as u64,
                "partition {partition}: batches appended in send order"
            );
        }
        for partition in 0..3u32 {
            let records = common::consume_all(&client, "orders", partition, 0).await;
            assert_eq!(records.len(), 200);
            for (i, (offset, v)) in records.iter().enumerate() {
                assert_eq!(*offset, i as u64);
                assert_eq!(v, &value(partition, i), "partition {partition} offset {i}");
            }
            assert_eq!(
                client
                    .list_offset("orders", partition, OffsetSpec::Earliest)
                    .await
                    .unwrap(),
                Some(0)
            );
            assert_eq!(
                client
                    .list_offset("orders", partition, OffsetSpec::Latest)
                    .await
                    .unwrap(),
                Some(200)
            );
            assert_eq!(
                client
                    .list_offset("orders", partition, OffsetSpec::Timestamp(base_ms + 5))
                    .await
                    .unwrap(),
                Some(5),
                "the first record at or after the time, in the first batch"
            );
            assert_eq!(
                client
                    .list_offset("orders", partition, OffsetSpec::Timestamp(i64::MAX))
                    .await
                    .unwrap(),
                None
            );
        }
        // Reading from the middle of a batch starts at that batch; offsets past the end fail.
        let records = common::consume_all(&client, "orders", 1, 55).await;
        assert_eq!(records.first().unwrap().0, 55);
        let past = client
            .fetch("orders", 1, 201, FetchOptions::default())
            .await;
        assert_eq!(past.unwrap_err().code(), Some(ErrorCode::OffsetOutOfRange));
        let unknown = client.fetch("nope", 0, 0, FetchOptions::default()).await;
        assert_eq!(unknown.unwrap_err().code(), Some(ErrorCode::UnknownTopic));
        let partition = client
            .produce("orders", 7, Acks::Leader, common::batch(&[b"x".to_vec()]))
            .await;
        assert_eq!(
            partition.unwrap_err().code(),
            Some(ErrorCode::UnknownPartition)
        );

        client.delete_topic("orders").await.unwrap();
        let gone = client.fetch("orders", 0, 0, FetchOptions::default()).await;
        assert_eq!(gone.unwrap_err().code(), Some(ErrorCode::UnknownTopic));
    });
    drop(server);
}

#[test]
fn long_poll_waits_for_data_at_the_tail() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "1"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        client
            .create_topic("tail", 1, 1, TopicConfig::default())
            .await
            .unwrap();
        // Nothing there: the poll waits about max_wait, then answers empty.
        let started = Instant::now();
        let options = FetchOptions {
            max_wait: Duration::from_millis(300),
            ..FetchOptions::default()
        };
        let empty = client.fetch("tail", 0, 0, options).await.unwrap();
        assert!(empty.data.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "the poll waited"
        );
        // A producer during the poll wakes it with the record.
        let poller = client.clone();
        let poll = glommio::spawn_local(async move {
            let options = FetchOptions {
                max_wait: Duration::from_secs(20),
                ..FetchOptions::default()
            };
            poller.fetch("tail", 0, 0, options).await.unwrap()
        });
        glommio::timer::sleep(Duration::from_millis(100)).await;
        client
            .produce("tail", 0, Acks::Leader, common::batch(&[b"hello".to_vec()]))
            .await
            .unwrap();
        let fetched = poll.await;
        assert_eq!(fetched.high_watermark, 1);
        let (header, bytes) = fetched.batches().next().unwrap().unwrap();
        let record = RecordIter::new(&header, bytes).next().unwrap().unwrap();
        assert_eq!(record.value.unwrap(), b"hello");
    });
    drop(server);
}

/// Four shards on two cores: every partition is served through a connection to any
/// shard (most requests cross shards, through the forwarding inboxes).
#[test]
fn four_shards_every_partition_from_every_connection() {
    const CLIENTS: usize = 40;
    let dir = common::data_dir();
    let server =
        Shardlogd::start(dir.path(), &["--shards", "4", "--io-memory", "1048576"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let admin = common::connect(&brokers).await;
        admin
            .create_topic("wide", 8, 1, TopicConfig::default())
            .await
            .unwrap();
        // Many clients: SO_REUSEPORT spreads their connections over the four shards by a
        // hash, so 40 connections leave a shard without one with probability 4 x 0.75^40,
        // about 4e-5. Each connection reaches 6 of the 8 partitions through another shard.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(common::connect(&brokers).await);
        }
        for (c, client) in clients.iter().enumerate() {
            for partition in 0..8u32 {
                let values = vec![format!("c{c}-p{partition}").into_bytes()];
                let base = client
                    .produce("wide", partition, Acks::All, common::batch(&values))
                    .await
                    .unwrap();
                assert_eq!(base, Some(c as u64));
            }
        }
        for client in &clients {
            for partition in 0..8u32 {
                let records = common::consume_all(client, "wide", partition, 0).await;
                let expected: Vec<(u64, Vec<u8>)> = (0..CLIENTS)
                    .map(|c| (c as u64, format!("c{c}-p{partition}").into_bytes()))
                    .collect();
                assert_eq!(records, expected);
            }
        }
    });
    drop(server);
}

#[test]
fn restart_reopens_every_topic() {
    let dir = common::data_dir();
    let mut server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        for topic in ["a", "b"] {
            client
                .create_topic(topic, 2, 1, TopicConfig::default())
                .await
                .unwrap();
            for partition in 0..2 {
                let values = vec![format!("{topic}{partition}").into_bytes()];
                client
                    .produce(topic, partition, Acks::Leader, common::batch(&values))
                    .await
                    .unwrap();
            }
        }
    });
    let status = server.terminate().unwrap();
    assert!(status.success(), "clean stop on SIGTERM: {status}");
    let server = Shardlogd::start(dir.path(), &["--shards", "3"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        for topic in ["a", "b"] {
            for partition in 0..2 {
                let records = common::consume_all(&client, topic, partition, 0).await;
                assert_eq!(
                    records,
                    vec![(0, format!("{topic}{partition}").into_bytes())]
                );
            }
        }
    });
    drop(server);
}

/// Topic settings reach the partitions, and the shard's upkeep applies them: small
/// segments roll, and retention by size deletes the oldest ones, moving the log start.
#[test]
fn topic_retention_runs_in_the_background() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "1"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        let config = TopicConfig {
            segment_bytes: Some(64 << 10),
            retention_bytes: Some(256 << 10),
            retention_ms: None,
            min_insync: None,
        };
        client.create_topic("short", 1, 1, config).await.unwrap();
        let values: Vec<Vec<u8>> = (0..10).map(|_| vec![7u8; 1000]).collect();
        for _ in 0..100 {
            client
                .produce("short", 0, Acks::Leader, common::batch(&values))
                .await
                .unwrap();
        }
        // Retention deletes one segment at a time: wait until the log start has moved
        // and then stays put for a while, so the read below does not race a deletion.
        let mut earliest = 0;
        let mut still = 0;
        for _ in 0..200 {
            let now = client
                .list_offset("short", 0, OffsetSpec::Earliest)
                .await
                .unwrap()
                .unwrap();
            still = if now == earliest { still + 1 } else { 0 };
            earliest = now;
            if earliest > 0 && still >= 4 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        assert!(earliest > 0, "retention moved the log start");
        let latest = client
            .list_offset("short", 0, OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(latest, Some(1000));
        let records = common::consume_all(&client, "short", 0, earliest).await;
        assert_eq!(records.first().map(|r| r.0), Some(earliest));
        assert_eq!(records.last().map(|r| r.0), Some(999));
    });
    drop(server);
}

/// Under `flush=never` a produce is acknowledged once written, consumers see it, and a
/// clean stop syncs it: a restart finds every record.
#[test]
fn flush_never_is_visible_and_survives_a_clean_stop() {
    let dir = common::data_dir();
    let mut server = Shardlogd::start(dir.path(), &["--shards", "2", "--flush", "never"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        client
            .create_topic("fast", 2, 1, TopicConfig::default())
            .await
            .unwrap();
        for i in 0..50u32 {
            let values = vec![format!("v{i}").into_bytes()];
            client
                .produce("fast", i % 2, Acks::Leader, common::batch(&values))
                .await
                .unwrap();
        }
        for partition in 0..2 {
            assert_eq!(
                common::consume_all(&client, "fast", partition, 0)
                    .await
                    .len(),
                25
            );
        }
    });
    assert!(server.terminate().unwrap().success());
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        for partition in 0..2 {
            assert_eq!(
                common::consume_all(&client, "fast", partition, 0)
                    .await
                    .len(),
                25
            );
        }
    });
}

/// With the shortest task quota the connection's read loop yields between requests all
/// the time (`--task-quota-us`): 2,000 one-record requests in flight at once on one
/// connection must still be appended in send order, each acknowledged once, and read back
/// byte for byte.
#[test]
fn the_shortest_task_quota_keeps_pipelined_requests_in_order() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "1", "--task-quota-us", "10"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        client
            .create_topic("quota", 1, 1, TopicConfig::default())
            .await
            .unwrap();
        let sends: Vec<_> = (0..2000)
            .map(|i| {
                let values = vec![value(0, i)];
                client.produce("quota", 0, Acks::Leader, common::batch(&values))
            })
            .collect();
        let bases = futures::future::join_all(sends).await;
        for (i, base) in bases.into_iter().enumerate() {
            assert_eq!(base.unwrap(), Some(i as u64), "request {i}");
        }
        let records = common::consume_all(&client, "quota", 0, 0).await;
        assert_eq!(records.len(), 2000);
        for (i, (offset, v)) in records.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            assert_eq!(v, &value(0, i), "offset {i}");
        }
    });
}
