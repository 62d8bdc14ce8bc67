//! Logs of the binaries (`shardlogd`, `shardlog`, `shardlog-bench`) on stderr, filtered by
//! `RUST_LOG` (else the binary's default level).
//!
//! Two formats (`shardlogd --log-format`, config key `log_format`): `text`, tracing's fmt
//! output (the default, and the only one of the CLI and the bench), and `json`, one object
//! per line with stable field names ([`json`]). In both, `shardlogd`'s fields come from
//! tracing fields and spans, not from the message text: each shard's thread runs inside a
//! `shard` span carrying `node` and `shard`, and partition events name `topic`,
//! `partition`, `epoch`, `offset` and `peer` as fields.
//!
//! Text colours (ANSI escape codes) only when stderr is a terminal and `NO_COLOR` is unset
//! or empty (<https://no-color.org>): logs piped to a file, `journald` or a test harness
//! carry no escape codes. tracing-subscriber colours unconditionally unless told.

pub mod json;

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The format of the log lines on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// tracing's human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line ([`json`]).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log_format {other:?}: text or json")),
        }
    }
}

/// The format installed by [`init`], for lines written outside tracing (the ready line).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the stderr logger in `format`; `default_filter` applies when `RUST_LOG` is
/// unset or bad. The first call wins; later ones do nothing.
pub fn init(format: LogFormat, default_filter: &str) {
    if FORMAT.set(format).is_err() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    match format {
        LogFormat::Text => {
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
        LogFormat::Json => {
            tracing_subscriber::registry()
                .with(filter)
                .with(json::JsonLayer)
                .init();
            // A panic's report is a log line too, else it breaks the one-object-per-line
            // stream (release builds abort right after the hook).
            std::panic::set_hook(Box::new(|info| {
                let thread = std::thread::current();
                tracing::error!(
                    thread = thread.name().unwrap_or("?"),
                    panic = %info,
                    "panicked"
                );
            }));
        }
    }
}

/// Installs the text logger (the CLI and the bench).
pub fn init_stderr(default_filter: &str) {
    init(LogFormat::Text, default_filter);
}

/// Writes a line scripts wait for, `{prefix}{address}` (e.g. the ready line), whatever
/// `RUST_LOG` filters. In text: exactly that line. In JSON: a line whose `msg` is exactly
/// that text, with the address also as field `listen` (and this `node`).
pub fn announce(prefix: &str, address: &str, node: u32) {
    let text = format!("{prefix}{address}");
    match FORMAT.get() {
        Some(LogFormat::Json) => {
            let mut listen = String::new();
            json::push_json_string(&mut listen, address);
            let pairs = [("node", node.to_string()), ("listen", listen)];
            let line = json::line(SystemTime::now(), Level::INFO, "shardlogd", &text, &pairs);
            json::write_stderr(&line);
        }
        _ => eprintln!("{text}"),
    }
}

/// The address in a line [`announce`]d with `prefix`, in either format; `None` for any
/// other line.
#[must_use]
pub fn announced<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    if let Some(address) = line.strip_prefix(prefix) {
        return Some(address.trim());
    }
    if !line.starts_with('{') {
        return None;
    }
    // `msg` is the fourth member; its value is a JSON string with no escapes here (an
    // address has none), so the text up to the next quote is it.
    let after = line.split_once(&format!("\"msg\":\"{prefix}"))?.1;
    let address = after.split('"').next()?;
    (!address.contains('\\')).then_some(address.trim())
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

    #[test]
    fn formats_parse() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("JSON".parse::<LogFormat>().is_err());
    }

    #[test]
    fn announced_lines_are_found_in_both_formats() {
        let prefix = "shardlogd ready: listening on ";
        assert_eq!(
            announced("shardlogd ready: listening on 127.0.0.1:9 ", prefix),
            Some("127.0.0.1:9")
        );
        let pairs = [("node", "0".to_owned()), ("listen", "\"h:1\"".to_owned())];
        let line = json::line(
            SystemTime::now(),
            Level::INFO,
            "shardlogd",
            &format!("{prefix}h:1"),
            &pairs,
        );
        assert_eq!(announced(&line, prefix), Some("h:1"));
        assert_eq!(announced("{\"msg\":\"other\"}", prefix), None);
        assert_eq!(
            announced("INFO shardlogd ready: listening on x", prefix),
            None
        );
    }
}
