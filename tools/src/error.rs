//! `ToolError`: why a subcommand could not do its job. [`ToolError::exit_code`] is 1 for a
//! request the server refused or failed (unknown topic, topic exists, ...), 0 for a
//! closed stdout (the reader had enough: a normal end) and 2 for everything else (usage,
//! I/O, brokers unreachable). Problems found *in* the data (verify
//! findings, a repair left undone) and records that failed to produce are not errors: they
//! are reported and mapped to exit code 1 through [`crate::Outcome`].

use std::io;
use std::path::{Path, PathBuf};

use shardlog_engine::Offset;
use shardlog_net::client::ClientError;

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
    /// The brokers could not be reached (exit code 2).
    #[error("cannot connect to {brokers}: {source}")]
    Connect {
        /// The `--brokers` list.
        brokers: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A request failed: exit code 1 for an error reply, 2 if the connection failed.
    #[error("{what}: {source}")]
    Request {
        /// What was asked, e.g. `topic "orders"`.
        what: String,
        /// Why it failed.
        #[source]
        source: ClientError,
    },
    /// The brokers' state forbids what was asked (a group with members cannot have its
    /// offsets reset); nothing was changed (exit code 1).
    #[error("{0}")]
    Refused(String),
    /// Arguments that parse but do not fit together (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Another process (a running `shardlogd`, another repair or import) holds the data
    /// directory this command would change; nothing was changed (exit code 2).
    #[error("{0}")]
    DirectoryInUse(#[source] shardlog_engine::Error),
    /// The reader of stdout went away (`| head`): a normal end, exit code 0, nothing
    /// printed (see `output.rs`).
    #[error("stdout closed")]
    StdoutClosed,
}

impl ToolError {
    /// The process exit code for this error: 1 for a request the server answered with an
    /// error, 2 for everything else.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            ToolError::StdoutClosed => 0,
            ToolError::Refused(_) => 1,
            ToolError::Request { source, .. } if !is_connection_error(source) => 1,
            _ => 2,
        }
    }

    /// A failed write to stdout: [`ToolError::StdoutClosed`] when its reader went away,
    /// an I/O error on `stdout` otherwise (never blamed on a data file).
    #[must_use]
    pub fn stdout(error: io::Error) -> ToolError {
        if error.kind() == io::ErrorKind::BrokenPipe {
            ToolError::StdoutClosed
        } else {
            ToolError::Io {
                path: PathBuf::from("stdout"),
                source: error,
            }
        }
    }

    /// A failed request about `what`.
    pub fn request(what: impl Into<String>) -> impl FnOnce(ClientError) -> ToolError {
        let what = what.into();
        move |source| ToolError::Request { what, source }
    }

    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ToolError {
        let path = path.as_ref().to_path_buf();
        move |source| ToolError::Io { path, source }
    }
}

/// Whether a client error means the brokers could not be reached (rather than an answer).
#[must_use]
pub fn is_connection_error(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Io(_) | ClientError::NoBroker(_) | ClientError::Tls { .. }
    )
}
