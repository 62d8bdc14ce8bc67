//! Consumer groups, server side (the classic Kafka group protocol).
//!
//! ```text
//!  ops::groups (routing) --> the coordinator's shard: ShardGroups (coordinator.rs)
//!     per offsets partition led here: loading (loading.rs) | loaded: Group (group.rs)
//!     commits and snapshots --> ops::produce(acks=all) --> __consumer_offsets
//! ```
//!
//! - `group`: one group's state machine (Empty, PreparingRebalance, CompletingRebalance,
//!   Stable, Dead), sans-IO: explicit inputs and a clock, answers as outputs.
//! - `record`: the format of `__consumer_offsets` records (versioned, documented there).
//! - `offsets_topic`: the internal topic, created by the controller on first use.
//! - `loading`: rebuilding a partition's committed offsets when this node becomes its
//!   leader, from the newest snapshot up to the high watermark.
//! - `coordinator`: the shard's coordinators: the groups of each offsets partition this
//!   shard leads, their waiting joins and syncs, the timers, commits and snapshots.
//!
//! A group's coordinator is the leader of partition `crc32c(group) % partitions` of
//! `__consumer_offsets`; the shard owning that partition holds the group, so no lock
//! is taken.

pub(crate) mod coordinator;
pub(crate) mod group;
pub(crate) mod loading;
pub(crate) mod offsets_topic;
pub(crate) mod record;

pub(crate) use coordinator::ShardGroups;

/// The internal topic holding committed offsets.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The longest group id accepted (Kafka sets none; ours bounds memory and records).
pub(crate) const GROUP_ID_BYTES_MAX: usize = 1024;

/// The longest commit metadata accepted (Kafka's `offset.metadata.max.bytes` default).
pub(crate) const METADATA_BYTES_MAX: usize = 4096;

/// The offsets partition of a group: `crc32c(group id) % partitions`.
#[must_use]
pub(crate) fn offsets_partition(group_id: &str, partitions: u32) -> u32 {
    crc32c::crc32c(group_id.as_bytes()) % partitions.max(1)
}

/// Refuses an empty or over-long group id.
pub(crate) fn check_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() || group_id.len() > GROUP_ID_BYTES_MAX {
        return Err(GroupError::InvalidGroupId);
    }
    Ok(())
}

/// Settings of the group coordinator (`shardlogd` flags and config keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Partitions of `__consumer_offsets`, used when it is created (default 16).
    pub offsets_partitions: u32,
    /// `segment.bytes` of `__consumer_offsets` (default 1 MiB: each partition's active
    /// segment preallocates at most this much).
    pub offsets_segment_bytes: u64,
    /// A snapshot of a partition's offsets after this many commit records (default 1000).
    pub snapshot_every_commits: u64,
    /// ... or after this long with any commit since the last one (default 10 min).
    pub snapshot_every_ms: u64,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`, default 3000).
    pub initial_rebalance_delay_ms: u64,
    /// Session timeouts accepted (Kafka's `group.min/max.session.timeout.ms`; default
    /// 1000..=1800000).
    pub session_timeout_ms_min: u32,
    /// See `session_timeout_ms_min`.
    pub session_timeout_ms_max: u32,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            offsets_partitions: 16,
            offsets_segment_bytes: 1 << 20,
            snapshot_every_commits: 1000,
            snapshot_every_ms: 600_000,
            initial_rebalance_delay_ms: 3000,
            session_timeout_ms_min: 1000,
            session_timeout_ms_max: 1_800_000,
        }
    }
}

impl GroupConfig {
    /// Checks the bounds; names the field that breaks one.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.offsets_partitions) {
            return Err("offsets_partitions must be in 1..=1000".into());
        }
        if !(4096..=1 << 30).contains(&self.offsets_segment_bytes) {
            return Err("offsets_segment_bytes must be in 4096..=1 GiB".into());
        }
        if self.snapshot_every_commits == 0 {
            return Err("group_snapshot_every_commits must be at least 1".into());
        }
        if self.session_timeout_ms_min > self.session_timeout_ms_max {
            return Err("group session timeout min is above its max".into());
        }
        Ok(())
    }
}

/// Why a group operation was refused; each front end maps these to its codes (the Kafka
/// names are given).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GroupError {
    /// NOT_COORDINATOR: another node coordinates the group (`coordinator`, if known).
    #[error("this node is not the group's coordinator")]
    NotCoordinator {
        /// The node leading the group's offsets partition, if known.
        coordinator: Option<u32>,
    },
    /// COORDINATOR_LOAD_IN_PROGRESS: this node is rebuilding the group's offsets.
    #[error("the coordinator is loading the group's offsets")]
    CoordinatorLoadInProgress,
    /// COORDINATOR_NOT_AVAILABLE: the offsets partition has no leader (yet).
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// ILLEGAL_GENERATION: the member's generation is not the group's.
    #[error("generation {got} is not the group's ({current})")]
    IllegalGeneration {
        /// The request's.
        got: i32,
        /// The group's.
        current: i32,
    },
    /// UNKNOWN_MEMBER_ID: not a member (never joined, left, or removed).
    #[error("unknown member id")]
    UnknownMemberId,
    /// REBALANCE_IN_PROGRESS: the member must join again.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// MEMBER_ID_REQUIRED (JoinGroup v4+): join again with this member id.
    #[error("join again with member id {0}")]
    MemberIdRequired(String),
    /// INCONSISTENT_GROUP_PROTOCOL: no protocol in common, or another protocol type.
    #[error("the member's protocols do not match the group's")]
    InconsistentGroupProtocol,
    /// INVALID_SESSION_TIMEOUT.
    #[error("session timeout {0} ms is outside the accepted range")]
    InvalidSessionTimeout(u32),
    /// INVALID_GROUP_ID.
    #[error("invalid group id")]
    InvalidGroupId,
    /// OFFSET_METADATA_TOO_LARGE.
    #[error("commit metadata over {METADATA_BYTES_MAX} bytes")]
    OffsetMetadataTooLarge,
    /// Static membership (`group.instance.id`) is not supported: Kafka's
    /// UNSUPPORTED_VERSION.
    #[error("static membership (group.instance.id) is not supported")]
    StaticMembershipUnsupported,
    /// A request broke a rule (the message says which): INVALID_REQUEST.
    #[error("{0}")]
    InvalidRequest(String),
    /// Writing the commit failed (NOT_ENOUGH_REPLICAS, timeout, storage): the text
    /// says why; retriable.
    #[error("commit not written: {0}")]
    CommitFailed(String),
    /// UNKNOWN_SERVER_ERROR.
    #[error("{0}")]
    Unknown(String),
}
