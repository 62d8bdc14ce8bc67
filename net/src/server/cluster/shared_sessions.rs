//! The controller leader's sessions, shared with every node. Only the leader hears
//! heartbeats, so only it knows how long ago each node last spoke; an operator looking at
//! any other node's `/v1/status` or console would otherwise see no heartbeat ages at all.
//!
//! Why a push from the leader rather than a question to it per page: the leader already
//! talks to every node (Raft, fire-and-forget `Controller` frames), a push needs no
//! request/reply path nor a page that waits on another node, and one small frame per
//! node every `SHARE_EVERY_MS` costs nothing next to the heartbeats themselves. Why not
//! the Raft log: ages change every heartbeat, and a log entry per heartbeat would be a
//! disk write per node per 100 ms.
//!
//! What a receiving node shows is honest about its age: a node's age is the leader's
//! figure plus the time since the report arrived (never less than the truth, so a dead
//! node's age grows steadily; a live node's reads up to `SHARE_EVERY_MS` high), and a
//! report older than `STALE_AFTER_MS`, or from a node this one no longer knows as the
//! leader, shows nothing (`null`) rather than a guess.
//!
//! Remote input: a report is taken only from the leader this node knows, not from an
//! older term, with at most `NODES_MAX` entries, and only entries for nodes of
//! `--peers` (or this node); the rest is refused or skipped, never trusted.

use std::collections::BTreeMap;

use shardlog_replicator::{NodeId, Tick};

use crate::api::NodeSession;

/// How often the controller leader sends its sessions to every node, ms.
pub(crate) const SHARE_EVERY_MS: u64 = 250;
/// A report older than this (ms) is not shown: the leader stopped sending (it died, or
/// lost leadership without this node knowing yet).
pub(crate) const STALE_AFTER_MS: u64 = 2_000;
/// Entries a report may carry (a cluster has far fewer nodes).
pub(crate) const NODES_MAX: usize = 1_024;

/// Why a report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("sent by node {sender}, but the controller leader is {known:?}")]
    NotTheLeader {
        sender: NodeId,
        known: Option<NodeId>,
    },
    #[error("term {term} is older than this node's {known}")]
    OldTerm { term: u64, known: u64 },
    #[error("{entries} entries (at most {NODES_MAX})")]
    TooMany { entries: usize },
}

/// One node's session as last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    heartbeat_age_ms: u64,
    free_bytes: Option<u64>,
}

/// The last report taken.
#[derive(Clone, Debug)]
struct Report {
    leader: NodeId,
    received: Tick,
    sessions: BTreeMap<NodeId, Session>,
}

/// What this node keeps: the last report from the leader, and, on the leader, when it
/// last sent one.
#[derive(Debug, Default)]
pub(crate) struct SharedSessions {
    last: Option<Report>,
    last_sent: Option<Tick>,
}

impl SharedSessions {
    /// On the leader: whether a report is due at `now` (then it counts as sent).
    pub(crate) fn due(&mut self, now: Tick) -> bool {
        let due = self
            .last_sent
            .is_none_or(|at| now.since(at) >= SHARE_EVERY_MS);
        if due {
            self.last_sent = Some(now);
        }
        due
    }

    /// A report from `sender`, arriving at `now`, while this node knows `leader` as the
    /// controller leader in `known_term`. `member` says whether a node id is one of the
    /// cluster's (entries for others are skipped).
    pub(crate) fn take(
        &mut self,
        (sender, term): (NodeId, u64),
        (leader, known_term): (Option<NodeId>, u64),
        nodes: &[NodeSession],
        member: impl Fn(NodeId) -> bool,
        now: Tick,
    ) -> Result<(), Refused> {
        if leader != Some(sender) {
            return Err(Refused::NotTheLeader {
                sender,
                known: leader,
            });
        }
        if term < known_term {
            return Err(Refused::OldTerm {
                term,
                known: known_term,
            });
        }
        if nodes.len() > NODES_MAX {
            return Err(Refused::TooMany {
                entries: nodes.len(),
            });
        }
        let sessions = nodes
            .iter()
            .filter(|n| member(NodeId(n.node)))
            .map(|n| {
                let session = Session {
                    heartbeat_age_ms: n.heartbeat_age_ms,
                    free_bytes: n.free_bytes,
                };
                (NodeId(n.node), session)
            })
            .collect();
        self.last = Some(Report {
            leader: sender,
            received: now,
            sessions,
        });
        Ok(())
    }

    /// The last report, if it is fresh at `now` and from `leader` (the leader as this
    /// node knows it now).
    fn fresh(&self, leader: Option<NodeId>, now: Tick) -> Option<&Report> {
        self.last
            .as_ref()
            .filter(|r| Some(r.leader) == leader && now.since(r.received) <= STALE_AFTER_MS)
    }

