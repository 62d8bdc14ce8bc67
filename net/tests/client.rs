//! Client behaviour that needs no real server: a broker that never answers makes requests
//! fail with `Timeout` (the per-connection sweeper), one that is not there with `NoBroker`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

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
