//! Workloads `shardlog-bench` can run: the engine alone for now.

pub mod engine;
