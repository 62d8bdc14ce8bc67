//! [`MoveThrottle`]: the byte budget of what leaders ship to catching-up replicas (a
//! move's adding replicas not yet in the ISR), so that a replica catching up from the log
//! start does not take the disk and network from the in-sync followers and producers.
//! Ships to in-sync followers never touch it.
//!
//! A token bucket over the replicas' clock ([`Tick`], ms): `rate` bytes per second flow
//! in, at most `burst_ms` worth is saved up. A ship may go while the bucket is positive
//! and takes its whole size, driving it negative (a batch is never split), so the rate
//! holds on average and the next ship waits until the debt is paid. Rate 0: unthrottled.
//! Shared by the drivers of one shard (`Rc`): not `Send`, owned by the shard's thread.

use std::cell::Cell;

use crate::ids::Tick;

/// The most a throttled bucket saves up while idle, in ms of its rate.
const BURST_MS: u64 = 100;

/// A byte budget for ships to catching-up replicas. See the module doc.
#[derive(Debug, Default)]
pub struct MoveThrottle {
    /// Bytes per second; 0: unthrottled.
    rate: Cell<u64>,
    /// Bytes that may go now (negative: a debt).
    tokens: Cell<i64>,
    refilled_at: Cell<Tick>,
    /// Bytes shipped through it, throttled or not (for metrics and reports).
    shipped: Cell<u64>,
}

impl MoveThrottle {
    /// A bucket of `bytes_per_s` (0: unthrottled), full.
    #[must_use]
    pub fn new(bytes_per_s: u64) -> MoveThrottle {
        let throttle = MoveThrottle::default();
        throttle.set_rate(bytes_per_s);
        throttle.tokens.set(throttle.burst());
        throttle
    }

    /// Changes the rate (0: unthrottled); what is saved up is kept within the new burst.
    pub fn set_rate(&self, bytes_per_s: u64) {
        self.rate.set(bytes_per_s);
        self.tokens.set(self.tokens.get().min(self.burst()));
    }

    /// The rate, bytes per second (0: unthrottled).
    #[must_use]
    pub fn rate(&self) -> u64 {
        self.rate.get()
    }

    fn burst(&self) -> i64 {
        let bytes = self.rate.get().saturating_mul(BURST_MS) / 1000;
        i64::try_from(bytes.max(1)).unwrap_or(i64::MAX)
    }

    /// How many bytes a ship may carry at `now`: `None` unthrottled, `Some(0)` none
    /// (wait for a later tick), else at least one batch up to about this many.
    pub fn budget(&self, now: Tick) -> Option<usize> {
        let rate = self.rate.get();
        if rate == 0 {
            return None;
        }
        let elapsed = now.since(self.refilled_at.get());
        if elapsed > 0 {
            self.refilled_at.set(now);
            let earned = i64::try_from(rate.saturating_mul(elapsed) / 1000).unwrap_or(i64::MAX);
            self.tokens
                .set(self.tokens.get().saturating_add(earned).min(self.burst()));
        }
        let tokens = self.tokens.get();
        Some(usize::try_from(tokens.max(0)).unwrap_or(usize::MAX))
    }

    /// A ship of `bytes` went out.
    pub fn spend(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.shipped
            .set(self.shipped.get().saturating_add(bytes.unsigned_abs()));
        if self.rate.get() > 0 {
            self.tokens.set(self.tokens.get().saturating_sub(bytes));
        }
    }

    /// Bytes shipped through this bucket so far.
    #[must_use]
    pub fn shipped(&self) -> u64 {
        self.shipped.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unthrottled_has_no_budget() {
        let throttle = MoveThrottle::new(0);
        assert_eq!(throttle.budget(Tick(5)), None);
        throttle.spend(1 << 30);
        assert_eq!(throttle.budget(Tick(6)), None);
        assert_eq!(throttle.shipped(), 1 << 30);
    }

    /// Over a long run of ticks with a greedy sender of 64 KiB ships, what goes out is
    /// the rate (within one ship and one burst).
    #[test]
    fn a_greedy_sender_gets_the_rate() {
        for rate in [100_000u64, 1_000_000, 10_000_000] {
            let throttle = MoveThrottle::new(rate);
            let ship = 64 * 1024;
            let mut sent = 0u64;
            for ms in (0..10_000).step_by(10) {
                while throttle.budget(Tick(ms)).is_some_and(|b| b > 0) {
                    throttle.spend(ship);
                    sent += ship as u64;
                }
            }
            let expected = rate * 10;
            let slack = ship as u64 + rate * BURST_MS / 1000 + rate / 100;
            assert!(
                sent.abs_diff(expected) <= slack,
                "rate {rate}: sent {sent}, expected {expected}"
            );
        }
    }

    #[test]
    fn a_debt_is_paid_before_the_next_ship() {
        let throttle = MoveThrottle::new(1000);
        assert_eq!(throttle.budget(Tick(0)), Some(100));
        throttle.spend(1100); // one batch over the budget: 1000 bytes of debt
        assert_eq!(throttle.budget(Tick(500)), Some(0));
        assert_eq!(throttle.budget(Tick(999)), Some(0));
        assert!(throttle.budget(Tick(1100)).is_some_and(|b| b > 0));
    }
}
