//! Forged peer frames against a real three-node cluster (replication factor 3,
//! `min_insync` 2, a cluster secret), one test per forgery:
//!
//! 1. an `EpochAnswer` telling a follower the leader's log holds no epoch (-1, offset 0),
//!    after a `Ship` that sends it back to reconciling: obeyed, it would cut committed
//!    records (the follower's replica asserts it never does: its shard would panic);
//! 2. `Fenced` with a newer epoch, to a partition leader: obeyed, it stopped leading while
//!    the controller still named it, and the partition refused every produce (found by
//!    this test; a leader now steps down on the controller's word only);
//! 3. a `ShipAck` from a future incarnation of a follower, with a huge `durable_end`:
//!    believed, the leader would take it for the follower restarted (the ISR shrinks, and
//!    grows back on the forged durable end) and refuse the follower's real acks as older;
//! 4. a controller `Heartbeat` for another node, sent on while that node is SIGKILLed:
//!    believed, its session would live on, or a new run of it would register as live;
//! 5. a `ChangeIsr` from a node that does not lead the partition: applied, the ISR would
//!    shrink to the leader;
//! 6. a `Ship` from a node that does not lead: appended, a follower would hold a record
//!    the leader never wrote;
//! 7. a `Ship` posing as the leader whose data region disagrees with its envelope (fewer
//!    or more bytes than announced, a batch torn by the announced length, a CRC that does
//!    not match, more batches than announced) and an ack with data beside it: each is
//!    refused whole and counted; a follower that appended the valid part would hold a
//!    record the leader never wrote;
//! 8. a `Replicate` frame of the previous version (the batches inside the envelope, the
//!    envelope in the data region): refused with `UnsupportedVersion` before its meta is
//!    read, and logged as a node of another release.
//!
//! Each forgery goes over three channels: the client port, which must answer every
//! node-to-node api with an error reply; the peer port without credentials (the frames
//! straight away, and after a handshake under a wrong secret), which must refuse before it
//! reads a frame; and the peer port after a valid handshake as node A (the real secret),
//! with envelopes that name another sender B (dropped and counted: a peer speaks only for
//! the node it proved) and messages A itself would never send (a `Fenced`, `EpochAnswer`,
//! `Ship`, `ShipAck` or `ChangeIsr` A has no standing to send). Each refusal the forger
//! cannot see is awaited in the target's log, so a forgery that never arrived does not
//! pass for one refused. Test 1 also poses as the partition's leader itself (any holder
//! of the secret can): the follower's last defence, never to cut below its high
//! watermark, must hold.
//!
//! Around the forgeries, a load (`common::load`: idempotent `acks=all` producers and a
//! consumer per partition) runs before and after. Then: every node still runs and none
//! logged a panic (a panicking shard leaves the process running); since the forgeries
//! began no node logged a change of the controller's metadata or leader, not even one
//! undone at once (test 4: only the failover of the killed node); the leaders, leader
//! epochs and ISRs are those of before; the load after the forgeries was acknowledged;
//! the whole log reads back with every acknowledged record in place and nothing else; no
//! node's data holds a forged record.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{Cluster, Links, high_watermark, partition};
use common::handshake::{
    CHALLENGE, HELLO, MODE_SECRET, PROOF, VERDICT, dialer_mac, fresh_nonce, handshake, message,
    nonce_of, read_message,
};
use common::load::{Load, Outcome, Shape, TOPIC, verify, wait_acks};
use common::read_frame;
use common::view::{WAIT_MAX, all, describe, setup, wait_view};
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{LeaderEpoch, Offset, TimestampMs, batch};
use shardlog_net::ErrorCode;
use shardlog_net::api::{
    Api, ControllerRequest, ErrorResponse, MetadataResponse, REPLICATE_VERSION, ReplicateRequest,
    VERSION,
};
use shardlog_net::frame::{FLAG_ERROR, decode_meta};
use shardlog_net::peer::auth::MESSAGE_BYTES;
use shardlog_replicator::NodeId;
use shardlog_replicator::message::{
    self, Batches, Envelope, EpochAnswer, Fenced, Head, Message, Ship, ShipAck, ShipHead,
};

