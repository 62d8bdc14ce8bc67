//! The metrics registry: counters and latency histograms that live per shard, in a
//! thread-local of the shard's thread (a shard is one thread), so recording is a `Cell`
//! add or a `RefCell` histogram record: no atomic, no lock, no allocation on the hot
//! path. The admin listener gathers a [`Snapshot`] from every shard at scrape time (a
//! message to each shard's inbox, answered on that shard's thread) and sums them.
//!
//! Recording API, for any code running on a shard:
//!
//! ```ignore
//! metrics::request(Protocol::Kafka, Api::Produce, records, bytes);
//! metrics::latency(Latency::Produce, started.elapsed());
//! metrics::count(Counter::LeadershipChanges);
//! ```
//!
//! A new counter is a variant of [`Counter`] (with its name and help in `Counter::ALL`);
//! a new histogram a variant of [`Latency`]. Code outside a shard thread (tests, the
//! main thread) records into that thread's own registry, which nobody gathers.

pub(crate) mod histogram;
mod replication;

use std::cell::{Cell, RefCell};
use std::time::Duration;

pub(crate) use histogram::LatencyHistogram;
pub(crate) use replication::ShipTimes;

/// The client protocol a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Shardlog,
    Kafka,
}

impl Protocol {
    pub(crate) const ALL: [Protocol; 2] = [Protocol::Shardlog, Protocol::Kafka];

    /// Its `protocol` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Protocol::Shardlog => "shardlog",
            Protocol::Kafka => "kafka",
        }
    }
}

/// The api of a client request, as counted (both protocols map theirs onto these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Produce,
    Fetch,
    ListOffsets,
    Metadata,
    /// Topic creation, deletion and description.
    TopicAdmin,
    /// Group coordination: find coordinator, join, sync, heartbeat, leave, offsets.
    Groups,
    InitProducerId,
    /// Everything else (api versions, handshakes).
    Other,
}

impl Api {
    pub(crate) const ALL: [Api; 8] = [
        Api::Produce,
        Api::Fetch,
        Api::ListOffsets,
        Api::Metadata,
        Api::TopicAdmin,
        Api::Groups,
        Api::InitProducerId,
        Api::Other,
    ];

    /// Its `api` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Api::Produce => "produce",
            Api::Fetch => "fetch",
            Api::ListOffsets => "list_offsets",
            Api::Metadata => "metadata",
            Api::TopicAdmin => "topic_admin",
            Api::Groups => "groups",
            Api::InitProducerId => "init_producer_id",
            Api::Other => "other",
        }
    }
}

/// Plain counters of a shard (summed over shards when scraped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    /// An ISR this node's leader replica had lost a member.
    IsrShrinks,
    /// An ISR this node's leader replica had gained a member.
    IsrExpands,
    /// A replica on this node became its partition's leader, or stopped being it.
    LeadershipChanges,
    /// Client connections accepted (both protocols).
    ConnectionsAccepted,
    /// Client connections refused at the connection limit.
    ConnectionsRefused,
    /// Client connections handed to the shard that owns the partitions they use.
    ConnectionsMoved,
    /// Peer links handed to the shard their dialer asked for (`BindShard`).
    PeerLinksMoved,
    /// Replication frames that arrived on a shard other than their partition's.
    ReplicateForwarded,
    /// Client connections closed because their TLS handshake failed or timed out.
    TlsHandshakesFailed,
    /// Admin HTTP requests answered.
    AdminRequests,
    /// A partition leader change this node's controller voter applied.
    LeaderChanges,
    /// A node fence this node's controller voter applied.
    NodeFences,
    /// A controller leader (or term) change this node's voter saw.
    ControllerLeaderChanges,
}

