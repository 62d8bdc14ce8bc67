//! `shardlog`: the operator CLI (placeholder until the tools land in this change).
fn main() {}