/// Partitions of the topic: with three, leadership is spread over the nodes.
const PARTITIONS: u32 = 3;
/// The load before and after the forgeries: one producer per partition, gently.
const LOAD: Shape = Shape {
    partitions: PARTITIONS,
    producers_per_partition: 1,
    pause: Duration::from_millis(10),
};
/// Acknowledged batches each producer waits for, before and after the forgeries.
const ACKS: usize = 10;
/// How long the cluster runs on after the forgeries before it is checked: longer than
/// the session timeout (1 s) and many heartbeats and replica timers.
const SETTLE: Duration = Duration::from_secs(3);
/// Bound on every socket read and write of a forger.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The value of every forged record: found in no node's data at the end.
const FORGED: &[u8] = b"forged by the test: never acknowledged";
/// What a node logs for a peer message naming another sender than the proven one.
const NAMES_ANOTHER: &str = "naming another node; dropped";
/// What a node logs for a replication message it refuses as invalid.
const INVALID: &str = "invalid replication message; dropped";
/// What a node logs (the first time) for a replication frame of another version.
const ANOTHER_RELEASE: &str = "replication frame of another release refused";
/// What a node logs for a peer connection refused in the handshake.
const HANDSHAKE_REFUSED: &str = "peer handshake refused";

// ---- frames ----

fn correlation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A `Replicate` frame: `message` about `partition`, claiming to come from `from`.
fn replicate(partition: u32, from: u32, to: u32, message: Message) -> Vec<u8> {
    let (envelope, batches) = message::seal(partition, NodeId(from), NodeId(to), message);
    replicate_raw(envelope, &batches.chunks().concat())
}

/// A `Replicate` frame of `envelope` with `data` as its data region, whatever the
/// envelope says about it.
fn replicate_raw(envelope: Envelope, data: &[u8]) -> Vec<u8> {
    let meta = ReplicateRequest {
        topic: TOPIC.to_owned(),
        envelope,
    };
    let version = REPLICATE_VERSION;
    common::frame(Api::Replicate as u16, version, correlation(), &meta, data)
}

/// `batches` as a ship's, each counted.
fn shipped(batches: &[Vec<u8>]) -> Batches {
    let mut shipped = Batches::default();
    for batch in batches {
        shipped.push(Bytes::copy_from_slice(batch), 1);
    }
    shipped
}

/// A `Controller` frame.
fn controller_frame(request: &ControllerRequest) -> Vec<u8> {
    common::frame(Api::Controller as u16, VERSION, correlation(), request, &[])
}

/// A valid batch (CRC and records) of one forged record at `base_offset`, epoch `epoch`.
fn forged_batch(base_offset: u64, epoch: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs::now(), None, Some(FORGED), &[]);
    let mut bytes = builder.finish();
    batch::patch_base(&mut bytes, Offset(base_offset), LeaderEpoch(epoch));
    batch::validate_produced(&bytes).unwrap();
    bytes
}

// ---- the three channels ----

/// Frames forged against one node.
#[derive(Clone)]
struct Forgery {
    /// Where they go.
    target: usize,
    /// The target's client and peer ports.
    client: String,
    peer: String,
    /// The node the authenticated channel proves itself as (not `target`).
    proven: u32,
    /// The frames, in order.
    frames: Vec<Vec<u8>>,
    /// How many of them name a sender other than `proven`: each is dropped and logged.
    naming_another: usize,
    /// How many of them are invalid (a ship whose data disagrees with its envelope): each
    /// is refused and logged.
    invalid: usize,
}

impl Forgery {
    fn new(
        cluster: &Cluster,
        target: usize,
        proven: u32,
        frames: Vec<Vec<u8>>,
        naming_another: usize,
    ) -> Forgery {
        Forgery {
            target,
            client: cluster.addr(target),
            peer: cluster.peer_addr(target),
            proven,
            frames,
            naming_another,
            invalid: 0,
        }
    }

