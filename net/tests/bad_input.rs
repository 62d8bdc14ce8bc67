//! Bad input against a real `shardlogd`: random bytes, oversized lengths, truncated
//! frames, unknown apis and versions, invalid archives, corrupt batches. Each gets an
//! error reply or a closed connection; the server keeps serving the other connections and
//! never panics. A batch whose CRC is right and whose records are not is refused by the
//! leader of a three-node cluster's partition, which goes on serving everything
//! acknowledged before and after it.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::too_many_lines
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rkyv::util::AlignedVec;
use shardlog_net::ErrorCode;
use shardlog_net::api::{
    Acks, Api, ErrorResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    TopicConfig,
};
use shardlog_net::client::{Client, ClientConfig};
use shardlog_net::frame::{FLAG_ERROR, FrameHeader};
use shardlog_net::testing::Shardlogd;

use common::cluster::Links;
use common::load::{Load, Shape, TOPIC, verify, wait_acks};
use common::view::{leader, setup};
use shardlog_engine::batch;

fn connect(server: &Shardlogd) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one response frame: (header, whole frame).
fn read_reply(stream: &mut TcpStream) -> Option<(FrameHeader, AlignedVec<16>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let total = FrameHeader::frame_bytes(len).unwrap();
    let mut buf = vec![0u8; total];
    buf[..4].copy_from_slice(&len);
    stream.read_exact(&mut buf[4..]).unwrap();
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(&buf);
    Some((FrameHeader::parse(&aligned).unwrap(), aligned))
}

fn error_of(header: &FrameHeader, frame: &AlignedVec<16>) -> ErrorCode {
    assert_ne!(header.flags & FLAG_ERROR, 0, "an ErrorResponse");
    let error: ErrorResponse = shardlog_net::frame::decode_meta(header, frame).unwrap();
    ErrorCode::from(error.error)
}

fn metadata_frame(correlation: u64) -> Vec<u8> {
    common::frame(
        Api::Metadata as u16,
        1,
        correlation,
        &MetadataRequest { topics: vec![] },
        &[],
    )
}

/// The connection still answers a good request.
fn still_answers(stream: &mut TcpStream, correlation: u64) {
    stream.write_all(&metadata_frame(correlation)).unwrap();
    let (header, frame) = read_reply(stream).unwrap();
    assert_eq!(header.correlation, correlation);
    let _: MetadataResponse = shardlog_net::frame::decode_meta(&header, &frame).unwrap();
}

/// The server closes the connection (EOF, or a reset).
fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn produce_request() -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: 0,
        acks: Acks::Leader,
        timeout_ms: 1000,
    }
}

