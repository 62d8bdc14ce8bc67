//! The server's memory stays bounded whatever clients do, measured on a real `shardlogd`
//! (`VmRSS` and `VmHWM` of `/proc/<pid>/status`):
//! - a consumer that sends 1000 fetches on one connection and never reads the replies
//!   (`--connection-reply-bytes`), while another client is served;
//! - many connections that announce big frames and stall (frame buffers grow as bytes
//!   arrive), and the memory comes back when they go;
//! - many partitions each filling its tail cache (`--tail-cache-budget-bytes`);
//! - a fetch whose `min_bytes` is above its `max_bytes` is answered at once.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use shardlog_net::api::{Acks, Api, FetchRequest, FetchResponse, TopicConfig, VERSION};
use shardlog_net::client::{Client, ClientConfig, FetchOptions};
use shardlog_net::frame::{FLAG_ERROR, FrameHeader, HEADER_SIZE, META_BYTES_MAX};
use shardlog_net::testing::Shardlogd;

const MIB: u64 = 1 << 20;

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn rss(server: &Shardlogd) -> u64 {
    status_bytes(server.pid(), "VmRSS")
}

/// The highest RSS seen while sampling until it has not grown for `quiet` (or `limit`
/// has passed).
fn settled_rss(server: &Shardlogd, quiet: Duration, limit: Duration) -> u64 {
    let since = Instant::now();
    let mut peak = rss(server);
    let mut grew = Instant::now();
    while since.elapsed() < limit && grew.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss(server);
        if now > peak + MIB {
            grew = Instant::now();
        }
        peak = peak.max(now);
    }
    peak
}

fn create_topic(server: &Shardlogd, topic: &str, partitions: u32) {
    let brokers = server.brokers();
    let name = topic.to_owned();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        client
            .create_topic(&name, partitions, 1, TopicConfig::default())
            .await
            .unwrap();
    });
    for partition in 0..partitions {
        let since = Instant::now();
        while common::cluster::high_watermark(&server.addr.to_string(), topic, partition).is_err() {
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "{topic}/{partition} never led"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Appends `bytes` to each partition in batches of 16 records of 16 KiB.
fn fill(server: &Shardlogd, topic: &str, partitions: u32, bytes: u64) {
    let brokers = server.brokers();
    let name = topic.to_owned();
    common::run(move || async move {
        let config = ClientConfig {
            idempotence: false,
            ..ClientConfig::default()
        };
        let client = Client::connect(&brokers, config).await.unwrap();
        let values: Vec<Vec<u8>> = (0..16).map(|i| vec![b'a' + i; 16 << 10]).collect();
        let batches = bytes.div_ceil((16 * 16) << 10);
        for partition in 0..partitions {
            let pending: Vec<_> = (0..batches)
                .map(|_| client.produce(&name, partition, Acks::Leader, common::batch(&values)))
                .collect();
            for result in futures::future::join_all(pending).await {
                result.unwrap();
            }
        }
    });
}

fn connect(server: &Shardlogd) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Reads one reply frame.
fn read_reply(stream: &mut TcpStream) -> (FrameHeader, AlignedVec<16>) {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let total = FrameHeader::frame_bytes(len).unwrap();
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(&len);
    frame.resize(total, 0);
    stream.read_exact(&mut frame[4..]).unwrap();
    (FrameHeader::parse(&frame).unwrap(), frame)
}

fn fetch_frame(correlation: u64, request: &FetchRequest) -> Vec<u8> {
    common::frame(Api::Fetch as u16, VERSION, correlation, request, &[])
}

/// Whether a new client's fetch and produce are answered.
fn another_client_is_served(server: &Shardlogd, topic: &str) {
    let brokers = server.brokers();
    let name = topic.to_owned();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        let fetched = client
            .fetch(&name, 0, 0, FetchOptions::default())
            .await
            .unwrap();
        assert!(!fetched.data.is_empty());
        client
            .produce(&name, 0, Acks::Leader, common::batch(&[b"x".to_vec()]))
            .await
            .unwrap();
    });
}

#[test]
fn a_consumer_that_never_reads_holds_at_most_its_reply_budget() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    create_topic(&server, "t", 1);
    // 48 MiB: fetches from offset 0 read the disk (the tail cache holds the last 8 MiB).
    fill(&server, "t", 1, 48 * MIB);
    let before = settled_rss(&server, Duration::from_secs(1), Duration::from_secs(5));

    let mut stalled = connect(&server);
    let request = FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        min_bytes: 0,
    };
    let frames: Vec<u8> = (0..1000u64)
        .flat_map(|i| fetch_frame(i, &request))
        .collect();
    // The server may stop reading before all are sent: write from a thread.
    let mut writer = stalled.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&frames).unwrap());
    let stalled_peak = settled_rss(&server, Duration::from_secs(3), Duration::from_secs(30));
    another_client_is_served(&server, "t");
    let hwm = status_bytes(server.pid(), "VmHWM");
    eprintln!(
        "RSS before {} MiB, with 1000 fetches unread {} MiB, VmHWM {} MiB",
        before / MIB,
        stalled_peak / MIB,
        hwm / MIB
    );
    assert!(hwm < 300 * MIB, "VmHWM {} MiB", hwm / MIB);

    // Every reply is there once the client reads.
    let mut seen = vec![false; 1000];
    for _ in 0..1000 {
        let (header, frame) = read_reply(&mut stalled);
        assert_eq!(header.flags & FLAG_ERROR, 0);
        let response: FetchResponse = shardlog_net::frame::decode_meta(&header, &frame).unwrap();
        assert_eq!(response.error, 0, "{}", response.message);
        assert!(header.data(&frame).len() >= 512 << 10);
        assert!(!std::mem::replace(
            &mut seen[usize::try_from(header.correlation).unwrap()],
            true
        ));
    }
    sending.join().unwrap();
}

