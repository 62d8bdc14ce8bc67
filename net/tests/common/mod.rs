//! Shared by the server tests: data directories on a real filesystem, a glommio executor
//! to run client code in, and batch building; for replication tests, a cluster of nodes
//! (`cluster.rs`) whose links can run through fault-injecting proxies (`proxy.rs`), the
//! load they run and the check of the log it leaves (`load.rs`), and the controller's view
//! of the test topic (`view.rs`); peer handshake messages made by hand (`handshake.rs`);
//! a small loop-mounted ext4 filesystem to fill (`small_disk.rs`); a counting allocator
//! (`alloc_count.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

pub mod alloc_count;
pub mod certs;
pub mod cluster;
pub mod handshake;
pub mod load;
pub use shardlog_net::testing::proxy;
pub mod small_disk;
pub mod view;

use std::future::Future;
use std::io::{Read, Write};

use bytes::Bytes;
use shardlog_engine::TimestampMs;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::record::RecordIter;
use shardlog_net::client::{Client, FetchOptions};

/// A fresh directory under `$SHARDLOG_TEST_DIR` (O_DIRECT needs a real filesystem), else
/// under the system temp dir.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(shardlog_net::testing::test_root().unwrap()).unwrap()
}

/// Runs `f` on a small glommio executor of its own and returns its output.
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Milliseconds since the epoch, now. (Records must be recent: retention deletes week-old
/// segments.)
pub fn now_ms() -> i64 {
    TimestampMs::now().0
}

/// A batch of `values`, keyed `k<i>`, record `i` stamped now + i ms.
pub fn batch(values: &[Vec<u8>]) -> Bytes {
    batch_at(now_ms(), values)
}

/// A batch of `values`, keyed `k<i>`, record `i` stamped `base + i` ms.
pub fn batch_at(base: i64, values: &[Vec<u8>]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        builder.push(
            TimestampMs(base + i as i64),
            Some(key.as_bytes()),
            Some(value),
            &[],
        );
    }
    Bytes::from(builder.finish())
}

/// Every record of a partition from `from` up to the high watermark: (offset, value).
pub async fn consume_all(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let fetched = client
            .fetch(topic, partition, offset, FetchOptions::default())
            .await
            .unwrap();
        for batch in fetched.batches() {
            let (header, bytes) = batch.unwrap();
            for record in RecordIter::new(&header, bytes) {
                let record = record.unwrap();
                let at = record.offset(&header).0;
                if at >= offset {
                    out.push((at, record.value.unwrap().to_vec()));
                }
            }
        }
        if fetched.next_offset >= fetched.high_watermark {
            return out;
        }
        offset = fetched.next_offset;
    }
}

/// A whole frame: header and `meta`, then `data`.
pub fn frame<T>(api: u16, version: u16, correlation: u64, meta: &T, data: &[u8]) -> Vec<u8>
where
    T: shardlog_net::frame::Meta,
{
    let mut out = Vec::new();
    shardlog_net::frame::encode_head(&mut out, api, version, correlation, 0, meta, data.len())
        .unwrap();
    out.extend_from_slice(data);
    out
}

/// One frame read from a blocking `stream`: (header, whole frame); an error at EOF or on
/// a frame that does not parse.
pub fn read_frame(
    stream: &mut std::net::TcpStream,
) -> std::io::Result<(shardlog_net::frame::FrameHeader, rkyv::util::AlignedVec<16>)> {
    use shardlog_net::frame::FrameHeader;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let total = FrameHeader::frame_bytes(len).map_err(std::io::Error::other)?;
    let mut frame = rkyv::util::AlignedVec::<16>::new();
    frame.extend_from_slice(&len);
    frame.resize(total, 0);
    stream.read_exact(&mut frame[4..])?;
    let header = FrameHeader::parse(&frame).map_err(std::io::Error::other)?;
    Ok((header, frame))
}

/// A client of `brokers` with the default settings.
pub async fn connect(brokers: &str) -> Client {
    Client::connect(brokers, shardlog_net::client::ClientConfig::default())
        .await
        .unwrap()
}

/// The producer id a scripted broker hands out unless its script answers
/// `InitProducerId` itself.
pub const FAKE_PRODUCER_ID: i64 = 7;

/// The default answer to an `InitProducerId` request: `FAKE_PRODUCER_ID`, epoch 0.
pub fn producer_id(header: &shardlog_net::frame::FrameHeader) -> Option<Vec<u8>> {
    (header.api == shardlog_net::api::Api::InitProducerId as u16).then(|| {
        let response = shardlog_net::api::InitProducerIdResponse {
            error: 0,
            producer_id: FAKE_PRODUCER_ID,
            producer_epoch: 0,
            message: String::new(),
        };
        frame(header.api, 1, header.correlation, &response, &[])
    })
}

/// A scripted broker on a std thread: answers each request with what `answer` returns
/// (`None`: no reply; an `InitProducerId` gets `FAKE_PRODUCER_ID`), until the client
/// leaves. Returns its address.
pub fn fake_broker<F>(answer: F) -> String
where
    F: Fn(&shardlog_net::frame::FrameHeader, &rkyv::util::AlignedVec<16>) -> Option<Vec<u8>>
        + Send
        + Sync
        + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let answer = answer.clone();
            std::thread::spawn(move || {
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let total = shardlog_net::frame::FrameHeader::frame_bytes(len).unwrap();
                    let mut frame = rkyv::util::AlignedVec::<16>::new();
                    frame.extend_from_slice(&len);
                    frame.resize(total, 0);
                    stream.read_exact(&mut frame[4..]).unwrap();
                    let header = shardlog_net::frame::FrameHeader::parse(&frame).unwrap();
                    let reply = answer(&header, &frame).or_else(|| producer_id(&header));
                    if let Some(reply) = reply {
                        stream.write_all(&reply).unwrap();
                    }
                }
            });
        }
    });
    addr
}
