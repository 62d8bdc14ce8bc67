//! The front ends: each decodes its wire format, calls the operations (`server::ops`)
//! and encodes their results. None of them routes, forwards or waits on its own.

pub(crate) mod shardlog;