    /// Each node's heartbeat age at `now`, from the last fresh report: the leader's figure
    /// plus the time since it arrived. Empty when there is none.
    pub(crate) fn heartbeat_ages_ms(
        &self,
        leader: Option<NodeId>,
        now: Tick,
    ) -> BTreeMap<NodeId, u64> {
        self.fresh(leader, now)
            .map(|r| {
                let since = now.since(r.received);
                r.sessions
                    .iter()
                    .map(|(node, s)| (*node, s.heartbeat_age_ms.saturating_add(since)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each node's free bytes, from the last fresh report.
    pub(crate) fn free_bytes(&self, leader: Option<NodeId>, now: Tick) -> BTreeMap<NodeId, u64> {
        self.fresh(leader, now)
            .map(|r| {
                r.sessions
                    .iter()
                    .filter_map(|(node, s)| Some((*node, s.free_bytes?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(node: u32, age: u64) -> NodeSession {
        NodeSession {
            node,
            heartbeat_age_ms: age,
            free_bytes: Some(u64::from(node) * 1000),
        }
    }

    const LEADER: NodeId = NodeId(2);

    fn members(node: NodeId) -> bool {
        node.0 < 3
    }

    #[test]
    fn ages_grow_from_the_report_and_vanish_when_stale() {
        let mut shared = SharedSessions::default();
        let nodes = [session(0, 40), session(1, 900), session(2, 0)];
        let taken = shared.take((LEADER, 5), (Some(LEADER), 5), &nodes, members, Tick(1000));
        assert_eq!(taken, Ok(()));
        let at = |t| shared.heartbeat_ages_ms(Some(LEADER), Tick(t));
        assert_eq!(
            at(1000),
            BTreeMap::from([(NodeId(0), 40), (NodeId(1), 900), (NodeId(2), 0)])
        );
        assert_eq!(at(1500)[&NodeId(1)], 1400);
        assert_eq!(at(1000 + STALE_AFTER_MS)[&NodeId(0)], 40 + STALE_AFTER_MS);
        assert!(at(1001 + STALE_AFTER_MS).is_empty());
        assert_eq!(
            shared.free_bytes(Some(LEADER), Tick(1200))[&NodeId(1)],
            1000
        );
        // Another leader now: the old leader's word is not shown.
        assert!(
            shared
                .heartbeat_ages_ms(Some(NodeId(0)), Tick(1100))
                .is_empty()
        );
        assert!(shared.heartbeat_ages_ms(None, Tick(1100)).is_empty());
    }

    #[test]
    fn reports_from_others_old_terms_or_too_long_are_refused() {
        let mut shared = SharedSessions::default();
        let nodes = [session(0, 1)];
        let from_other = shared.take((NodeId(1), 5), (Some(LEADER), 5), &nodes, members, Tick(1));
        assert!(matches!(from_other, Err(Refused::NotTheLeader { .. })));
        let no_leader = shared.take((LEADER, 5), (None, 5), &nodes, members, Tick(1));
        assert!(matches!(no_leader, Err(Refused::NotTheLeader { .. })));
        let old = shared.take((LEADER, 4), (Some(LEADER), 5), &nodes, members, Tick(1));
        assert_eq!(old, Err(Refused::OldTerm { term: 4, known: 5 }));
        let many: Vec<_> = (0..=NODES_MAX).map(|_| session(1, 1)).collect();
        let long = shared.take((LEADER, 5), (Some(LEADER), 5), &many, members, Tick(1));
        assert!(matches!(long, Err(Refused::TooMany { .. })));
        assert!(shared.heartbeat_ages_ms(Some(LEADER), Tick(1)).is_empty());
        // Entries for nodes outside the cluster are skipped, the rest taken.
        let mixed = [session(0, 7), session(99, 7)];
        let taken = shared.take((LEADER, 6), (Some(LEADER), 5), &mixed, members, Tick(1));
        assert_eq!(taken, Ok(()));
        let ages = shared.heartbeat_ages_ms(Some(LEADER), Tick(1));
        assert_eq!(ages, BTreeMap::from([(NodeId(0), 7)]));
    }

    #[test]
    fn the_leader_sends_every_share_interval() {
        let mut shared = SharedSessions::default();
        assert!(shared.due(Tick(0)));
        assert!(!shared.due(Tick(SHARE_EVERY_MS - 1)));
        assert!(shared.due(Tick(SHARE_EVERY_MS)));
        assert!(!shared.due(Tick(SHARE_EVERY_MS + 1)));
    }
}
