//! Client behaviour that needs no real server: a broker that never answers makes requests
//! fail (the per-connection sweeper), one that is not there with `NoBroker`; scripted
//! brokers check routing and `NotLeader` hints, and how the client leaves a broker that
//! stopped answering: metadata asked of the next broker, admin requests rotated, a request
//! to a silent leader given up once the metadata names another, a silent connection
//! probed and dropped while a slow but live one is kept. (`net/tests/failover.rs` does
//! the same against real nodes.)
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shardlog_net::ErrorCode;
use shardlog_net::api::{
    Acks, Api, BrokerMetadata, MetadataResponse, PartitionMetadata, ProduceResponse, TopicConfig,
    TopicMetadata, TopicResponse,
};
use shardlog_net::client::{Client, ClientConfig, ClientError};

/// A broker that accepts connections and reads requests but never answers (a paused
/// process looks like this: the kernel accepts for it). Returns its address and how many
/// bytes it has received.
fn silent_broker() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut sink) {
                    counter.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, received)
}

/// An address where nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn a_silent_broker_times_out() {
    let (addr, _) = silent_broker();
    let started = Instant::now();
    let result = common::run(move || async move {
        let config = ClientConfig {
            request_timeout: Duration::from_millis(300),
            retries: 0,
            ..ClientConfig::default()
        };
        Client::connect(&addr, config).await.map(|_| ())
    });
    // The only broker said nothing: the error names it and how long it was given.
    match &result {
        Err(ClientError::NoBroker(why)) => assert!(why.contains("no reply within 300ms"), "{why}"),
        other => panic!("{other:?}"),
    }
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
                    draining: false,
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

/// Metadata naming `brokers` (node id, address, live) and topic `t` with one partition
/// per `(leader, epoch)`, replicas 0 and 1.
fn metadata_of(
    brokers: &[(u32, &str, bool)],
    partitions: &[(Option<u32>, i32)],
) -> MetadataResponse {
    MetadataResponse {
        node_id: 0,
        controller: Some(0),
        brokers: brokers
            .iter()
            .map(|(id, addr, live)| {
                let (host, port) = addr.rsplit_once(':').unwrap();
                BrokerMetadata {
                    node_id: *id,
                    host: host.to_owned(),
                    port: port.parse().unwrap(),
                    live: *live,
                    draining: false,
                }
            })
            .collect(),
        topics: vec![TopicMetadata {
            name: "t".into(),
            error: 0,
            partitions: (0u32..)
                .zip(partitions)
                .map(|(partition, (leader, epoch))| PartitionMetadata {
                    partition,
                    leader: *leader,
                    leader_epoch: *epoch,
                    replicas: vec![0, 1],
                    isr: vec![0, 1],
                })
                .collect(),
        }],
    }
}

fn produced(header: &shardlog_net::frame::FrameHeader, base_offset: u64) -> Vec<u8> {
    let ok = ProduceResponse {
        error: 0,
        base_offset,
        leader_hint: None,
        message: String::new(),
    };
    common::frame(header.api, 1, header.correlation, &ok, &[])
}

/// A live broker is asked for metadata when the first one named stays silent: connecting
/// takes about the hedge delay (300 ms), not the request timeout (30 s); the next
/// request asks the live one first.
#[test]
fn metadata_skips_a_silent_broker() {
    let (silent, _) = silent_broker();
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let (me_inner, silent_inner) = (me.clone(), silent.clone());
    let live = common::fake_broker(move |header, _| {
        let me = me_inner.get().unwrap();
        let meta = metadata_of(&[(0, &silent_inner, true), (1, me, true)], &[(Some(1), 1)]);
        (header.api == Api::Metadata as u16)
            .then(|| common::frame(header.api, 1, header.correlation, &meta, &[]))
    });
    me.set(live.clone()).unwrap();
    let brokers = format!("{silent},{live}");
    let (connect, again) = common::run(move || async move {
        let started = Instant::now();
        let client = Client::connect(&brokers, ClientConfig::default())
            .await
            .unwrap();
        let connect = started.elapsed();
        let started = Instant::now();
        client.metadata(&[]).await.unwrap();
        (connect, started.elapsed())
    });
    eprintln!("connect past a silent broker: {connect:?}; metadata again: {again:?}");
    assert!(connect < Duration::from_secs(3), "{connect:?}");
    assert!(again < Duration::from_millis(250), "{again:?}");
}

