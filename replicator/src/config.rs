//! Per-partition replication settings: a plain struct with defaults and one `validate()`.

/// Replication settings of one partition replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// A follower that has not caught up with the leader's log end for this long leaves
    /// the ISR. Default 10 000 ms (Kafka's `replica.lag.time.max.ms` is 30 s); 1..=3 600 000.
    pub replica_lag_ms: u64,
    /// The high watermark does not advance, and `acks=all` is refused, while the ISR has
    /// fewer members than this (Kafka's `min.insync.replicas`, KIP-966). Default 1; >= 1.
    pub min_insync: usize,
    /// Resend a ship, an epoch query or an ISR proposal not answered within this. Default
    /// 200 ms; 1..=60 000.
    pub retry_ms: u64,
    /// The leader ships at least this often to each follower, empty if there is nothing
    /// new, so followers learn the high watermark. Default 50 ms; 1..=60 000.
    pub heartbeat_ms: u64,
    /// Ships a follower may have outstanding (pipelining). Default 16; 1..=1024.
    pub ships_inflight_max: u32,
    /// A produce request waiting for the high watermark longer than this is answered
    /// `Timeout`. Default 30 000 ms; >= 1.
    pub request_timeout_ms: u64,
    /// Produce requests waiting for acknowledgement at once. Default 65 536; >= 1.
    pub waiters_max: usize,
    /// The driver reports as durable what the log's flush policy acknowledges (written,
    /// under `never`) instead of only what is synced. For logs that never sync on their
    /// own: `acks=all` then means "in every ISR member's log", as with Redpanda's write
    /// caching. Default false.
    pub durable_when_acked: bool,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            replica_lag_ms: 10_000,
            min_insync: 1,
            retry_ms: 200,
            heartbeat_ms: 50,
            ships_inflight_max: 16,
            request_timeout_ms: 30_000,
            waiters_max: 65_536,
            durable_when_acked: false,
        }
    }
}

/// The setting of [`ReplicaConfig`] that is out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replica config field {field} = {value} out of bounds")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
}

impl ReplicaConfig {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, u64, u64); 6] = [
            ("replica_lag_ms", self.replica_lag_ms, 1, 3_600_000),
            ("min_insync", self.min_insync as u64, 1, u64::MAX),
            ("retry_ms", self.retry_ms, 1, 60_000),
            ("heartbeat_ms", self.heartbeat_ms, 1, 60_000),
            (
                "ships_inflight_max",
                u64::from(self.ships_inflight_max),
                1,
                1024,
            ),
            ("request_timeout_ms", self.request_timeout_ms, 1, u64::MAX),
        ];
        for (field, value, low, high) in checks {
            if value < low || value > high {
                return Err(ConfigError { field, value });
            }
        }
        if self.waiters_max == 0 {
            return Err(ConfigError {
                field: "waiters_max",
                value: 0,
            });
        }
        Ok(())
    }
}