#[test]
fn connections_announcing_big_frames_and_stalling_hold_little() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let before = settled_rss(&server, Duration::from_secs(1), Duration::from_secs(5));
    let mut stalled = Vec::new();
    for i in 0..1000u32 {
        let mut head = [0u8; HEADER_SIZE];
        let (frame_bytes, meta_len) = if i % 2 == 0 {
            // A 1 MiB meta...
            (HEADER_SIZE + META_BYTES_MAX, META_BYTES_MAX)
        } else {
            // ...or a 60 MiB data region.
            (HEADER_SIZE + 8 + (60 << 20), 8)
        };
        head[..4].copy_from_slice(&u32::try_from(frame_bytes - 4).unwrap().to_le_bytes());
        head[4..6].copy_from_slice(&(Api::Produce as u16).to_le_bytes());
        head[6..8].copy_from_slice(&VERSION.to_le_bytes());
        head[16..20].copy_from_slice(&u32::try_from(meta_len).unwrap().to_le_bytes());
        let mut stream = connect(&server);
        stream.write_all(&head).unwrap();
        stalled.push(stream);
    }
    let held = settled_rss(&server, Duration::from_secs(2), Duration::from_secs(20));
    eprintln!(
        "RSS before {} MiB, with 1000 stalled big frames {} MiB",
        before / MIB,
        held / MIB
    );
    assert!(
        held < before + 150 * MIB,
        "1000 stalled connections took {} MiB",
        (held - before) / MIB
    );
    drop(stalled);
    let since = Instant::now();
    let mut after = rss(&server);
    while after > before + 64 * MIB && since.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        after = rss(&server);
    }
    eprintln!("RSS after they went {} MiB", after / MIB);
    assert!(
        after <= before + 64 * MIB,
        "{} MiB not returned",
        (after - before) / MIB
    );
}

#[test]
fn many_partitions_filling_their_tail_caches_stay_within_the_budget() {
    let dir = common::data_dir();
    // Flush `never`: the load is about memory, not the disk.
    let server = Shardlogd::start(dir.path(), &["--shards", "2", "--flush", "never"]).unwrap();
    create_topic(&server, "wide", 80);
    let before = settled_rss(&server, Duration::from_secs(1), Duration::from_secs(5));
    // 80 partitions x 8 MiB (each partition's own bound): 640 MiB of tails.
    fill(&server, "wide", 80, 8 * MIB);
    let after = settled_rss(&server, Duration::from_secs(2), Duration::from_secs(20));
    let hwm = status_bytes(server.pid(), "VmHWM");
    eprintln!(
        "RSS before {} MiB, after 80 x 8 MiB {} MiB, VmHWM {} MiB",
        before / MIB,
        after / MIB,
        hwm / MIB
    );
    // The default budget is 256 MiB for the node.
    assert!(
        after < before + 256 * MIB + 128 * MIB,
        "tail caches took {} MiB",
        (after - before) / MIB
    );
    // The newest data of the first partition is still served.
    another_client_is_served(&server, "wide");
}

#[test]
fn a_fetch_asking_more_than_it_may_return_is_answered_at_once() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "1"]).unwrap();
    create_topic(&server, "t", 1);
    let brokers = server.brokers();
    let values = vec![vec![b'v'; 600]];
    let batch_len = common::batch(&values).len();
    common::run(move || async move {
        let client = common::connect(&brokers).await;
        for _ in 0..3 {
            client
                .produce("t", 0, Acks::Leader, common::batch(&values))
                .await
                .unwrap();
        }
    });
    let mut stream = connect(&server);
    // At offset 0 three batches are visible; max_bytes lets one through, min_bytes asks
    // for a megabyte; at the last batch, min_bytes asks more than max_bytes.
    let cases = [
        (0u64, batch_len + 10, 1 << 20, 1usize),
        (2, 100, 1 << 20, 1),
    ];
    for (i, (offset, max_bytes, min_bytes, batches)) in cases.into_iter().enumerate() {
        let request = FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset,
            max_bytes: u32::try_from(max_bytes).unwrap(),
            max_wait_ms: 20_000,
            min_bytes,
        };
        let sent = Instant::now();
        stream.write_all(&fetch_frame(i as u64, &request)).unwrap();
        let (header, frame) = read_reply(&mut stream);
        let waited = sent.elapsed();
        eprintln!("case {i}: answered after {waited:?}");
        let response: FetchResponse = shardlog_net::frame::decode_meta(&header, &frame).unwrap();
        assert_eq!(response.error, 0, "{}", response.message);
        assert_eq!(header.data(&frame).len(), batches * batch_len, "case {i}");
        assert!(
            waited < Duration::from_secs(10),
            "case {i} waited {waited:?} for bytes it could never return"
        );
    }
}
