//! Stdout for every subcommand. A reader that goes away (`shardlog stats DATA | head -1`)
//! is a normal end: a write to the closed pipe fails with `BrokenPipe` (Rust ignores
//! SIGPIPE), which becomes [`ToolError::StdoutClosed`], exit code 0 and no message, instead
//! of the panic `println!` would raise. [`outln!`] is `println!` with that mapping, to be
//! used with `?`.

use std::io::{self, Write};

use crate::error::ToolError;

/// Writes one line to stdout (flushed: stdout is line-buffered), mapping a closed stdout
/// to [`ToolError::StdoutClosed`].
pub fn line(text: std::fmt::Arguments<'_>) -> Result<(), ToolError> {
    let mut out = io::stdout().lock();
    out.write_fmt(text)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(ToolError::stdout)
}

/// `println!` that returns `Result<(), ToolError>` instead of panicking on a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

pub(crate) use outln;

/// Like [`line`], for a command that must finish its work even when nobody reads any more
/// (`repair --apply`: stopping between two steps would leave a half-done repair): once
/// stdout is closed, `closed` is set and later lines are dropped.
pub fn line_unless_closed(
    closed: &mut bool,
    text: std::fmt::Arguments<'_>,
) -> Result<(), ToolError> {
    if *closed {
        return Ok(());
    }
    match line(text) {
        Err(ToolError::StdoutClosed) => {
            *closed = true;
            Ok(())
        }
        other => other,
    }
}
