//! shardlog's replication core: sans-IO state machines, driven by inputs, answering with
//! actions. No socket, file, clock or global randomness in here, so a seeded simulation
//! (`sim`, feature `simulation`) runs whole clusters of them in one thread.
//!
//! - Inputs ([`Input`]): controller decisions (`BecomeLeader`, `BecomeFollower`,
//!   `IsrUpdated`), `Produce`, the storage's `Appended` report, `Received` peer messages,
//!   and `Tick` (time is data: [`Tick`] in ms).
//! - Actions ([`Action`]): `Append`/`Truncate` on the log, `Send`/`Ship` to peers
//!   ([`message`], an rkyv envelope around the stored batch bytes), `Answer` to a
//!   producer, `ProposeIsr` to the controller.
//! - Invariants, asserted at the end of every step: `high_watermark <= log_end`,
//!   `durable_end <= log_end`; the high watermark never moves back and nothing below it
//!   is ever truncated; the high watermark is the smallest durable end over the ISR and
//!   does not advance while the ISR is below `min_insync`; a diverged follower truncates
//!   by leader epoch (KIP-101/279); a restarted replica rejoins the ISR only once caught
//!   up (KIP-903); an idempotent producer's retry is answered with its original offsets.
//!
//! See the README (replication) and DESIGN.md (Replication) for the tour.

pub mod config;
pub mod controller;
pub mod driver;
pub mod error;
pub mod follower;
pub mod ids;
pub mod isr;
pub mod leader;
pub mod leader_epoch;
pub mod local_log;
mod local_queue;
pub mod message;
pub mod producer_state;
pub mod quorum;
pub mod replica;
pub mod replica_snapshot;
#[cfg(feature = "simulation")]
pub mod sim;
pub mod throttle;

pub use config::{ConfigError, ReplicaConfig};
pub use error::{ProduceError, SnapshotError};
pub use ids::{Incarnation, NodeId, RequestId, Tick};
pub use message::{Envelope, Message};
pub use replica::{Acks, Action, Input, Member, PartitionReplica, Produced};
pub use replica_snapshot::ReplicaSnapshot;
