//! `shardlog-bench`: placeholder until the engine workload lands in this change.
fn main() {}
