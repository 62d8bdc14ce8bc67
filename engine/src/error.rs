//! `engine::Error`: what went wrong, named for what the caller does next.

use std::io;
use std::path::PathBuf;

use crate::batch::Corruption;
use crate::ids::{Offset, SegmentId};

/// Errors of the partition log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A read asked for an offset the log does not hold.
    #[error("offset {offset} outside [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: Offset,
        /// First offset held.
        log_start: Offset,
        /// Next offset to be assigned.
        log_end: Offset,
    },
    /// Stored data failed its checks on read or on open.
    #[error("corrupt batch in segment {segment} at byte {position}: {reason}")]
    CorruptBatch {
        /// The segment holding the bad bytes.
        segment: SegmentId,
        /// Byte position of the bad batch in the segment file.
        position: u64,
        /// What is wrong.
        reason: Corruption,
    },
    /// A batch handed to `append` is malformed; nothing was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(Corruption),
    /// A replicated batch does not continue the log.
    #[error("batch at offset {found} does not continue the log at {log_end}")]
    NotContiguous {
        /// The log's next offset.
        log_end: Offset,
        /// The batch's base offset.
        found: Offset,
    },
    /// A file operation failed.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A write or fdatasync of the log failed. The log refuses all further work: the kernel
    /// may have dropped the dirty state, so a retry could falsely succeed. The process must
    /// stop and recover from disk.
    #[error("log write or sync failed on {path}; the log is stopped: {source}")]
    SyncFailed {
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or sync failed (see [`Error::SyncFailed`]).
    #[error("the log is stopped after a failed write or sync")]
    Stopped,
    /// A configuration value is out of its bounds.
    #[error("config field {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its bounds.
        reason: &'static str,
    },
    /// Another process holds the data directory's lock (`dir_lock.rs`); nothing was
    /// changed.
    #[error(
        "data directory {} is in use by {} (it holds {}); stop that process first, \
         or use another directory",
        .dir.display(),
        crate::dir_lock::Holder(*.holder),
        .dir.join(crate::dir_lock::LOCK_FILE).display()
    )]
    DirectoryLocked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, when the lock file names one.
        holder: Option<u32>,
    },
    /// The machine cannot run the engine; `fix` says what to change.
    #[error("{check} failed: {detail}. Fix: {fix}")]
    Preflight {
        /// The check.
        check: &'static str,
        /// What was seen.
        detail: String,
        /// What to do.
        fix: &'static str,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Result of engine calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
