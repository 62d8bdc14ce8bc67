//! Client behaviour that needs no real server: a broker that never answers makes requests
//! fail with `Timeout` (the per-connection sweeper), one that is not there with `NoBroker`;
//! scripted brokers check routing and `NotLeader` hints.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use shardlog_net::ErrorCode;
use shardlog_net::api::{
    Acks, Api, BrokerMetadata, MetadataResponse, PartitionMetadata, ProduceResponse, TopicMetadata,
};
use shardlog_net::client::{Client, ClientConfig, ClientError};

#[test]
fn a_silent_broker_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        // Accept and swallow requests, never answer.
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
            });
        }
    });
    let started = Instant::now();
    let result = common::run(move || async move {
        let config = ClientConfig {
            request_timeout: Duration::from_millis(300),
            retries: 0,
            ..ClientConfig::default()
        };
        Client::connect(&addr, config).await.map(|_| ())
    });
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn no_broker_listening() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let result = common::run(move || async move {
        let config = ClientConfig {
            retries: 0,
            ..ClientConfig::default()
        };
        Client::connect(&addr, config).await.map(|_| ())
    });
    assert!(
        matches!(result, Err(ClientError::NoBroker(_))),
        "{result:?}"
    );
}

fn metadata(brokers: &[(u32, &str)], leader: u32) -> MetadataResponse {
    MetadataResponse {
        node_id: 0,
        controller: Some(0),
        brokers: brokers
            .iter()
            .map(|(id, addr)| {
                let (host, port) = addr.rsplit_once(':').unwrap();
                BrokerMetadata {
                    node_id: *id,
                    host: host.to_owned(),
                    port: port.parse().unwrap(),
                    live: true,
                }
            })
            .collect(),
        topics: vec![TopicMetadata {
            name: "t".into(),
            error: 0,
            partitions: vec![PartitionMetadata {
                partition: 0,
                leader: Some(leader),
                leader_epoch: 1,
                replicas: vec![0, 1],
                isr: vec![0, 1],
            }],
        }],
    }
}

/// Node 0 says it leads t/0 but answers produces with `NotLeader` and a hint of node 1;
/// the client follows the hint without asking for metadata again, and node 1 appends.
#[test]
fn follows_not_leader_hints() {
    let node1 = common::fake_broker(|header, _| {
        (header.api == Api::Produce as u16).then(|| {
            let ok = ProduceResponse {
                error: 0,
                base_offset: 42,
                leader_hint: None,
                message: String::new(),
            };
            common::frame(header.api, 1, header.correlation, &ok, &[])
        })
    });
    let metadata_calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let node0 = {
        let (node1, calls) = (node1.clone(), metadata_calls.clone());
        let me = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
        let me_inner = me.clone();
        let addr = common::fake_broker(move |header, _| match Api::from_u16(header.api) {
            Some(Api::Metadata) => {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let me = me_inner.get().unwrap();
                Some(common::frame(
                    header.api,
                    1,
                    header.correlation,
                    &metadata(&[(0, me), (1, &node1)], 0),
                    &[],
                ))
            }
            Some(Api::Produce) => {
                let moved = ProduceResponse {
                    error: ErrorCode::NotLeader.as_u16(),
                    base_offset: 0,
                    leader_hint: Some(1),
                    message: "moved".into(),
                };
                Some(common::frame(
                    header.api,
                    1,
                    header.correlation,
                    &moved,
                    &[],
                ))
            }
            _ => None,
        });
        me.set(addr.clone()).unwrap();
        addr
    };
    let base = common::run(move || async move {
        let config = ClientConfig {
            retry_backoff: Duration::from_millis(1),
            ..ClientConfig::default()
        };
        let client = Client::connect(&node0, config).await.unwrap();
        let batch = common::batch(&[b"v".to_vec()]);
        client.produce("t", 0, Acks::All, batch).await.unwrap()
    });
    assert_eq!(base, Some(42));
    assert_eq!(
        metadata_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the hint was enough: no metadata refresh"
    );
}
