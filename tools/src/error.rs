//! `ToolError`: why a subcommand could not do its job (exit code 2). Problems found *in*
//! the data (verify findings, a repair left undone) are not errors: they are reported and
//! mapped to exit code 1 through [`crate::Outcome`].

use std::io;
use std::path::{Path, PathBuf};

use shardlog_engine::Offset;

/// Errors of the `shardlog` subcommands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// A file operation failed.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path given is not what the subcommand works on.
    #[error("{path}: {reason}")]
    BadPath {
        /// The path given.
        path: PathBuf,
        /// What was expected there.
        reason: &'static str,
    },
    /// Export met data it cannot turn into JSON lines losslessly.
    #[error("cannot export the batch at offset {offset}: {reason}")]
    Unexportable {
        /// Base offset of the batch.
        offset: Offset,
        /// Why (compression, attributes, damage).
        reason: String,
    },
    /// An import input line is not a record export wrote.
    #[error("input line {line}: {reason}")]
    BadInput {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine refused an operation during import.
    #[error("engine: {0}")]
    Engine(#[from] shardlog_engine::Error),
    /// The glommio executor could not start or panicked.
    #[error("executor: {0}")]
    Executor(String),
}

impl ToolError {
    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ToolError {
        let path = path.as_ref().to_path_buf();
        move |source| ToolError::Io { path, source }
    }
}
