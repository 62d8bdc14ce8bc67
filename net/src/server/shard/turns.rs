//! Ending a shard's turn after many requests, so that the writes and replies of the first
//! go out while the rest are read.
//!
//! glommio runs a shard's tasks until none is runnable or its task quota (100 ms by
//! default) expires, and only then polls its rings, which submits the I/O the tasks
//! queued. Under many small pipelined requests a shard read every request its sockets
//! held before the log's write of the first went out; the replies then left together, and
//! the client, idle meanwhile, sent its next window: client and shard took turns, each
//! about half busy (README, "Issue 15, a sixth sitting"). So every `REQUESTS_PER_TURN`th
//! client request (shardlog or Kafka protocol) ends the turn once it is begun, as an
//! expired quota would: the read loop yields, and the executor polls its rings before it
//! runs tasks again. The count runs across turns, so a shard that reads few requests per
//! turn pays at most one extra poll per 64 requests.

use std::cell::Cell;

/// Client requests between two ends of a turn. Measured with 1 record per request and 256
/// in flight (README, "Issue 15, a seventh sitting"): 16 and 32 gained less than 64, 128
/// about as much.
pub(crate) const REQUESTS_PER_TURN: u64 = 64;

/// Counts the client requests a shard has read.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    read: Cell<u64>,
}

impl Turns {
    /// A request was read; every `REQUESTS_PER_TURN`th ends the executor's turn.
    pub(crate) fn request_read(&self) {
        let read = self.read.get() + 1;
        self.read.set(read);
        if read % REQUESTS_PER_TURN == 0 {
            glommio::executor().preempt_soon();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use glommio::LocalExecutorBuilder;

    use super::*;

    #[test]
    fn every_64th_request_ends_the_turn_and_the_next_turn_starts_afresh() {
        // A quota far longer than the test: only `preempt_soon` ends a turn here.
        let executor = LocalExecutorBuilder::default()
            .preempt_timer(Duration::from_secs(60))
            .make()
            .unwrap();
        executor.run(async {
            let turns = Turns::default();
            for round in 0..3 {
                for _ in 1..REQUESTS_PER_TURN {
                    turns.request_read();
                    assert!(!glommio::executor().need_preempt(), "round {round}");
                }
                turns.request_read();
                assert!(glommio::executor().need_preempt(), "round {round}");
                // The reading task yields; the executor polls its rings, and the request
                // to end the turn is spent.
                glommio::yield_if_needed().await;
                assert!(!glommio::executor().need_preempt(), "round {round}");
            }
        });
    }
}
