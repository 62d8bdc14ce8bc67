//! The deterministic simulation (feature `simulation`): several nodes with the real
//! [`PartitionReplica`](crate::PartitionReplica)s and in-memory logs, a network that
//! drops, delays, duplicates, reorders and partitions, crashes that lose the unsynced
//! suffix, restarts, a scripted controller, idempotent producers and a consumer, all in
//! one thread and driven by one seed. Checkers (`checker.rs`) run after every step.
//! The same seed replays the same run, event for event.

pub mod checker;
pub mod cluster;
pub mod controller;
pub mod network;
pub mod rng;
pub mod storage;
pub mod workload;

pub use cluster::{Cluster, Failure, Report, SimConfig, run};