/// CreateTopic rotates: a broker that refuses connections and one that never answers
/// are each left for the next broker (at once, and after `admin_timeout`), instead of
/// retrying the same address.
#[test]
fn admin_requests_move_past_dead_and_silent_brokers() {
    let (silent, silent_received) = silent_broker();
    let dead = dead_address();
    let creates = Arc::new(AtomicU32::new(0));
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let (me_inner, silent_inner, dead_inner, creates_inner) =
        (me.clone(), silent.clone(), dead.clone(), creates.clone());
    let live = common::fake_broker(move |header, _| {
        let me = me_inner.get().unwrap();
        let brokers = [
            (0, silent_inner.as_str(), true),
            (1, dead_inner.as_str(), true),
            (2, me.as_str(), true),
        ];
        match Api::from_u16(header.api) {
            Some(Api::Metadata) => {
                let meta = metadata_of(&brokers, &[(Some(2), 1)]);
                Some(common::frame(header.api, 1, header.correlation, &meta, &[]))
            }
            Some(Api::CreateTopic) => {
                creates_inner.fetch_add(1, Ordering::SeqCst);
                let ok = TopicResponse {
                    error: 0,
                    message: String::new(),
                };
                Some(common::frame(header.api, 1, header.correlation, &ok, &[]))
            }
            _ => None,
        }
    });
    me.set(live.clone()).unwrap();
    let took = common::run(move || async move {
        let config = ClientConfig {
            admin_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let client = Client::connect(&live, config).await.unwrap();
        let mut took = Vec::new();
        // The order rotates, and a broker that failed is asked last for a while: one
        // call meets the dead broker first, the other the silent one (the order is
        // deterministic; see `MetadataCache::candidates`).
        for _ in 0..2 {
            let started = Instant::now();
            client
                .create_topic("t", 1, 0, TopicConfig::default())
                .await
                .unwrap();
            took.push(started.elapsed());
        }
        took
    });
    eprintln!("create_topic past a dead and a silent broker: {took:?}");
    assert_eq!(creates.load(Ordering::SeqCst), 2);
    assert!(
        silent_received.load(Ordering::SeqCst) > 0,
        "the silent broker was tried"
    );
    for took in took {
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

/// A produce sent to a leader that stops answering is given up once the metadata (asked
/// of another broker) names a new leader at a higher epoch, and resent there: it is
/// answered in about `leader_check_after`, not the request timeout.
#[test]
fn a_request_to_a_silent_leader_follows_the_new_leader() {
    let (silent, silent_received) = silent_broker();
    let metadata_calls = Arc::new(AtomicU32::new(0));
    let produces = Arc::new(AtomicU32::new(0));
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let (me_inner, silent_inner, calls, produces_inner) = (
        me.clone(),
        silent.clone(),
        metadata_calls.clone(),
        produces.clone(),
    );
    let live = common::fake_broker(move |header, _| {
        let me = me_inner.get().unwrap();
        match Api::from_u16(header.api) {
            Some(Api::Metadata) => {
                // The first answer (at connect) has node 1 leading; every later one says
                // the controller fenced it and moved the leadership to node 0.
                let meta = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    metadata_of(&[(0, me, true), (1, &silent_inner, true)], &[(Some(1), 1)])
                } else {
                    metadata_of(&[(0, me, true), (1, &silent_inner, false)], &[(Some(0), 2)])
                };
                Some(common::frame(header.api, 1, header.correlation, &meta, &[]))
            }
            Some(Api::Produce) => {
                produces_inner.fetch_add(1, Ordering::SeqCst);
                Some(produced(header, 7))
            }
            _ => None,
        }
    });
    me.set(live.clone()).unwrap();
    let (base, took) = common::run(move || async move {
        let client = Client::connect(&live, ClientConfig::default())
            .await
            .unwrap();
        let started = Instant::now();
        let batch = common::batch(&[b"v".to_vec()]);
        let base = client.produce("t", 0, Acks::All, batch).await.unwrap();
        (base, started.elapsed())
    });
    eprintln!("produce to a silent leader, answered by the new one after {took:?}");
    assert_eq!(base, Some(7));
    assert!(
        silent_received.load(Ordering::SeqCst) > 0,
        "sent to the old leader first"
    );
    assert_eq!(produces.load(Ordering::SeqCst), 1);
    // leader_check_after is 1 s; the request timeout 30 s.
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A broker that answers Metadata at once and Produce only after `delay`, each request
/// on its own thread (as a live broker completes requests concurrently).
fn slow_producing_broker(delay: Duration, leader_addr: Arc<std::sync::OnceLock<String>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let writer = Arc::new(std::sync::Mutex::new(stream.try_clone().unwrap()));
            let leader_addr = leader_addr.clone();
            std::thread::spawn(move || {
                loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).is_err() {
                        return;
                    }
                    let total = shardlog_net::frame::FrameHeader::frame_bytes(len).unwrap();
                    let mut frame = vec![0u8; total];
                    frame[..4].copy_from_slice(&len);
                    if stream.read_exact(&mut frame[4..]).is_err() {
                        return;
                    }
                    let header = shardlog_net::frame::FrameHeader::parse(&frame).unwrap();
                    let writer = writer.clone();
                    let me = leader_addr.get().unwrap().clone();
                    std::thread::spawn(move || {
                        let reply = if header.api == Api::Metadata as u16 {
                            let meta = metadata_of(&[(0, &me, true)], &[(Some(0), 1)]);
                            common::frame(header.api, 1, header.correlation, &meta, &[])
                        } else if let Some(reply) = common::producer_id(&header) {
                            reply
                        } else {
                            std::thread::sleep(delay);
                            produced(&header, 3)
                        };
                        let _ = writer.lock().unwrap().write_all(&reply);
                    });
                }
            });
        }
    });
    addr
}

