//! `shardlogd`: placeholder until the server lands.
fn main() {}
