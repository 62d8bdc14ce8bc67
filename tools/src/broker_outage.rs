//! How a command that runs until told to stop (`consume --follow`) rides out brokers that
//! do not answer: it waits and tries again, with a growing pause, instead of exiting, and
//! says so on stderr without flooding it (a line when the trouble starts, then at most
//! one every [`REPORT_EVERY`], and one when the brokers answer again).

use std::time::{Duration, Instant};

use crate::error::{ToolError, is_connection_error};

/// First pause after a failure; doubled on each failure in a row.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause between tries.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Least time between two reports of the same outage.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Whether `error` means no broker answered (as opposed to an answer that refused).
#[must_use]
pub fn no_broker_answers(error: &ToolError) -> bool {
    match error {
        ToolError::Connect { source, .. } | ToolError::Request { source, .. } => {
            // A TLS failure (an untrusted certificate, say) answers the same way each time.
            (is_connection_error(source)
                && !matches!(source, shardlog_net::client::ClientError::Tls { .. }))
                || matches!(source, shardlog_net::client::ClientError::Timeout)
        }
        _ => false,
    }
}

/// The state of an outage, if one is under way.
#[derive(Debug, Default)]
pub struct BrokerOutage {
    /// When the failures in a row began.
    since: Option<Instant>,
    /// The pause before the next try.
    backoff: Duration,
    /// When the outage was last reported.
    reported: Option<Instant>,
}

impl BrokerOutage {
    /// Records a failure of `what`; returns the pause before trying again.
    pub fn failed(&mut self, what: &str, error: &ToolError) -> Duration {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        self.backoff = if self.backoff.is_zero() {
            BACKOFF_MIN
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
        if self
            .reported
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            self.reported = Some(now);
            let lasted = now.duration_since(since).as_secs_f64();
            let how_long = if lasted < 1.0 {
                String::new()
            } else {
                format!(" for {lasted:.0} s")
            };
            eprintln!(
                "shardlog: {what}: no broker answers{how_long} ({error}); trying again \
                 until one does, --count is reached, SIGINT/SIGTERM or stdout closes"
            );
        }
        self.backoff
    }

    /// Records a success; reports the end of an outage.
    pub fn answered(&mut self) {
        if let Some(since) = self.since.take() {
            eprintln!(
                "shardlog: the brokers answer again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
        self.backoff = Duration::ZERO;
        self.reported = None;
    }
}
