//! The deterministic simulation (feature `simulation`): several nodes, each running the
//! production parts (`node.rs`): a controller voter (raft-rs and the metadata, failover
//! and session rules net runs), and a replica run by the [`ReplicaDriver`](crate::driver::ReplicaDriver)
//! on the engine's `PartitionLog` over in-memory, crashable storage. Around them: a
//! network that drops, delays, duplicates, reorders and partitions (the replication and
//! the controller links), crashes that lose the unsynced suffix, restarts, idempotent
//! producers and a consumer, all in one thread and driven by one seed. Checkers
//! (`checker.rs`) run after every step. The same seed replays the same run, event for
//! event.

pub mod checker;
pub mod cluster;
pub mod network;
pub mod node;
pub mod rng;
pub mod storage;
pub mod workload;

pub use cluster::{Cluster, Failure, Report, SimConfig, run};
