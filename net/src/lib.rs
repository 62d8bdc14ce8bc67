//! shardlog's network layer: the wire protocol (`frame`, `wire`, `api`, `error_code`), the
//! client library and the thread-per-core server behind `shardlogd`. See the README's
//! protocol section and DESIGN.md (Wire protocol, Threading model).

pub mod api;
pub mod client;
pub mod error_code;
pub mod frame;
pub mod local_split;
pub mod logging;
pub mod peer;
pub mod scram;
pub mod server;
pub mod testing;
pub mod tls_files;
pub mod wire;

pub use error_code::ErrorCode;
