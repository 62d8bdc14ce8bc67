//! Workloads `shardlog-bench` can run: the engine alone, and producers/consumers against a
//! running `shardlogd`.

pub mod consume;
pub mod e2e;
pub mod engine;
pub mod failover;
pub mod kafka_connection;
pub mod kafka_produce;
pub mod net_common;
pub mod produce;
pub mod progress;
