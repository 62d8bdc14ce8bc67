//! The client listener's limits against a real `shardlogd`: `--max-connections` refuses
//! the connection past it while the others go on and a freed slot serves again;
//! `--idle-timeout-ms` closes a silent connection but not one with a long poll
//! outstanding; the open-files soft limit is raised to the hard one at start.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use shardlog_net::api::{
    Api, FetchRequest, MetadataRequest, MetadataResponse, TopicConfig, VERSION,
};
use shardlog_net::client::{Client, ClientConfig};
use shardlog_net::frame::{FLAG_ERROR, FrameHeader};
use shardlog_net::testing::Shardlogd;

fn connect(server: &Shardlogd) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one reply frame; `None` once the server closed the connection.
fn read_reply(stream: &mut TcpStream) -> Option<(FrameHeader, AlignedVec<16>)> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => panic!("no reply in time"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => panic!("no reply in time"),
        Err(_) => return None,
    }
    let total = FrameHeader::frame_bytes(len).unwrap();
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(&len);
    frame.resize(total, 0);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some((FrameHeader::parse(&frame).unwrap(), frame))
}

/// Whether the connection answers a metadata request (`false`: the server closed it).
fn answers(stream: &mut TcpStream, correlation: u64) -> bool {
    let request = MetadataRequest { topics: vec![] };
    let frame = common::frame(Api::Metadata as u16, VERSION, correlation, &request, &[]);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let Some((header, frame)) = read_reply(stream) else {
        return false;
    };
    assert_eq!(header.correlation, correlation);
    let _: MetadataResponse = shardlog_net::frame::decode_meta(&header, &frame).unwrap();
    true
}

/// A new connection that answers, within 5 s (a freed slot is given back once the
/// server has seen the close).
fn connect_answering(server: &Shardlogd) -> TcpStream {
    let since = Instant::now();
    loop {
        let mut stream = connect(server);
        if answers(&mut stream, 1) {
            return stream;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the slot never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_connection_past_the_limit_is_closed_and_a_freed_slot_serves() {
    let dir = common::data_dir();
    let server =
        Shardlogd::start(dir.path(), &["--shards", "2", "--max-connections", "3"]).unwrap();
    // One at a time: each is served (and counted) before the next connects.
    let mut open: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut stream = connect(&server);
            assert!(answers(&mut stream, i), "connection {i} within the limit");
            stream
        })
        .collect();
    for attempt in 0..4 {
        let mut past = connect(&server);
        assert!(
            !answers(&mut past, 100),
            "connection past the limit, try {attempt}"
        );
    }
    for (i, stream) in open.iter_mut().enumerate() {
        assert!(
            answers(stream, 10 + i as u64),
            "connection {i} after the refusals"
        );
    }
    drop(open.remove(0));
    open.push(connect_answering(&server));
    let mut past = connect(&server);
    assert!(!answers(&mut past, 200), "full again");
    for (i, stream) in open.iter_mut().enumerate() {
        assert!(answers(stream, 20 + i as u64), "connection {i} at the end");
    }
}

#[test]
fn an_idle_connection_is_closed_and_a_long_poll_is_not() {
    let dir = common::data_dir();
    let server =
        Shardlogd::start(dir.path(), &["--shards", "2", "--idle-timeout-ms", "1000"]).unwrap();
    let brokers = server.brokers();
    common::run(move || async move {
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        client
            .create_topic("t", 1, 1, TopicConfig::default())
            .await
            .unwrap();
    });
    let leading = Instant::now();
    while common::cluster::high_watermark(&server.addr.to_string(), "t", 0).is_err() {
        assert!(leading.elapsed() < Duration::from_secs(10), "t/0 never led");
        std::thread::sleep(Duration::from_millis(10));
    }

    // A long poll (3 s, three idle timeouts) at the empty tail, and a silent connection.
    let mut polling = connect(&server);
    let fetch = FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 3000,
        min_bytes: 1,
    };
    let sent = Instant::now();
    polling
        .write_all(&common::frame(Api::Fetch as u16, VERSION, 7, &fetch, &[]))
        .unwrap();
    let mut silent = connect(&server);
    assert!(answers(&mut silent, 1));
    let quiet = Instant::now();
    assert!(
        read_reply(&mut silent).is_none(),
        "the idle connection is closed"
    );
    let closed_after = quiet.elapsed();
    eprintln!("idle connection closed after {closed_after:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&closed_after),
        "{closed_after:?}"
    );

    // Past two idle timeouts with the poll outstanding, the connection still reads.
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(sent.elapsed()));
    assert!(
        answers(&mut polling, 8),
        "closed with a long poll outstanding"
    );
    let (header, _) = read_reply(&mut polling).expect("the long poll's answer, not a close");
    let waited = sent.elapsed();
    eprintln!("long poll answered after {waited:?}");
    assert_eq!(header.correlation, 7);
    assert_eq!(header.flags & FLAG_ERROR, 0);
    assert!(waited >= Duration::from_millis(2900), "{waited:?}");
    // Once answered it is idle like any other.
    let answered = Instant::now();
    assert!(read_reply(&mut polling).is_none());
    assert!(answered.elapsed() < Duration::from_secs(4));
}

#[test]
fn the_open_files_soft_limit_is_raised_to_the_hard_one() {
    // Start the server with a soft limit below the hard one (children inherit it).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit), 0);
        let lowered = libc::rlimit {
            rlim_cur: limit.rlim_max.min(1024),
            rlim_max: limit.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lowered), 0);
    }
    let dir = common::data_dir();
    let server = Shardlogd::start(dir.path(), &["--shards", "1"]);
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit), 0);
    }
    let server = server.unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    eprintln!("{line}");
    if limit.rlim_max == libc::RLIM_INFINITY {
        // Raised as far as the kernel allows (fs.nr_open).
        assert!(soft.parse::<u64>().unwrap() > 1024, "{line}");
    } else {
        assert_eq!(soft, hard, "{line}");
        assert_eq!(soft, limit.rlim_max.to_string());
    }
}