#[test]
fn bad_frames_get_errors_or_closed_connections() {
    let dir = common::data_dir();
    let mut server = Shardlogd::start(dir.path(), &["--shards", "2"]).unwrap();
    let brokers = server.brokers();
    common::run({
        let brokers = brokers.clone();
        move || async move {
            let client = Client::connect(&brokers, ClientConfig::default())
                .await
                .unwrap();
            client
                .create_topic("t", 1, 1, TopicConfig::default())
                .await
                .unwrap();
        }
    });
    // The topic exists once the node names it; its replica leads a moment later, and the
    // raw produces below are not retried on NotLeader.
    let leading = std::time::Instant::now();
    while common::cluster::high_watermark(&server.addr.to_string(), "t", 0).is_err() {
        assert!(leading.elapsed() < Duration::from_secs(10), "t/0 never led");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Unknown api and version: an error reply, and the connection goes on.
    let mut s = connect(&server);
    s.write_all(&common::frame(
        999,
        1,
        1,
        &MetadataRequest { topics: vec![] },
        &[],
    ))
    .unwrap();
    let (h, f) = read_reply(&mut s).unwrap();
    assert_eq!(
        (h.correlation, error_of(&h, &f)),
        (1, ErrorCode::UnknownApi)
    );
    s.write_all(&common::frame(
        Api::Metadata as u16,
        7,
        2,
        &MetadataRequest { topics: vec![] },
        &[],
    ))
    .unwrap();
    let (h, f) = read_reply(&mut s).unwrap();
    assert_eq!(error_of(&h, &f), ErrorCode::UnsupportedVersion);
    still_answers(&mut s, 3);

    // An archive that does not validate: InvalidRequest, connection goes on.
    let mut bogus = common::frame(Api::Produce as u16, 1, 4, &produce_request(), &[]);
    for b in &mut bogus[24..] {
        *b = 0xff;
    }
    s.write_all(&bogus).unwrap();
    let (h, f) = read_reply(&mut s).unwrap();
    assert_eq!(error_of(&h, &f), ErrorCode::InvalidRequest);
    still_answers(&mut s, 5);

    // A batch with a flipped byte: CorruptBatch in the produce response.
    let mut batch = common::batch(&[b"hello".to_vec()]).to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0x40;
    s.write_all(&common::frame(
        Api::Produce as u16,
        1,
        6,
        &produce_request(),
        &batch,
    ))
    .unwrap();
    let (h, f) = read_reply(&mut s).unwrap();
    let response: ProduceResponse = shardlog_net::frame::decode_meta(&h, &f).unwrap();
    assert_eq!(ErrorCode::from(response.error), ErrorCode::CorruptBatch);
    // Not a batch at all, and no batch.
    for (i, data) in [&b"garbage"[..], &[]].into_iter().enumerate() {
        s.write_all(&common::frame(
            Api::Produce as u16,
            1,
            7 + i as u64,
            &produce_request(),
            data,
        ))
        .unwrap();
        let (h, f) = read_reply(&mut s).unwrap();
        let response: ProduceResponse = shardlog_net::frame::decode_meta(&h, &f).unwrap();
        assert_eq!(ErrorCode::from(response.error), ErrorCode::CorruptBatch);
    }
    still_answers(&mut s, 9);

    // Lengths over the limits: the connection is closed.
    for len in [u32::MAX, 100 << 20, 3] {
        let mut s = connect(&server);
        let mut head = metadata_frame(1);
        head[..4].copy_from_slice(&len.to_le_bytes());
        s.write_all(&head).unwrap();
        closed(&mut s);
    }
    let mut s = connect(&server);
    let mut head = metadata_frame(1);
    head[16..20].copy_from_slice(&(2u32 << 20).to_le_bytes());
    s.write_all(&head).unwrap();
    closed(&mut s);

    // A truncated frame, then the client leaves.
    let mut s = connect(&server);
    s.write_all(&metadata_frame(1)[..30]).unwrap();
    drop(s);

    // Random bytes on many connections.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..200 {
        let bytes = proptest::collection::vec(any::<u8>(), 0..512)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut s = connect(&server);
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }

    // The server is alive and serves a normal client.
    assert!(server.is_running(), "the server survived every bad input");
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let base = client
            .produce("t", 0, Acks::Leader, common::batch(&[b"ok".to_vec()]))
            .await
            .unwrap();
        assert_eq!(base, Some(0), "no bad input appended anything");
    });
}

/// A client that does not retry (raw frames here) can write to a topic as soon as its
/// creation is answered: the server waits the moment its shard takes to open the replica
/// rather than answer `NotLeader` naming itself.
#[test]
fn a_topic_takes_writes_as_soon_as_its_creation_is_answered() {
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "4"]).unwrap();
    let brokers = server.brokers();
    let client = {
        let brokers = brokers.clone();
        move |name: String| {
            let brokers = brokers.clone();
            common::run(move || async move {
                let client = Client::connect(&brokers, ClientConfig::default())
                    .await
                    .unwrap();
                client
                    .create_topic(&name, 4, 1, TopicConfig::default())
                    .await
                    .unwrap();
            });
        }
    };
    let mut s = connect(&server);
    for round in 0..10u64 {
        let name = format!("fresh-{round}");
        client(name.clone());
        for partition in 0..4 {
            let request = ProduceRequest {
                topic: name.clone(),
                partition,
                acks: Acks::Leader,
                timeout_ms: 1000,
            };
            let batch = common::batch(&[b"first".to_vec()]);
            let correlation = round * 4 + u64::from(partition);
            s.write_all(&common::frame(
                Api::Produce as u16,
                1,
                correlation,
                &request,
                &batch,
            ))
            .unwrap();
            let (h, f) = read_reply(&mut s).unwrap();
            assert_eq!(h.correlation, correlation);
            let response: ProduceResponse = shardlog_net::frame::decode_meta(&h, &f).unwrap();
            assert_eq!(
                ErrorCode::from(response.error),
                ErrorCode::None,
                "{name}/{partition}: {}",
                response.message
            );
            assert_eq!(response.base_offset, 0);
        }
    }
}

