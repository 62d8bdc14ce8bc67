//! Replication latency, leader side: when a leader ships batches to a follower, the end
//! offset of the ship and the time are noted; the follower's acknowledgement of a log end
//! at or past it records the time since as one sample. At most `SHIPS_TRACKED` ships are
//! outstanding per partition (older ones are forgotten: a follower that fell that far
//! behind is counted by the lag gauges instead), in a ring allocated once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Instant;

use shardlog_replicator::message::Batches;

use super::Latency;

/// Ships remembered per partition.
const SHIPS_TRACKED: usize = 64;

/// One partition's outstanding ships.
#[derive(Debug)]
pub(crate) struct ShipTimes {
    /// (follower, offset after the ship's last record, when shipped), oldest first.
    sent: RefCell<VecDeque<(u32, u64, Instant)>>,
}

impl Default for ShipTimes {
    fn default() -> Self {
        ShipTimes {
            sent: RefCell::new(VecDeque::with_capacity(SHIPS_TRACKED)),
        }
    }
}

impl ShipTimes {
    /// Batches were shipped to `follower`.
    pub(crate) fn shipped(&self, follower: u32, batches: &Batches) {
        let Some(end) = batches.end_offset() else {
            return;
        };
        let end = end.0;
        let mut sent = self.sent.borrow_mut();
        if sent.len() == SHIPS_TRACKED {
            sent.pop_front();
        }
        sent.push_back((follower, end, Instant::now()));
    }

    /// `follower` acknowledged its log ending at `log_end`.
    pub(crate) fn acked(&self, follower: u32, log_end: u64) {
        let now = Instant::now();
        self.sent.borrow_mut().retain(|(to, end, at)| {
            let covered = *to == follower && *end <= log_end;
            if covered {
                super::latency(Latency::Replication, now.saturating_duration_since(*at));
            }
            !covered
        });
    }
}