    /// The same, `invalid` of whose frames the target refuses as invalid.
    fn invalid(self, invalid: usize) -> Forgery {
        Forgery { invalid, ..self }
    }
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Sends `forgery` on every channel (see the module docs); checks each refusal the
/// forger can see.
fn send_everywhere(forgery: &Forgery) {
    on_client_port(&forgery.client, &forgery.frames);
    without_credentials(forgery);
    as_node(
        &forgery.peer,
        forgery.target,
        forgery.proven,
        &forgery.frames,
    );
}

/// [`send_everywhere`], then waits until the target logged each refusal the forger
/// cannot see: both handshakes refused, every frame naming another sender dropped.
fn forge(cluster: &mut Cluster, forgery: &Forgery, what: &str) {
    let note = format!("forging {what} ({})", correlation());
    cluster.note(forgery.target, &note);
    send_everywhere(forgery);
    let target = forgery.target;
    let expected = [
        (HANDSHAKE_REFUSED, 2),
        (NAMES_ANOTHER, forgery.naming_another),
        (INVALID, forgery.invalid),
    ];
    cluster.wait_for(
        &format!("node {target} to log {what}'s refusals"),
        WAIT_MAX,
        |c| {
            let lines = c.log_lines(target);
            let start = lines.iter().rposition(|l| l.contains(&note)).unwrap_or(0);
            let counts: Vec<(&str, usize, usize)> = expected
                .iter()
                .map(|&(needle, n)| {
                    let found = lines[start..].iter().filter(|l| l.contains(needle)).count();
                    (needle, found, n)
                })
                .collect();
            if counts.iter().all(|&(_, found, n)| found >= n) {
                Ok(())
            } else {
                Err(format!("(line, found, expected): {counts:?}"))
            }
        },
    );
    eprintln!(
        "{what}: {} frames to node {target} on every channel (authenticated as node {}), \
         every refusal seen",
        forgery.frames.len(),
        forgery.proven
    );
}

/// The client port answers each frame with an error reply naming the peer listener.
fn on_client_port(client: &str, frames: &[Vec<u8>]) {
    let mut stream = connect(client);
    stream.write_all(&frames.concat()).unwrap();
    for _ in frames {
        let (header, frame) = read_frame(&mut stream).expect("an error reply per frame");
        assert_ne!(header.flags & FLAG_ERROR, 0, "an error reply");
        let error: ErrorResponse = decode_meta(&header, &frame).unwrap();
        assert_eq!(
            ErrorCode::from(error.error),
            ErrorCode::InvalidRequest,
            "{}",
            error.message
        );
        assert!(
            error.message.contains("node-to-node api"),
            "a clear error: {}",
            error.message
        );
    }
}

/// The peer port refuses the frames sent straight away, and sent after a handshake
/// under a wrong secret.
fn without_credentials(forgery: &Forgery) {
    let Forgery {
        target,
        proven,
        ref frames,
        ..
    } = *forgery;
    let mut stream = connect(&forgery.peer);
    // The listener may refuse before it has read everything: write errors are expected.
    let _ = stream.write_all(&frames.concat());
    refused(&mut stream, "frames without a handshake");

    let target_id = u32::try_from(target).unwrap();
    let mut stream = connect(&forgery.peer);
    let nonce = fresh_nonce();
    let hello = message(HELLO, MODE_SECRET, 0, proven, target_id, nonce, [0; 32]);
    stream.write_all(&hello).unwrap();
    let challenge = read_message(&mut stream);
    assert_eq!(
        challenge[5], CHALLENGE,
        "node {target} challenges the hello"
    );
    let wrong = b"not the cluster's secret, though just as long";
    let mac = dialer_mac(wrong, proven, target_id, &nonce, &nonce_of(&challenge));
    let proof = message(PROOF, MODE_SECRET, 0, proven, target_id, [0; 32], mac);
    let _ = stream.write_all(&proof);
    let _ = stream.write_all(&frames.concat());
    refused(&mut stream, "a proof under a wrong secret");
}

/// Reads until the listener closes: nothing comes back but (at most) a refusal verdict.
fn refused(stream: &mut TcpStream, what: &str) {
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        // A close with unread input is a reset: it may overtake the verdict.
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the peer port did not close the connection: {e}"),
    }
    let verdict = answer.len() == MESSAGE_BYTES
        && answer[..4] == *b"SLPA"
        && answer[5] == VERDICT
        && answer[7] != 0;
    assert!(
        answer.is_empty() || verdict,
        "{what}: the peer port answered {} bytes other than a refusal: {answer:?}",
        answer.len()
    );
}

/// A valid handshake as node `proven` (the real secret), then the frames; returns once
/// the target has read them all (it closes after our end of input) and answered none.
fn as_node(peer: &str, target: usize, proven: u32, frames: &[Vec<u8>]) {
    let mut stream = handshake(peer, target, proven);
    stream.write_all(&frames.concat()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("node {target} did not close after our frames: {e}"));
    assert!(
        answer.is_empty(),
        "fire-and-forget frames answered: {answer:?}"
    );
}

// ---- the cluster's state ----

/// Per partition: leader, leader epoch, ISR (sorted).
type State = BTreeMap<u32, (Option<u32>, i32, Vec<u32>)>;

fn state_of(meta: &MetadataResponse) -> State {
    meta.topics
        .iter()
        .filter(|t| t.name == TOPIC)
        .flat_map(|t| &t.partitions)
        .map(|p| {
            let mut isr = p.isr.clone();
            isr.sort_unstable();
            (p.partition, (p.leader, p.leader_epoch, isr))
        })
        .collect()
}

/// A partition's roles: its leader, epoch and followers (in replica order).
#[derive(Clone, Debug)]
struct Roles {
    partition: u32,
    leader: u32,
    epoch: i32,
    followers: Vec<u32>,
}

