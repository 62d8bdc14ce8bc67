//! The thread-per-core server runtime (being written).