impl Counter {
    /// Every counter with its metric name and help text.
    pub(crate) const ALL: [(Counter, &'static str, &'static str); 13] = [
        (
            Counter::IsrShrinks,
            "shardlog_isr_shrinks_total",
            "Members dropped from the ISR of partitions this node leads.",
        ),
        (
            Counter::IsrExpands,
            "shardlog_isr_expands_total",
            "Members added to the ISR of partitions this node leads.",
        ),
        (
            Counter::LeadershipChanges,
            "shardlog_leadership_changes_total",
            "Times a replica on this node became or stopped being its partition's leader.",
        ),
        (
            Counter::ConnectionsAccepted,
            "shardlog_connections_accepted_total",
            "Client connections accepted (shardlog and Kafka protocols).",
        ),
        (
            Counter::ConnectionsRefused,
            "shardlog_connections_refused_total",
            "Client connections closed at once because the node had --max-connections open.",
        ),
        (
            Counter::ConnectionsMoved,
            "shardlog_connections_moved_total",
            "Client connections handed to the shard that owns the partitions their requests \
             name (shardlog protocol, without TLS).",
        ),
        (
            Counter::PeerLinksMoved,
            "shardlog_peer_links_moved_total",
            "Links from peer nodes handed to the shard of the dialing shard's number, where \
             the same partitions live (links without TLS).",
        ),
        (
            Counter::ReplicateForwarded,
            "shardlog_replication_messages_forwarded_total",
            "Replication messages that arrived on a shard other than their partition's and \
             crossed to it (a link over TLS, or between nodes of different shard counts).",
        ),
        (
            Counter::TlsHandshakesFailed,
            "shardlog_tls_handshakes_failed_total",
            "Client connections closed because their TLS handshake failed or timed out.",
        ),
        (
            Counter::AdminRequests,
            "shardlog_admin_requests_total",
            "Requests answered by the admin HTTP listener.",
        ),
        (
            Counter::LeaderChanges,
            "shardlog_leader_changes_total",
            "Partition leader changes the controller applied, as this node's voter applied \
             them (every voter counts the same changes; a new topic's first leaders count, \
             and a restarted node counts its log again as it replays it).",
        ),
        (
            Counter::NodeFences,
            "shardlog_node_fences_total",
            "Nodes fenced for a missed session (or a newer run), as this node's voter \
             applied the fences (every voter counts the same ones).",
        ),
        (
            Counter::ControllerLeaderChanges,
            "shardlog_controller_leader_changes_total",
            "Controller leader or Raft term changes this node's voter saw (its first \
             leader after a start counts).",
        ),
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Latency histograms of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Latency {
    /// A produce request's partition operation, from decode to answer (acks included).
    Produce,
    /// A fetch request's partition read, from decode to answer (long polls included).
    Fetch,
    /// From a leader shipping records to a follower to the follower's acknowledgement.
    Replication,
    /// One fdatasync of a segment file.
    Fdatasync,
    /// One flush's O_DSYNC writes of a segment file (`flush=always`).
    DurableWrites,
    /// On the controller leader: from a node's heartbeat to its next one.
    HeartbeatGap,
    /// A stall of shard 0 left out of the controller's clock.
    ControllerStall,
}

impl Latency {
    /// Every histogram with its metric name and help text.
    pub(crate) const ALL: [(Latency, &'static str, &'static str); 7] = [
        (
            Latency::Produce,
            "shardlog_produce_latency_seconds",
            "Produce requests' partition operations, from decode to answer (acks included).",
        ),
        (
            Latency::Fetch,
            "shardlog_fetch_latency_seconds",
            "Fetch requests' partition reads, from decode to answer (long polls included).",
        ),
        (
            Latency::Replication,
            "shardlog_replication_latency_seconds",
            "Leader side: from shipping records to a follower to its acknowledgement of them.",
        ),
        (
            Latency::Fdatasync,
            "shardlog_fdatasync_latency_seconds",
            "One fdatasync of a segment file.",
        ),
        (
            Latency::DurableWrites,
            "shardlog_durable_write_latency_seconds",
            "Under flush=always: one flush's O_DSYNC writes of a segment file, durable when \
             they complete (no fdatasync follows them).",
        ),
        (
            Latency::HeartbeatGap,
            "shardlog_heartbeat_gap_seconds",
            "On the controller leader: from a node's heartbeat to its next one, as received \
             (a gap longer than the session timeout fences the node).",
        ),
        (
            Latency::ControllerStall,
            "shardlog_controller_stall_seconds",
            "Each time shard 0 ran the controller's timers late (CPU starvation, a task that \
             did not yield): the lateness past 20 ms, left out of the controller's clock, so \
             it counts neither towards sessions nor towards Raft election timeouts.",
        ),
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests, records and bytes of one api on one protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ApiCounts {
    pub(crate) requests: u64,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

impl ApiCounts {
    fn add(&mut self, other: &ApiCounts) {
        self.requests += other.requests;
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

const APIS: usize = Api::ALL.len();
const PROTOCOLS: usize = Protocol::ALL.len();
const COUNTERS: usize = Counter::ALL.len();
const LATENCIES: usize = Latency::ALL.len();

/// One shard's registry (in a thread-local: see the module's doc).
struct Registry {
    apis: [[Cell<ApiCounts>; APIS]; PROTOCOLS],
    counters: [Cell<u64>; COUNTERS],
    latencies: RefCell<Option<[LatencyHistogram; LATENCIES]>>,
}

thread_local! {
    static REGISTRY: Registry = const {
        Registry {
            apis: [const { [const { Cell::new(ApiCounts { requests: 0, records: 0, bytes: 0 }) }; APIS] }; PROTOCOLS],
            counters: [const { Cell::new(0) }; COUNTERS],
            latencies: RefCell::new(None),
        }
    };
}

/// Counts one request of `api` on `protocol`, carrying `records` records in `bytes` bytes
/// (produced, or fetched for a fetch).
pub(crate) fn request(protocol: Protocol, api: Api, records: u64, bytes: u64) {
    REGISTRY.with(|r| {
        let cell = &r.apis[protocol as usize][api as usize];
        let mut counts = cell.get();
        counts.requests += 1;
        counts.records += records;
        counts.bytes += bytes;
        cell.set(counts);
    });
}

/// Adds records and bytes to `api` on `protocol` without counting a request (a request
/// whose records are known only once it is answered).
pub(crate) fn records(protocol: Protocol, api: Api, records: u64, bytes: u64) {
    REGISTRY.with(|r| {
        let cell = &r.apis[protocol as usize][api as usize];
        let mut counts = cell.get();
        counts.records += records;
        counts.bytes += bytes;
        cell.set(counts);
    });
}

/// Records of a Kafka v2 record batch, from its header (0 if it has none).
pub(crate) fn batch_records(batch: &[u8]) -> u64 {
    shardlog_engine::batch::BatchHeader::parse(batch).map_or(0, |h| u64::from(h.record_count))
}

/// Adds one to `counter`.
pub(crate) fn count(counter: Counter) {
    count_n(counter, 1);
}

/// Adds `n` to `counter`.
pub(crate) fn count_n(counter: Counter, n: u64) {
    REGISTRY.with(|r| {
        let cell = &r.counters[counter.index()];
        cell.set(cell.get().wrapping_add(n));
    });
}

/// Records one sample of `latency`.
pub(crate) fn latency(latency: Latency, took: Duration) {
    REGISTRY.with(|r| {
        // Created on the first sample (histograms allocate their buckets once).
        let mut latencies = r.latencies.borrow_mut();
        let histograms =
            latencies.get_or_insert_with(|| std::array::from_fn(|_| LatencyHistogram::new()));
        histograms[latency.index()].record(took);
    });
}

/// What one shard's registry holds, to send to the scraping shard.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) apis: [[ApiCounts; APIS]; PROTOCOLS],
    pub(crate) counters: [u64; COUNTERS],
    pub(crate) latencies: [LatencyHistogram; LATENCIES],
}

impl Snapshot {
    /// Nothing counted.
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            apis: [[ApiCounts::default(); APIS]; PROTOCOLS],
            counters: [0; COUNTERS],
            latencies: std::array::from_fn(|_| LatencyHistogram::new()),
        }
    }

    /// This thread's registry as it is now.
    pub(crate) fn take() -> Snapshot {
        REGISTRY.with(|r| Snapshot {
            apis: std::array::from_fn(|p| std::array::from_fn(|a| r.apis[p][a].get())),
            counters: std::array::from_fn(|c| r.counters[c].get()),
            latencies: r
                .latencies
                .borrow()
                .clone()
                .unwrap_or_else(|| std::array::from_fn(|_| LatencyHistogram::new())),
        })
    }

    /// Adds another shard's snapshot to this one.
    pub(crate) fn add(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.apis.iter_mut().zip(&other.apis) {
            for (mine, theirs) in mine.iter_mut().zip(theirs) {
                mine.add(theirs);
            }
        }
        for (mine, theirs) in self.counters.iter_mut().zip(&other.counters) {
            *mine = mine.wrapping_add(*theirs);
        }
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            mine.add(theirs);
        }
    }

    /// The counts of `api` on `protocol`.
    pub(crate) fn api(&self, protocol: Protocol, api: Api) -> ApiCounts {
        self.apis[protocol as usize][api as usize]
    }

    /// The value of `counter`.
    pub(crate) fn counter(&self, counter: Counter) -> u64 {
        self.counters[counter.index()]
    }

    /// The histogram of `latency`.
    pub(crate) fn latency(&self, latency: Latency) -> &LatencyHistogram {
        &self.latencies[latency.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_show_in_a_snapshot_and_sum_over_shards() {
        // Each test runs on its own thread: a fresh registry.
        request(Protocol::Kafka, Api::Produce, 10, 1000);
        request(Protocol::Kafka, Api::Produce, 5, 500);
        records(Protocol::Shardlog, Api::Fetch, 3, 30);
        count(Counter::IsrShrinks);
        count_n(Counter::LeadershipChanges, 2);
        latency(Latency::Produce, Duration::from_millis(3));
        let one = Snapshot::take();
        let expected = ApiCounts {
            requests: 2,
            records: 15,
            bytes: 1500,
        };
        assert_eq!(one.api(Protocol::Kafka, Api::Produce), expected);
        assert_eq!(one.api(Protocol::Shardlog, Api::Fetch).records, 3);
        assert_eq!(one.api(Protocol::Shardlog, Api::Fetch).requests, 0);
        assert_eq!(one.counter(Counter::IsrShrinks), 1);
        assert_eq!(one.counter(Counter::LeadershipChanges), 2);
        assert_eq!(one.latency(Latency::Produce).count(), 1);
        let mut sum = Snapshot::empty();
        sum.add(&one);
        sum.add(&one);
        assert_eq!(sum.api(Protocol::Kafka, Api::Produce).records, 30);
        assert_eq!(sum.counter(Counter::LeadershipChanges), 4);
        assert_eq!(sum.latency(Latency::Produce).count(), 2);
        assert_eq!(sum.latency(Latency::Fetch).count(), 0);
    }
}