fn roles(meta: &MetadataResponse, partition_id: u32) -> Roles {
    let p = partition(meta, TOPIC, partition_id).unwrap();
    let leader = p.leader.unwrap();
    Roles {
        partition: partition_id,
        leader,
        epoch: p.leader_epoch,
        followers: p
            .replicas
            .iter()
            .copied()
            .filter(|&n| n != leader)
            .collect(),
    }
}

/// The controller's view; the controller leader's id.
fn view(cluster: &mut Cluster) -> (MetadataResponse, u32) {
    let nodes: Vec<usize> = (0..cluster.len())
        .filter(|&n| cluster.metadata(n).is_ok())
        .collect();
    let (meta, _) = wait_view(cluster, "the controller's view", &nodes, |_| Ok(()));
    let controller = meta.controller.unwrap();
    (meta, controller)
}

/// The incarnation `node` registered at its last start (its `node.json`).
fn incarnation(cluster: &Cluster, node: usize) -> u64 {
    let text = std::fs::read(cluster.data_dir(node).join("node.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    json["incarnation"].as_u64().unwrap()
}

/// Waits until the high watermark of every partition has stood still for half a second
/// (the load is stopped: every replica then holds the whole log); returns them.
fn quiet_high_watermarks(cluster: &mut Cluster) -> BTreeMap<u32, u64> {
    let read = |c: &Cluster| -> Result<BTreeMap<u32, u64>, String> {
        let (_, meta) = c.metadata_any().ok_or("no node answers")?;
        (0..PARTITIONS)
            .map(|p| {
                let leader = partition(&meta, TOPIC, p).and_then(|s| s.leader);
                let leader = leader.ok_or(format!("{TOPIC}/{p} has no leader"))?;
                let hw = high_watermark(&c.addr(leader as usize), TOPIC, p);
                hw.map(|hw| (p, hw)).map_err(|e| e.to_string())
            })
            .collect()
    };
    let mut last = read(cluster).ok();
    let (marks, _) = cluster.wait_for("the high watermarks to stand still", WAIT_MAX, |c| {
        std::thread::sleep(Duration::from_millis(500));
        let now = read(c)?;
        let same = last.as_ref() == Some(&now);
        last = Some(now.clone());
        if same {
            Ok(now)
        } else {
            Err(format!("moving: {now:?}"))
        }
    });
    marks
}

// ---- the scenario around each forgery ----

/// A cluster with the topic, after a first load: what every test starts from.
struct Scenario {
    cluster: Cluster,
    started: Instant,
    first: Outcome,
    /// The controller's view after the first load.
    before: MetadataResponse,
    controller: u32,
    /// The note in every node's log where the forgeries begin.
    begun: String,
}

impl Scenario {
    fn start() -> Scenario {
        let started = Instant::now();
        let mut cluster = setup(Links::Direct, PARTITIONS);
        let load = Load::start(&cluster.brokers(), 0, LOAD);
        wait_acks(
            &mut cluster,
            &load.progress,
            started,
            ACKS,
            "before the forgeries",
        );
        let first = load.stop();
        let (before, controller) = view(&mut cluster);
        eprintln!(
            "before the forgeries: controller {controller}; {}",
            describe(&before)
        );
        let begun = "the forgeries begin".to_owned();
        for node in 0..cluster.len() {
            cluster.note(node, &begun);
        }
        Scenario {
            cluster,
            started,
            first,
            before,
            controller,
            begun,
        }
    }

    /// Lets the cluster run on for [`SETTLE`], checks it (see [`Scenario::check`]), runs
    /// a second load, checks the cluster again, then the whole log and every node's data.
    fn finish(mut self, expected: &State, label: &str, allowed: &dyn Fn(&str) -> bool) {
        let until = Instant::now() + SETTLE;
        while Instant::now() < until {
            self.cluster.assert_running();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.check(expected, "after the forgeries", allowed);
        let since = Instant::now();
        let load = Load::start(&self.cluster.brokers(), 1, LOAD);
        wait_acks(
            &mut self.cluster,
            &load.progress,
            since,
            ACKS,
            "after the forgeries",
        );
        let second = load.stop();
        self.check(expected, "after the second load", allowed);
        verify(&self.cluster, &[&self.first, &second], label);
        no_forged_record_stored(&self.cluster);
        eprintln!("{label}: test time {:?}", self.started.elapsed());
    }

    /// Every node the test left running runs and never panicked; since the forgeries
    /// began, no node logged a change of the controller's metadata or leader (not even
    /// one undone at once) but those `allowed`; the controller's leaders, epochs and ISRs
    /// are `expected`.
    fn check(&mut self, expected: &State, when: &str, allowed: &dyn Fn(&str) -> bool) {
        self.cluster.assert_running();
        for node in 0..self.cluster.len() {
            let lines = self.cluster.log_lines(node);
            let panics: Vec<&String> = lines.iter().filter(|l| l.contains("panicked")).collect();
            assert!(panics.is_empty(), "node {node} panicked: {panics:#?}");
            let begun = lines.iter().rposition(|l| l.contains(&self.begun));
            let changes: Vec<&String> = lines[begun.unwrap_or(0)..]
                .iter()
                .filter(|l| {
                    l.contains("cluster metadata change=") || l.contains("controller leader")
                })
                .filter(|l| !allowed(l))
                .collect();
            assert!(
                changes.is_empty(),
                "{when}: node {node} logged changes since the forgeries began: {changes:#?}"
            );
        }
        let (meta, _) = view(&mut self.cluster);
        assert_eq!(
            &state_of(&meta),
            expected,
            "{when}: the leaders, epochs or ISRs moved: {}",
            describe(&meta)
        );
    }
}

/// No change of the controller's metadata is allowed.
fn no_change(_: &str) -> bool {
    false
}

/// No file under any node's data directory holds a forged record's value.
fn no_forged_record_stored(cluster: &Cluster) {
    fn visit(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, found);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(FORGED.len()).any(|w| w == FORGED)
            {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    for node in 0..cluster.len() {
        visit(&cluster.data_dir(node), &mut found);
    }
    assert!(found.is_empty(), "forged records stored: {found:?}");
}

// ---- the forgeries ----

/// Test 1. Sent to a follower: a `Ship` whose `prev_epoch` does not match (the follower
/// asks its leader again where its epoch ends), then `EpochAnswer`s saying the leader's
/// log holds no epoch at all: cut everything. From the other follower, claiming the
/// leader, and as itself (a node that does not lead); then posing as the leader.
#[test]
fn epoch_answer_truncating_to_nothing_cuts_nothing() {
    let mut scenario = Scenario::start();
    let marks = quiet_high_watermarks(&mut scenario.cluster);
    let r = roles(&scenario.before, 0);
    let (follower, other) = (r.followers[0], r.followers[1]);
    let end = marks[&r.partition];
    assert!(end > 0, "records to cut");
    let frames = |from: u32| -> Vec<Vec<u8>> {
        let ship = Ship {
            leader_epoch: r.epoch,
            prev_offset: end,
            prev_epoch: -1,
            high_watermark: 0,
            batches: Batches::default(),
        };
        let mut frames = vec![replicate(r.partition, from, follower, Message::Ship(ship))];
        for query_epoch in [r.epoch, r.epoch - 1, 0] {
            let answer = EpochAnswer {
                leader_epoch: r.epoch,
                query_epoch,
                epoch: -1,
                end_offset: 0,
            };
            let answer = Message::EpochAnswer(answer);
            frames.push(replicate(r.partition, from, follower, answer));
        }
        frames
    };
    let claiming_leader = frames(r.leader);
    let n = claiming_leader.len();
    let all_frames = [claiming_leader.clone(), frames(other)].concat();
    let forgery = Forgery::new(&scenario.cluster, follower as usize, other, all_frames, n);
    forge(&mut scenario.cluster, &forgery, "EpochAnswer -1");
    // A holder of the secret may claim any node: posing as the leader, only the
    // follower's rule never to cut below its high watermark stands in the way.
    as_node(&forgery.peer, forgery.target, r.leader, &claiming_leader);
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "EpochAnswer -1", &no_change);
}

/// Test 2. `Fenced` with newer epochs, to a partition's leader: from one follower
/// claiming the other, and from a follower as itself.
#[test]
fn fenced_from_a_peer_does_not_depose_a_leader() {
    let mut scenario = Scenario::start();
    let r = roles(&scenario.before, 0);
    let (one, other) = (r.followers[0], r.followers[1]);
    let frames = |from: u32| -> Vec<Vec<u8>> {
        [r.epoch + 1, r.epoch + 1000, i32::MAX]
            .into_iter()
            .map(|leader_epoch| {
                let fenced = Message::Fenced(Fenced { leader_epoch });
                replicate(r.partition, from, r.leader, fenced)
            })
            .collect()
    };
    let claiming_one = frames(one);
    let n = claiming_one.len();
    let all_frames = [claiming_one, frames(other)].concat();
    let forgery = Forgery::new(&scenario.cluster, r.leader as usize, other, all_frames, n);
    forge(&mut scenario.cluster, &forgery, "Fenced");
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "Fenced", &no_change);
}

/// Test 3. `ShipAck`s of a follower's future incarnations (one past the registered one,
/// and the largest), acking a log end and durable end far past the leader's log end:
/// from the other follower claiming that follower, and from the follower as itself.
#[test]
fn ship_ack_from_a_future_incarnation_is_not_believed() {
    let mut scenario = Scenario::start();
    let r = roles(&scenario.before, 0);
    let (acker, other) = (r.followers[0], r.followers[1]);
    let registered = incarnation(&scenario.cluster, acker as usize);
    let frames: Vec<Vec<u8>> = [registered + 1, u64::MAX]
        .into_iter()
        .map(|incarnation| {
            let ack = Message::ShipAck(ShipAck {
                leader_epoch: r.epoch,
                incarnation,
                log_end: u64::MAX,
                durable_end: u64::MAX,
                resend: false,
            });
            replicate(r.partition, acker, r.leader, ack)
        })
        .collect();
    let leader = r.leader as usize;
    let n = frames.len();
    let claiming = Forgery::new(&scenario.cluster, leader, other, frames.clone(), n);
    forge(
        &mut scenario.cluster,
        &claiming,
        "ShipAck, claiming the follower",
    );
    let as_itself = Forgery::new(&scenario.cluster, leader, acker, frames, 0);
    forge(
        &mut scenario.cluster,
        &as_itself,
        "ShipAck, as the follower",
    );
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "ShipAck", &no_change);
}

/// Test 4. Node K (leading a partition, not the controller) is SIGKILLed while a forger
/// keeps sending the controller heartbeats for it (with its registered incarnation and
/// the next one), authenticated as the third node; raft messages claiming K go along.
/// K's partitions fail over, K leaves every ISR, nothing else moves.
#[test]
fn heartbeats_for_a_killed_node_do_not_keep_it_alive() {
    let mut scenario = Scenario::start();
    let controller = scenario.controller;
    let leads = |n: u32| (0..PARTITIONS).any(|p| roles(&scenario.before, p).leader == n);
    let killed = (0..3u32).find(|&n| n != controller && leads(n)).unwrap();
    let forger = (0..3u32).find(|&n| n != controller && n != killed).unwrap();
    let frames = heartbeat_frames(&scenario.cluster, killed);
    let n = frames.len();
    let forgery = Forgery::new(&scenario.cluster, controller as usize, forger, frames, n);
    forge(&mut scenario.cluster, &forgery, "Heartbeat");
    let forger = Forger::start(forgery);
    let killed_at = Instant::now();
    scenario.cluster.kill(&[killed as usize]);
    let expected = failed_over(&scenario.before, killed);
    let live: Vec<usize> = all(&scenario.cluster)
        .into_iter()
        .filter(|&n| n != killed as usize)
        .collect();
    let what = "the killed node's partitions to fail over";
    let (meta, _) = wait_view(&mut scenario.cluster, what, &live, |m| {
        let dead = m.brokers.iter().any(|b| b.node_id == killed && !b.live);
        if dead && state_of(m) == expected {
            Ok(())
        } else {
            Err(describe(m))
        }
    });
    eprintln!(
        "failed over {:?} after the SIGKILL, the forger sending on: {}",
        killed_at.elapsed(),
        describe(&meta)
    );
    std::thread::sleep(SETTLE);
    let rounds = forger.stop();
    eprintln!("the forger sent {rounds} rounds of heartbeats for node {killed}");
    assert!(rounds > 10, "the forger kept sending");
    scenario.finish(&expected, "Heartbeat", &|line| {
        // The failover; a registration (the killed node's, by a forged heartbeat) is not.
        line.contains("cluster metadata change=") && !line.contains("NodeRegistered")
    });
}

/// The state once `killed` is fenced: the partitions it led move to the first ISR member
/// left in replica order, one epoch up; it leaves every ISR.
fn failed_over(before: &MetadataResponse, killed: u32) -> State {
    let mut state = state_of(before);
    for (p, (leader, epoch, isr)) in &mut state {
        isr.retain(|&n| n != killed);
        if *leader == Some(killed) {
            let replicas = &partition(before, TOPIC, *p).unwrap().replicas;
            *leader = replicas.iter().copied().find(|n| isr.contains(n));
            *epoch += 1;
        }
    }
    state
}

/// Heartbeats for `node` (registered incarnation and the next), one for a node outside
/// `--peers`, and raft heartbeats claiming `node`, one committing far past the end of
/// the log (raft-rs would panic on it).
fn heartbeat_frames(cluster: &Cluster, node: u32) -> Vec<Vec<u8>> {
    use protobuf::Message as _;
    let registered = incarnation(cluster, node as usize);
    let address = cluster.addr(node as usize);
    let mut frames: Vec<Vec<u8>> = [registered, registered + 1]
        .into_iter()
        .map(|incarnation| {
            controller_frame(&ControllerRequest::Heartbeat {
                node,
                address: address.clone(),
                incarnation,
                free_bytes: Some(1 << 40),
            })
        })
        .collect();
    frames.push(controller_frame(&ControllerRequest::Heartbeat {
        node: 99,
        address: "127.0.0.1:1".into(),
        incarnation: 1,
        free_bytes: None,
    }));
    for commit in [0, 1 << 40] {
        let mut raft = raft::eraftpb::Message::default();
        raft.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        // Raft ids are node ids + 1.
        raft.from = u64::from(node) + 1;
        raft.term = 1_000;
        raft.commit = commit;
        let request = ControllerRequest::Raft { from: node };
        let data = raft.write_to_bytes().unwrap();
        let api = Api::Controller as u16;
        frames.push(common::frame(api, VERSION, correlation(), &request, &data));
    }
    frames
}

/// A thread sending a forgery on every channel every 100 ms until stopped (or dropped:
/// a failing test stops it before its cluster goes).
struct Forger {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Forger {
    fn start(forgery: Forgery) -> Forger {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            while !stopped.load(Ordering::SeqCst) {
                send_everywhere(&forgery);
                rounds += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            rounds
        });
        Forger {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; the rounds it sent.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Test 5. `ChangeIsr` proposals shrinking a partition's ISR to its leader (or to the
/// leader and the forger), on every partition epoch a young partition can have, from a
/// node that does not lead it: to the controller leader, and to the other node.
#[test]
fn change_isr_from_a_node_that_does_not_lead_is_refused() {
    let mut scenario = Scenario::start();
    let controller = scenario.controller;
    // A partition and a forger that is neither its leader nor the controller.
    let (r, forger) = (0..PARTITIONS)
        .map(|p| roles(&scenario.before, p))
        .find_map(|r| {
            let forger = r.followers.iter().copied().find(|&n| n != controller)?;
            Some((r, forger))
        })
        .unwrap();
    let mut frames = Vec::new();
    for partition_epoch in 0..32 {
        for isr in [vec![r.leader], vec![r.leader, forger]] {
            frames.push(controller_frame(&ControllerRequest::ChangeIsr {
                topic: TOPIC.to_owned(),
                partition: r.partition,
                leader_epoch: r.epoch,
                partition_epoch,
                isr,
            }));
        }
    }
    for target in all(&scenario.cluster) {
        if target != forger as usize {
            let forgery = Forgery::new(&scenario.cluster, target, forger, frames.clone(), 0);
            forge(
                &mut scenario.cluster,
                &forgery,
                &format!("ChangeIsr to {target}"),
            );
        }
    }
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "ChangeIsr", &no_change);
}

/// Test 6. A `Ship` of a valid batch (a forged record right at the log end, in the
/// current epoch, with a high watermark past it) to a follower: from the other follower
/// claiming the leader, and as itself; and the same to the leader.
#[test]
fn ship_from_a_node_that_does_not_lead_appends_nothing() {
    let mut scenario = Scenario::start();
    let marks = quiet_high_watermarks(&mut scenario.cluster);
    let r = roles(&scenario.before, 0);
    let (follower, other) = (r.followers[0], r.followers[1]);
    let end = marks[&r.partition];
    let ship = |from: u32, to: u32| {
        let ship = Ship {
            leader_epoch: r.epoch,
            prev_offset: end,
            prev_epoch: r.epoch,
            high_watermark: end + 1_000,
            batches: shipped(&[forged_batch(end, r.epoch)]),
        };
        replicate(r.partition, from, to, Message::Ship(ship))
    };
    let frames = vec![ship(r.leader, follower), ship(other, follower)];
    let to_follower = Forgery::new(&scenario.cluster, follower as usize, other, frames, 1);
    forge(&mut scenario.cluster, &to_follower, "Ship to a follower");
    let frames = vec![ship(follower, r.leader), ship(other, r.leader)];
    let to_leader = Forgery::new(&scenario.cluster, r.leader as usize, other, frames, 1);
    forge(&mut scenario.cluster, &to_leader, "Ship to the leader");
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "Ship", &no_change);
}

/// Test 7. Ships to a follower, posing as its leader (any holder of the secret can),
/// whose data region disagrees with the envelope; and an ack with data beside it, to the
/// leader. Each is refused whole: the valid batch inside any of them is never appended.
#[test]
fn ship_whose_data_disagrees_with_its_envelope_is_refused() {
    let mut scenario = Scenario::start();
    let marks = quiet_high_watermarks(&mut scenario.cluster);
    let r = roles(&scenario.before, 0);
    let follower = r.followers[0];
    let end = marks[&r.partition];
    let (first, second) = (forged_batch(end, r.epoch), forged_batch(end + 1, r.epoch));
    let head = |batches_bytes: usize, batch_count: u32| Envelope {
        version: message::ENVELOPE_VERSION,
        partition: r.partition,
        from: r.leader,
        to: follower,
        message: Head::Ship(ShipHead {
            leader_epoch: r.epoch,
            prev_offset: end,
            prev_epoch: r.epoch,
            high_watermark: end + 1_000,
            batches_bytes: batches_bytes as u64,
            batch_count,
        }),
    };
    let mut flipped = first.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let both = [first.clone(), second].concat();
    let torn = &first[..first.len() - 1];
    let frames = vec![
        // Fewer bytes than announced: the envelope claims a byte the frame lacks.
        replicate_raw(head(first.len() + 1, 1), &first),
        // More bytes than announced.
        replicate_raw(head(first.len() - 1, 1), &first),
        // The announced length tears the batch.
        replicate_raw(head(torn.len(), 1), torn),
        // A bit flipped: the CRC.
        replicate_raw(head(flipped.len(), 1), &flipped),
        // Two whole batches announced as one.
        replicate_raw(head(both.len(), 1), &both),
    ];
    let to_follower = Forgery::new(&scenario.cluster, follower as usize, r.leader, frames, 0);
    let to_follower = to_follower.invalid(5);
    forge(
        &mut scenario.cluster,
        &to_follower,
        "lying ships to a follower",
    );
    let ack = Message::ShipAck(ShipAck {
        leader_epoch: r.epoch,
        incarnation: incarnation(&scenario.cluster, follower as usize),
        log_end: end,
        durable_end: end,
        resend: false,
    });
    let (envelope, _) = message::seal(r.partition, NodeId(follower), NodeId(r.leader), ack);
    let frames = vec![replicate_raw(envelope, &first)];
    let to_leader = Forgery::new(&scenario.cluster, r.leader as usize, follower, frames, 0);
    forge(
        &mut scenario.cluster,
        &to_leader.invalid(1),
        "an ack with data",
    );
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "lying ships", &no_change);
}

/// The meta of a `Replicate` frame of version 1: the envelope (with the batches inside
/// it) was the data region.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct ReplicateRequestV1 {
    topic: String,
    partition: u32,
}

