//! The front ends: each decodes its wire format, calls the operations (`server::ops`)
//! and encodes their results. None of them routes, forwards or waits on its own. The
//! client front ends (shardlog, Kafka) share the accept loop (`listener`), the node's
//! connection limits (`limits`), the per-connection reply budget (`reply_budget`) and
//! the idle timeout (`idle`).

pub(crate) mod idle;
pub(crate) mod kafka;
pub(crate) mod limits;
pub(crate) mod listener;
pub(crate) mod reply_budget;
pub(crate) mod shardlog;
