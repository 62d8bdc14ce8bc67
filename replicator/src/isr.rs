//! The lag rule: which followers are in sync at `now`, and which may join.
//!
//! A follower is caught up at time `t` if by then it had acknowledged the leader's whole
//! log as of an earlier probe (Kafka's `lastCaughtUpTimeMs`); it leaves the ISR when that
//! was more than `replica_lag_ms` ago. It joins again only when it is caught up *and*
//! holds durably everything committed and everything this leader inherited at election
//! (the epoch start offset, KAFKA-7128), and only as the incarnation the leader has
//! heard from since its restart (KIP-903): a replica that lost data rejoins only after it
//! has caught up again. A member that restarted leaves at once; one a new leader has not
//! heard from yet keeps its place for `replica_lag_ms` (until it answers, it holds the
//! high watermark back, which is safe). A replica the controller has fenced never joins:
//! it may have caught up just before it died, and the controller would refuse it.

use shardlog_engine::Offset;

use crate::ids::{NodeId, Tick};

/// What the lag rule needs to know of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    /// The follower.
    pub node: NodeId,
    /// Last time it was caught up.
    pub caught_up_at: Tick,
    /// Its durable end.
    pub durable_end: Offset,
    /// Whether the leader has heard from this incarnation since it last restarted.
    pub known: bool,
    /// Whether it restarted (a new incarnation) since the leader last counted it in sync.
    pub restarted: bool,
    /// Whether the controller has fenced it (it missed its session): it may not join.
    pub offline: bool,
}

/// Whether a follower last caught up at `caught_up_at` is out of sync at `now`.
#[must_use]
pub fn out_of_sync(now: Tick, caught_up_at: Tick, replica_lag_ms: u64) -> bool {
    now.since(caught_up_at) > replica_lag_ms
}

/// The ISR without its out-of-sync followers, or `None` if nobody is out of sync.
#[must_use]
pub fn shrink(
    leader: NodeId,
    isr: &[NodeId],
    lags: &[Lag],
    now: Tick,
    replica_lag_ms: u64,
) -> Option<Vec<NodeId>> {
    let stays = |node: NodeId| {
        node == leader
            || lags.iter().any(|lag| {
                // A member not heard from yet (a new leader's followers) keeps its
                // place for `replica_lag_ms`; one that restarted leaves at once.
                lag.node == node
                    && !lag.restarted
                    && !out_of_sync(now, lag.caught_up_at, replica_lag_ms)
            })
    };
    // Asked on every step of a leader: the usual answer ("nobody leaves") allocates nothing.
    if isr.iter().all(|&node| stays(node)) {
        return None;
    }
    Some(isr.iter().copied().filter(|&node| stays(node)).collect())
}

/// The ISR plus the followers that may join, or `None` if nobody may.
#[must_use]
pub fn expand(
    isr: &[NodeId],
    lags: &[Lag],
    now: Tick,
    replica_lag_ms: u64,
    join_floor: Offset,
) -> Option<Vec<NodeId>> {
    let joins = |lag: &&Lag| {
        lag.known
            && !lag.offline
            && !isr.contains(&lag.node)
            && lag.durable_end >= join_floor
            && !out_of_sync(now, lag.caught_up_at, replica_lag_ms)
    };
    // Asked on every step of a leader: the usual answer ("nobody joins") allocates nothing.
    if !lags.iter().any(|lag| joins(&lag)) {
        return None;
    }
    let mut grown = isr.to_vec();
    grown.extend(lags.iter().filter(joins).map(|lag| lag.node));
    grown.sort_unstable();
    Some(grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(node: u32, caught_up_at: u64, durable_end: u64, known: bool) -> Lag {
        Lag {
            node: NodeId(node),
            caught_up_at: Tick(caught_up_at),
            durable_end: Offset(durable_end),
            known,
            restarted: !known,
            offline: false,
        }
    }

    #[test]
    fn shrink_and_expand() {
        let isr = [NodeId(0), NodeId(1), NodeId(2)];
        let lags = [lag(1, 950, 10, true), lag(2, 100, 10, true)];
        assert_eq!(
            shrink(NodeId(0), &isr, &lags, Tick(1000), 500),
            Some(vec![NodeId(0), NodeId(1)])
        );
        assert_eq!(shrink(NodeId(0), &isr, &lags, Tick(500), 500), None);
        // A restarted replica (unknown incarnation) leaves at once.
        let lags = [lag(1, 950, 10, false), lag(2, 990, 10, true)];
        assert_eq!(
            shrink(NodeId(0), &isr, &lags, Tick(1000), 500),
            Some(vec![NodeId(0), NodeId(2)])
        );
        // One not heard from yet (a new leader's follower) keeps its place until the lag.
        let silent = Lag {
            known: false,
            restarted: false,
            ..lag(1, 900, 0, true)
        };
        let lags = [silent, lag(2, 990, 10, true)];
        assert_eq!(shrink(NodeId(0), &isr, &lags, Tick(1000), 500), None);
        assert_eq!(
            shrink(NodeId(0), &isr, &lags, Tick(1401), 500),
            Some(vec![NodeId(0), NodeId(2)])
        );
        // Joining needs the durable floor, recency and a known incarnation.
        let isr = [NodeId(0)];
        let lags = [
            lag(1, 990, 10, true),
            lag(2, 990, 9, true),
            lag(3, 990, 10, false),
        ];
        assert_eq!(
            expand(&isr, &lags, Tick(1000), 500, Offset(10)),
            Some(vec![NodeId(0), NodeId(1)])
        );
        assert_eq!(expand(&isr, &lags, Tick(1000), 500, Offset(11)), None);
        // A fenced replica never joins, however caught up it looked when it died.
        let fenced = Lag {
            offline: true,
            ..lag(1, 990, 10, true)
        };
        assert_eq!(expand(&isr, &[fenced], Tick(1000), 500, Offset(10)), None);
    }
}