/// Test 8. A `Replicate` frame of version 1 (a node of the previous release), posing as
/// the leader: refused with `UnsupportedVersion`, logged, never read as this version.
#[test]
fn replicate_frame_of_the_previous_version_is_refused() {
    let mut scenario = Scenario::start();
    let r = roles(&scenario.before, 0);
    let follower = r.followers[0];
    let note = format!("forging a version-1 frame ({})", correlation());
    scenario.cluster.note(follower as usize, &note);
    let meta = ReplicateRequestV1 {
        topic: TOPIC.to_owned(),
        partition: r.partition,
    };
    let frame = common::frame(Api::Replicate as u16, 1, correlation(), &meta, FORGED);
    let peer = scenario.cluster.peer_addr(follower as usize);
    let mut stream = handshake(&peer, follower as usize, r.leader);
    stream.write_all(&frame).unwrap();
    let (header, reply) = read_frame(&mut stream).expect("an error reply");
    assert_eq!(header.flags & FLAG_ERROR, FLAG_ERROR, "not an error reply");
    let error: ErrorResponse = decode_meta(&header, &reply).unwrap();
    assert_eq!(
        ErrorCode::from(error.error),
        ErrorCode::UnsupportedVersion,
        "{error:?}"
    );
    assert!(
        error.message.contains("Replicate version 1 (supported: 2)"),
        "{error:?}"
    );
    drop(stream);
    let target = follower as usize;
    scenario.cluster.wait_for(
        &format!("node {target} to log the version-1 frame"),
        WAIT_MAX,
        |c| {
            let lines = c.log_lines(target);
            let start = lines.iter().rposition(|l| l.contains(&note)).unwrap_or(0);
            if lines[start..].iter().any(|l| l.contains(ANOTHER_RELEASE)) {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    );
    let expected = state_of(&scenario.before);
    scenario.finish(&expected, "version 1", &no_change);
}
