//! Logs of the binaries (`shardlogd`, `shardlog`, `shardlog-bench`): tracing's fmt output on
//! stderr, filtered by `RUST_LOG` (else the binary's default level). Colours (ANSI escape
//! codes) only when stderr is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>): logs piped to a file, `journald` or a test harness carry no
//! escape codes. tracing-subscriber colours unconditionally unless told.

use std::ffi::OsStr;
use std::io::IsTerminal;

/// Installs the stderr logger; `default_filter` applies when `RUST_LOG` is unset or bad.
pub fn init_stderr(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let colour = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

/// Whether to colour: on a terminal, unless `NO_COLOR` holds anything.
#[must_use]
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new(""))));
    }
}