/// A batch of two records whose CRC is right but whose records are not, as `how` breaks
/// them: the header is rewritten and the CRC computed again over the broken bytes.
fn crc_valid_corrupt_batch(how: &str) -> Vec<u8> {
    let mut bytes = common::batch(&[b"ok".to_vec(), b"also ok".to_vec()]).to_vec();
    let records = batch::BATCH_HEADER_SIZE;
    match how {
        // The first record's length (a zigzag varint, one byte here) says 63 bytes: past
        // the end of the batch.
        "a record length past the end" => bytes[records] = 63 << 1,
        // Three records announced, two present.
        "a record count too high" => {
            bytes[records - 4..records].copy_from_slice(&3i32.to_be_bytes())
        }
        // Every byte of the records garbage.
        "garbage records" => bytes[records..].fill(0xff),
        other => unreachable!("{other}"),
    }
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    batch::validate(&bytes).expect("the CRC is right");
    assert!(
        batch::validate_produced(&bytes).is_err(),
        "{how}: not a valid batch"
    );
    bytes
}

/// Produced to the leader of a partition of a three-node cluster, over a raw frame and
/// through the client, CRC-valid batches with corrupt records are refused as corrupt
/// records; acknowledged records before and after them all read back (the log is checked
/// whole: nothing of the corrupt batches in it), and the partition keeps serving.
#[test]
fn a_crc_valid_batch_with_a_corrupt_record_is_refused_by_a_cluster_leader() {
    const ONE_PARTITION: Shape = Shape {
        partitions: 1,
        producers_per_partition: 2,
        pause: Duration::from_millis(10),
    };
    let mut cluster = setup(Links::Direct, 1);
    let since = std::time::Instant::now();
    let load = Load::start(&cluster.brokers(), 0, ONE_PARTITION);
    wait_acks(
        &mut cluster,
        &load.progress,
        since,
        10,
        "before the corrupt batches",
    );
    let first = load.stop();
    let (leader, _) = leader(&mut cluster, 0);
    let cases = [
        "a record length past the end",
        "a record count too high",
        "garbage records",
    ];
    let request = ProduceRequest {
        topic: TOPIC.to_owned(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 5_000,
    };
    let mut stream = TcpStream::connect(cluster.addr(leader)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for (i, how) in cases.into_iter().enumerate() {
        let data = crc_valid_corrupt_batch(how);
        let correlation = i as u64 + 1;
        let frame = common::frame(Api::Produce as u16, 1, correlation, &request, &data);
        stream.write_all(&frame).unwrap();
        let (h, f) = read_reply(&mut stream).expect("a produce response");
        assert_eq!(h.correlation, correlation);
        let response: ProduceResponse = shardlog_net::frame::decode_meta(&h, &f).unwrap();
        assert_eq!(
            ErrorCode::from(response.error),
            ErrorCode::CorruptBatch,
            "{how}: {}",
            response.message
        );
        assert!(
            response.message.contains("record"),
            "{how}: the error names the record: {}",
            response.message
        );
        eprintln!(
            "{how}: {:?} {}",
            ErrorCode::from(response.error),
            response.message
        );
    }
    let brokers = cluster.brokers();
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        for how in cases {
            let refused = client
                .produce(TOPIC, 0, Acks::All, crc_valid_corrupt_batch(how).into())
                .await
                .expect_err("refused");
            assert_eq!(
                refused.code(),
                Some(ErrorCode::CorruptBatch),
                "{how}: {refused}"
            );
        }
    });
    cluster.assert_running();
    let since = std::time::Instant::now();
    let load = Load::start(&cluster.brokers(), 1, ONE_PARTITION);
    wait_acks(
        &mut cluster,
        &load.progress,
        since,
        10,
        "after the corrupt batches",
    );
    let second = load.stop();
    verify(&cluster, &[&first, &second], "corrupt records");
    cluster.assert_running();
}