fn probing_config() -> ClientConfig {
    ClientConfig {
        probe_after: Duration::from_millis(300),
        probe_timeout: Duration::from_millis(300),
        // The leader checks see no move here; only the probe can act.
        retries: 0,
        // No producer id to ask for first: the produce goes straight to the leader.
        idempotence: false,
        ..ClientConfig::default()
    }
}

/// A leader that stops answering while the metadata still names it: the connection is
/// probed after `probe_after` of silence and declared dead when the probe is not answered
/// within `probe_timeout`, long before the 30 s request timeout.
#[test]
fn a_silent_connection_is_probed_and_dropped() {
    let (silent, _) = silent_broker();
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let (me_inner, silent_inner) = (me.clone(), silent.clone());
    let live = common::fake_broker(move |header, _| {
        let me = me_inner.get().unwrap();
        let meta = metadata_of(&[(0, me, true), (1, &silent_inner, true)], &[(Some(1), 1)]);
        (header.api == Api::Metadata as u16)
            .then(|| common::frame(header.api, 1, header.correlation, &meta, &[]))
    });
    me.set(live.clone()).unwrap();
    let (result, took) = common::run(move || async move {
        let client = Client::connect(&live, probing_config()).await.unwrap();
        let started = Instant::now();
        let batch = common::batch(&[b"v".to_vec()]);
        let result = client.produce("t", 0, Acks::All, batch).await;
        (result, started.elapsed())
    });
    eprintln!("silent leader's connection dropped after {took:?}: {result:?}");
    match &result {
        Err(ClientError::Io(e)) => assert!(e.to_string().contains("liveness probe"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A leader that takes 1.5 s to answer a produce but answers the probes at once is live:
/// the produce is answered, not given up.
#[test]
fn a_slow_but_live_broker_is_not_dropped() {
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let addr = slow_producing_broker(Duration::from_millis(1500), me.clone());
    me.set(addr.clone()).unwrap();
    let (result, took) = common::run(move || async move {
        let client = Client::connect(&addr, probing_config()).await.unwrap();
        let started = Instant::now();
        let batch = common::batch(&[b"v".to_vec()]);
        let result = client.produce("t", 0, Acks::All, batch).await;
        (result, started.elapsed())
    });
    eprintln!("slow leader answered after {took:?}");
    assert_eq!(result.unwrap(), Some(3));
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}

/// A CreateTopic (DeleteTopic) attempt that got no answer may have been applied: when a
/// later attempt hears `TopicExists` for a topic as asked (`UnknownTopic` on a delete), the
/// call succeeds; a topic that differs from the request is still `TopicExists`.
#[test]
fn an_admin_attempt_whose_answer_was_lost_counts() {
    // Node 0 (the controller, asked first) answers metadata but never a topic change;
    // node 1 answers that the topic exists, or is unknown.
    let addrs: Arc<std::sync::OnceLock<(String, String)>> = Arc::default();
    let broker = |node: u32| {
        let addrs = addrs.clone();
        common::fake_broker(move |header, _| {
            let (a0, a1) = addrs.get().unwrap();
            let mut meta = metadata_of(&[(0, a0, true), (1, a1, true)], &[(Some(0), 1)]);
            meta.controller = Some(0);
            let answer = |code: ErrorCode| TopicResponse {
                error: code.as_u16(),
                message: format!("{code:?}"),
            };
            match Api::from_u16(header.api) {
                Some(Api::Metadata) => {
                    Some(common::frame(header.api, 1, header.correlation, &meta, &[]))
                }
                Some(Api::CreateTopic) if node == 1 => Some(common::frame(
                    header.api,
                    1,
                    header.correlation,
                    &answer(ErrorCode::TopicExists),
                    &[],
                )),
                Some(Api::DeleteTopic) if node == 1 => Some(common::frame(
                    header.api,
                    1,
                    header.correlation,
                    &answer(ErrorCode::UnknownTopic),
                    &[],
                )),
                _ => None,
            }
        })
    };
    let (a0, a1) = (broker(0), broker(1));
    addrs.set((a0.clone(), a1)).unwrap();
    let (as_asked, other, deleted) = common::run(move || async move {
        let config = ClientConfig {
            admin_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        let client = Client::connect(&a0, config.clone()).await.unwrap();
        let as_asked = client.create_topic("t", 1, 2, TopicConfig::default()).await;
        let other = client.create_topic("t", 3, 0, TopicConfig::default()).await;
        // A fresh client: this one asks node 1 first now (node 0 failed to answer).
        let client = Client::connect(&a0, config).await.unwrap();
        let deleted = client.delete_topic("t").await;
        (as_asked, other, deleted)
    });
    assert!(as_asked.is_ok(), "{as_asked:?}");
    assert_eq!(
        other.unwrap_err().code(),
        Some(ErrorCode::TopicExists),
        "3 partitions asked, the topic has 1"
    );
    assert!(deleted.is_ok(), "{deleted:?}");
}

/// A scripted leader of `t/0` that checks producer sequences as a broker does: appends
/// a producer's batch only at the sequence it expects next, answers a batch it holds
/// with its original offset, refuses the rest `OutOfOrderSequence`. `refuse_first`
/// attempts (counted over all produce requests) are answered `NotEnoughReplicas`
/// (retriable, nothing appended). Keeps every produce request's producer fields.
#[derive(Default)]
struct SequencingBroker {
    /// Producer id -> next sequence.
    expected: std::collections::HashMap<i64, i32>,
    /// (producer id, base sequence, base offset) of every batch appended.
    appended: Vec<(i64, i32, u64)>,
    /// (producer id, epoch, base sequence, batch bytes) of every produce request.
    requests: Vec<(i64, i16, i32, Vec<u8>)>,
    refuse_first: usize,
    /// Producer ids answered `OutOfOrderSequence` at any sequence.
    gap: Option<i64>,
    init_calls: usize,
}

impl SequencingBroker {
    fn produce(&mut self, batch: &[u8]) -> ProduceResponse {
        let header = shardlog_engine::batch::validate(batch).unwrap();
        let (pid, seq) = (header.producer_id, header.base_sequence);
        self.requests
            .push((pid, header.producer_epoch, seq, batch.to_vec()));
        let answer = |error: ErrorCode, base_offset: u64| ProduceResponse {
            error: error.as_u16(),
            base_offset,
            leader_hint: None,
            message: format!("{error:?}"),
        };
        if self.refuse_first > 0 {
            self.refuse_first -= 1;
            return answer(ErrorCode::NotEnoughReplicas, 0);
        }
        if let Some(&(_, _, offset)) = self.appended.iter().find(|b| b.0 == pid && b.1 == seq) {
            return answer(ErrorCode::None, offset);
        }
        let expected = self.expected.get(&pid).copied().unwrap_or(0);
        if pid >= 0 && (seq != expected || self.gap == Some(pid)) {
            return answer(ErrorCode::OutOfOrderSequence, 0);
        }
        let offset = self.appended.len() as u64 * 100;
        self.appended.push((pid, seq, offset));
        self.expected
            .insert(pid, seq + i32::try_from(header.record_count).unwrap());
        answer(ErrorCode::None, offset)
    }
}

/// Starts a [`SequencingBroker`] leading `t/0`; `ids` are the producer ids
/// `InitProducerId` hands out, in turn.
fn sequencing_broker(state: Arc<std::sync::Mutex<SequencingBroker>>, ids: Vec<i64>) -> String {
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let me_inner = me.clone();
    let addr = common::fake_broker(move |header, frame| {
        let me = me_inner.get().unwrap();
        let reply = match Api::from_u16(header.api) {
            Some(Api::Metadata) => {
                let meta = metadata_of(&[(0, me, true)], &[(Some(0), 1)]);
                common::frame(header.api, 1, header.correlation, &meta, &[])
            }
            Some(Api::InitProducerId) => {
                let mut state = state.lock().unwrap();
                let id = ids[state.init_calls.min(ids.len() - 1)];
                state.init_calls += 1;
                let response = shardlog_net::api::InitProducerIdResponse {
                    error: 0,
                    producer_id: id,
                    producer_epoch: 0,
                    message: String::new(),
                };
                common::frame(header.api, 1, header.correlation, &response, &[])
            }
            Some(Api::Produce) => {
                let response = state.lock().unwrap().produce(header.data(frame));
                common::frame(header.api, 1, header.correlation, &response, &[])
            }
            _ => return None,
        };
        Some(reply)
    });
    me.set(addr.clone()).unwrap();
    addr
}

fn quick_retries() -> ClientConfig {
    ClientConfig {
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(20),
        ..ClientConfig::default()
    }
}

/// The client asks for a producer id once, numbers each partition's batches by their
/// records (3, then 2: sequences 0 and 3), stamps them (the CRC still holds), and a retry
/// resends the very same bytes.
#[test]
fn idempotent_produce_numbers_batches_and_retries_the_same_bytes() {
    let state = Arc::new(std::sync::Mutex::new(SequencingBroker {
        refuse_first: 1,
        ..SequencingBroker::default()
    }));
    let addr = sequencing_broker(state.clone(), vec![41]);
    let offsets = common::run(move || async move {
        let client = Client::connect(&addr, quick_retries()).await.unwrap();
        let first = common::batch(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let second = common::batch(&[b"d".to_vec(), b"e".to_vec()]);
        let a = client.produce("t", 0, Acks::All, first).await.unwrap();
        let b = client.produce("t", 0, Acks::Leader, second).await.unwrap();
        (a, b, client.init_producer().await.unwrap())
    });
    assert_eq!(offsets, (Some(0), Some(100), (41, 0)));
    let state = state.lock().unwrap();
    assert_eq!(state.init_calls, 1);
    let fields: Vec<(i64, i16, i32)> = state.requests.iter().map(|r| (r.0, r.1, r.2)).collect();
    assert_eq!(fields, vec![(41, 0, 0), (41, 0, 0), (41, 0, 3)]);
    assert_eq!(
        state.requests[0].3, state.requests[1].3,
        "a retry resends the same bytes"
    );
}

/// Two batches in flight on one partition; the first is refused (retriable) and backs
/// off, so the second reaches the leader first and is refused `OutOfOrderSequence`.
/// With the first still outstanding that is no error: the second waits for the first to
/// be sent again and follows it. Both are stored once, in send order.
#[test]
fn out_of_order_behind_an_outstanding_batch_is_resent_after_it() {
    let state = Arc::new(std::sync::Mutex::new(SequencingBroker {
        refuse_first: 1,
        ..SequencingBroker::default()
    }));
    let addr = sequencing_broker(state.clone(), vec![5]);
    let (a, b) = common::run(move || async move {
        let client = Client::connect(&addr, quick_retries()).await.unwrap();
        client.init_producer().await.unwrap();
        let first = client.produce("t", 0, Acks::All, common::batch(&[b"a".to_vec()]));
        let second = client.produce("t", 0, Acks::All, common::batch(&[b"b".to_vec()]));
        futures::future::join(first, second).await
    });
    assert_eq!((a.unwrap(), b.unwrap()), (Some(0), Some(100)));
    let state = state.lock().unwrap();
    assert_eq!(state.appended, vec![(5, 0, 0), (5, 1, 100)]);
    let sequences: Vec<i32> = state.requests.iter().map(|r| r.2).collect();
    assert_eq!(
        sequences,
        vec![0, 1, 0, 1],
        "refused, out of order, then both in order"
    );
}

/// `OutOfOrderSequence` with no lower batch outstanding is a real gap: an error, not
/// retried, and it ends the session: the next batch goes under a new producer id from
/// sequence 0.
#[test]
fn a_real_sequence_gap_fails_and_starts_a_new_session() {
    let state = Arc::new(std::sync::Mutex::new(SequencingBroker {
        gap: Some(8),
        ..SequencingBroker::default()
    }));
    let addr = sequencing_broker(state.clone(), vec![8, 9]);
    let (failed, next) = common::run(move || async move {
        let client = Client::connect(&addr, quick_retries()).await.unwrap();
        let failed = client
            .produce("t", 0, Acks::All, common::batch(&[b"a".to_vec()]))
            .await;
        let next = client
            .produce("t", 0, Acks::All, common::batch(&[b"b".to_vec()]))
            .await;
        (failed, next)
    });
    assert_eq!(
        failed.unwrap_err().code(),
        Some(ErrorCode::OutOfOrderSequence)
    );
    assert_eq!(next.unwrap(), Some(0));
    let state = state.lock().unwrap();
    assert_eq!(state.init_calls, 2);
    let fields: Vec<(i64, i32)> = state.requests.iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(fields, vec![(8, 0), (9, 0)], "one attempt each");
}

/// With `idempotence: false`, with `Acks::None`, and for a batch the caller stamped
/// itself, batches go as they are and no producer id is asked for.
#[test]
fn no_producer_id_without_idempotence() {
    let state = Arc::new(std::sync::Mutex::new(SequencingBroker::default()));
    let addr = sequencing_broker(state.clone(), vec![3]);
    common::run(move || async move {
        let config = ClientConfig {
            idempotence: false,
            ..ClientConfig::default()
        };
        let plain = Client::connect(&addr, config).await.unwrap();
        let batch = common::batch(&[b"a".to_vec()]);
        plain.produce("t", 0, Acks::All, batch).await.unwrap();
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        client
            .produce("t", 0, Acks::None, common::batch(&[b"b".to_vec()]))
            .await
            .unwrap();
        let mut builder = shardlog_engine::record::BatchBuilder::new();
        builder.set_producer(shardlog_engine::record::ProducerFields {
            producer_id: 77,
            producer_epoch: 0,
            base_sequence: 0,
        });
        builder.push(
            shardlog_engine::TimestampMs(common::now_ms()),
            None,
            Some(b"c"),
            &[],
        );
        let own = bytes::Bytes::from(builder.finish());
        client.produce("t", 0, Acks::All, own).await.unwrap();
    });
    let state = state.lock().unwrap();
    assert_eq!(state.init_calls, 0);
    let ids: Vec<i64> = state.requests.iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![-1, -1, 77]);
}

/// Pipelining across a "failover": 20 batches in flight on one partition, the first 5
/// attempts refused (retriable), so most batches reach the leader ahead of lower ones
/// and are refused `OutOfOrderSequence`. Every batch is stored once, in send order, and
/// every produce succeeds.
#[test]
fn many_batches_in_flight_are_stored_once_in_order_after_refusals() {
    let state = Arc::new(std::sync::Mutex::new(SequencingBroker {
        refuse_first: 5,
        ..SequencingBroker::default()
    }));
    let addr = sequencing_broker(state.clone(), vec![11]);
    let offsets = common::run(move || async move {
        let client = Client::connect(&addr, quick_retries()).await.unwrap();
        client.init_producer().await.unwrap();
        let sends = (0..20u8).map(|i| {
            let batch = common::batch(&[vec![i], vec![i]]);
            client.produce("t", 0, Acks::All, batch)
        });
        futures::future::join_all(sends).await
    });
    let offsets: Vec<u64> = offsets.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(offsets, (0..20).map(|i| i * 100).collect::<Vec<u64>>());
    let state = state.lock().unwrap();
    let stored: Vec<i32> = state.appended.iter().map(|b| b.1).collect();
    assert_eq!(stored, (0..20).map(|i| i * 2).collect::<Vec<i32>>());
    let refused = state.requests.len() - 20;
    eprintln!("{} requests for 20 batches", state.requests.len());
    assert!(refused >= 5, "{refused}");
}
