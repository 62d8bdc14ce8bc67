//! The client's metadata cache: the brokers with their liveness, the controller, each
//! topic's partitions (leader and leader epoch), and which broker addresses lately failed
//! to answer. Pure: no I/O and no clock reads (callers pass `now`), so its decisions are
//! tested without a network:
//!
//! - which brokers to ask, in which order ([`MetadataCache::candidates`]): live brokers
//!   before fenced ones, brokers that answered before ones that lately did not, and a
//!   rotating start so that one broker with a stale view (cut off from the controller, or
//!   just resumed from a pause) cannot pin the client to it;
//! - whether a metadata answer is older than what is known ([`merge`]): a partition's
//!   leader epoch only grows, so an answer naming a lower epoch than the cached one comes
//!   from a broker that has not caught up, and its partition is ignored;
//! - whether a partition's leadership moved since a request was sent to its leader
//!   ([`MetadataCache::moved`]): what lets a client give up a request to a leader that
//!   stopped answering once the controller has replaced it.
//!
//! Owned by one [`Client`](super::Client) on one executor thread (`!Send`, like it).

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::ErrorCode;
use crate::api::{MetadataResponse, PartitionMetadata, TopicMetadata};

/// How long an address that failed to answer is asked after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// A partition's leader as a request saw it when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Leadership {
    /// The leader's node id.
    pub(crate) node: u32,
    /// Its leader epoch.
    pub(crate) epoch: i32,
}

/// What became of a partition's leadership since a request was sent to its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Whether the node the request went to is still live (registered and not fenced).
    pub(crate) old_leader_live: bool,
}

/// One broker as the last metadata answer described it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Broker {
    addr: String,
    live: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct MetadataCache {
    /// Node id -> broker; ordered, so candidate orders are reproducible.
    brokers: BTreeMap<u32, Broker>,
    /// The controller leader as the last metadata answer named it.
    controller: Option<u32>,
    /// Topic -> its metadata as last learned (merged: see [`merge`]).
    topics: HashMap<String, Rc<TopicMetadata>>,
    /// Topics to look up again before their next use, keeping the cached entry as the
    /// floor of every leader epoch (a leader stopped answering, or answered that it is
    /// busy or stopping).
    stale: HashSet<String>,
    /// Address -> until when it is asked last (it failed to answer).
    suspects: HashMap<String, Instant>,
    /// Candidate lists made so far: where the next one starts among the live brokers.
    turn: usize,
}

impl MetadataCache {
    /// Takes in a metadata answer; `all` when it answered a request for every topic (a
    /// topic it does not list is then gone).
    pub(crate) fn learn(&mut self, response: &MetadataResponse, all: bool) {
        if !response.brokers.is_empty() {
            self.brokers = response
                .brokers
                .iter()
                .map(|b| {
                    let addr = broker_address(&b.host, b.port);
                    (b.node_id, Broker { addr, live: b.live })
                })
                .collect();
        }
        self.controller = response.controller;
        if all {
            let listed: HashSet<&str> = response.topics.iter().map(|t| t.name.as_str()).collect();
            self.topics.retain(|name, _| listed.contains(name.as_str()));
        }
        for topic in &response.topics {
            self.stale.remove(&topic.name);
            if topic.error != ErrorCode::None.as_u16() {
                self.topics.remove(&topic.name);
                continue;
            }
            let merged = match self.topics.get(&topic.name) {
                Some(cached) => merge(cached, topic),
                None => topic.clone(),
            };
            self.topics.insert(topic.name.clone(), Rc::new(merged));
        }
    }

    /// The cached metadata of `topic`, unless it is missing or stale.
    pub(crate) fn fresh_topic(&self, topic: &str) -> Option<Rc<TopicMetadata>> {
        if self.stale.contains(topic) {
            return None;
        }
        self.topics.get(topic).cloned()
    }

    /// The cached metadata of `topic`, stale or not.
    pub(crate) fn topic(&self, topic: &str) -> Option<Rc<TopicMetadata>> {
        self.topics.get(topic).cloned()
    }

    /// Forgets `topic`: a broker denied what the cache says about it (not the leader, no
    /// such topic), so even its leader epochs may be wrong (the topic may have been
    /// deleted and created again, restarting them).
    pub(crate) fn forget(&mut self, topic: &str) {
        self.topics.remove(topic);
        self.stale.remove(topic);
    }

    /// Marks `topic` for a fresh lookup before its next use, keeping what is cached as the
    /// floor of its leader epochs.
    pub(crate) fn mark_stale(&mut self, topic: &str) {
        if self.topics.contains_key(topic) {
            self.stale.insert(topic.to_owned());
        }
    }

    /// Makes `node` the cached leader of the partition (a `NotLeader` hint), if the
    /// partition is known and the broker is known and live (a broker that has not caught
    /// up may hint at a leader the controller has fenced).
    pub(crate) fn follow_hint(&mut self, topic: &str, partition: u32, node: u32) -> bool {
        if !self.brokers.get(&node).is_some_and(|b| b.live) {
            return false;
        }
        let Some(meta) = self.topics.get_mut(topic) else {
            return false;
        };
        let mut updated = TopicMetadata::clone(meta);
        let Some(p) = updated
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition)
        else {
            return false;
        };
        p.leader = Some(node);
        *meta = Rc::new(updated);
        true
    }

    /// The controller leader as the last metadata answer named it (`None` during an
    /// election, and always on a node that runs alone).
    pub(crate) fn controller(&self) -> Option<u32> {
        self.controller
    }

    /// The address of broker `node`, if known.
    pub(crate) fn broker_addr(&self, node: u32) -> Option<&str> {
        self.brokers.get(&node).map(|b| b.addr.as_str())
    }

    /// Whether the partition's leadership moved away from `sent` (another leader, none, or
    /// a higher epoch); `None` while it did not, or the topic or partition is not cached.
    pub(crate) fn moved(&self, topic: &str, partition: u32, sent: Leadership) -> Option<Moved> {
        let p = self
            .topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        let same = p.leader == Some(sent.node) && p.leader_epoch <= sent.epoch;
        if same {
            return None;
        }
        Some(Moved {
            old_leader_live: self.brokers.get(&sent.node).is_some_and(|b| b.live),
        })
    }

    /// Notes that `addr` did not answer (a timeout, a refused or broken connection): it is
    /// asked after the others for a while.
    pub(crate) fn suspect(&mut self, addr: &str, now: Instant) {
        self.suspects.insert(addr.to_owned(), now + SUSPECT_FOR);
    }

    /// Notes that `addr` answered.
    pub(crate) fn answered(&mut self, addr: &str) {
        self.suspects.remove(addr);
    }

    /// Every address worth asking a metadata or admin request, best first: live brokers
    /// that did not lately fail to answer (starting at a different one on each call;
    /// the controller leader first with `controller_first`, since admin requests end
    /// there), then live ones that did, then fenced ones, then `bootstrap` addresses not
    /// among the brokers; `avoid` (a leader that stopped answering) goes last.
    pub(crate) fn candidates(
        &mut self,
        bootstrap: &[String],
        controller_first: bool,
        avoid: Option<&str>,
        now: Instant,
    ) -> Vec<String> {
        self.suspects.retain(|_, until| *until > now);
        let turn = self.turn;
        self.turn = self.turn.wrapping_add(1);
        let suspect = |addr: &str| self.suspects.contains_key(addr);
        let mut ranked: Vec<(u8, usize, &str)> = Vec::new();
        let live_count = self.brokers.values().filter(|b| b.live).count().max(1);
        let mut live_index = 0;
        for (node, broker) in &self.brokers {
            let addr = broker.addr.as_str();
            let preferred = controller_first && self.controller == Some(*node);
            let rank = match (broker.live, suspect(addr)) {
                (true, false) if preferred => 0,
                (true, false) => 1,
                (true, true) => 2,
                (false, false) => 3,
                (false, true) => 4,
            };
            // Live brokers start at a different one on each call (a rotation); the others
            // keep node id order.
            let order = if broker.live {
                let rotated = (live_index + live_count - turn % live_count) % live_count;
                live_index += 1;
                rotated
            } else {
                0
            };
            ranked.push((rank, order, addr));
        }
        for (index, addr) in bootstrap.iter().enumerate() {
            if !ranked.iter().any(|(_, _, known)| *known == addr) {
                let rank = if suspect(addr) { 6 } else { 5 };
                ranked.push((rank, index, addr.as_str()));
            }
        }
        // Stable: equal ranks keep the order they were pushed in.
        ranked.sort_by_key(|(rank, order, _)| (*rank, *order));
        let mut out: Vec<String> = ranked
            .into_iter()
            .map(|(_, _, addr)| addr.to_owned())
            .collect();
        if let Some(avoid) = avoid
            && let Some(at) = out.iter().position(|addr| addr == avoid)
        {
            let addr = out.remove(at);
            out.push(addr);
        }
        out
    }
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn broker_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A fresh answer about a topic merged into the cached one: each partition from the
/// answer, unless the cached partition has a higher leader epoch over the same replicas,
/// which means the answering broker has not caught up (a leader epoch only grows while a
/// topic lives). Different replicas or a different partition count mean another topic of
/// the same name (deleted and created again): the answer wins whole.
pub(crate) fn merge(cached: &TopicMetadata, fresh: &TopicMetadata) -> TopicMetadata {
    if cached.partitions.len() != fresh.partitions.len() {
        return fresh.clone();
    }
    let partitions: Vec<PartitionMetadata> = fresh
        .partitions
        .iter()
        .zip(&cached.partitions)
        .map(|(new, old)| {
            let older = new.partition == old.partition
                && new.replicas == old.replicas
                && new.leader_epoch < old.leader_epoch;
            if older { old.clone() } else { new.clone() }
        })
        .collect();
    TopicMetadata {
        name: fresh.name.clone(),
        error: fresh.error,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::api::BrokerMetadata;

    fn partition(leader: Option<u32>, epoch: i32) -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch: epoch,
            replicas: vec![0, 1, 2],
            isr: vec![0, 1, 2],
        }
    }

    fn topic(partitions: Vec<PartitionMetadata>) -> TopicMetadata {
        TopicMetadata {
            name: "t".into(),
            error: 0,
            partitions,
        }
    }

    fn response(live: &[bool], partitions: Vec<PartitionMetadata>) -> MetadataResponse {
        MetadataResponse {
            node_id: 0,
            controller: Some(0),
            brokers: (0u32..)
                .zip(live)
                .map(|(node_id, live)| BrokerMetadata {
                    node_id,
                    host: "127.0.0.1".into(),
                    port: 9000 + u16::try_from(node_id).unwrap(),
                    live: *live,
                    draining: false,
                })
                .collect(),
            topics: vec![topic(partitions)],
        }
    }

    #[test]
    fn merge_keeps_the_higher_epoch_of_the_same_replicas() {
        // (cached leader, epoch), (answer leader, epoch), expected (leader, epoch)
        let table = [
            ((Some(1), 3), (Some(0), 2), (Some(1), 3)),
            ((Some(1), 3), (Some(2), 4), (Some(2), 4)),
            ((Some(1), 3), (None, 4), (None, 4)),
            ((Some(1), 3), (Some(1), 3), (Some(1), 3)),
            ((None, 5), (Some(1), 4), (None, 5)),
        ];
        for ((cl, ce), (al, ae), (el, ee)) in table {
            let merged = merge(
                &topic(vec![partition(cl, ce)]),
                &topic(vec![partition(al, ae)]),
            );
            let p = &merged.partitions[0];
            assert_eq!(
                (p.leader, p.leader_epoch),
                (el, ee),
                "{cl:?}/{ce} + {al:?}/{ae}"
            );
        }
    }

    #[test]
    fn merge_takes_a_recreated_topic_whole() {
        let mut other = partition(Some(2), 0);
        other.replicas = vec![2, 0, 1];
        let merged = merge(&topic(vec![partition(Some(1), 7)]), &topic(vec![other]));
        assert_eq!(merged.partitions[0].leader_epoch, 0);
        let two = topic(vec![partition(Some(0), 0), partition(Some(1), 0)]);
        assert_eq!(merge(&topic(vec![partition(Some(1), 7)]), &two), two);
    }

    #[test]
    fn moved_when_the_leader_or_epoch_changes() {
        let mut cache = MetadataCache::default();
        cache.learn(
            &response(&[true, false, true], vec![partition(Some(1), 3)]),
            true,
        );
        let sent = |node, epoch| Leadership { node, epoch };
        assert_eq!(cache.moved("t", 0, sent(1, 3)), None);
        // Fenced node 1 was replaced at a higher epoch.
        cache.learn(
            &response(&[true, false, true], vec![partition(Some(2), 4)]),
            true,
        );
        assert_eq!(
            cache.moved("t", 0, sent(1, 3)),
            Some(Moved {
                old_leader_live: false
            })
        );
        assert_eq!(
            cache.moved("t", 0, sent(2, 3)),
            Some(Moved {
                old_leader_live: true
            })
        );
        assert_eq!(cache.moved("t", 0, sent(2, 4)), None);
        assert_eq!(cache.moved("t", 1, sent(2, 4)), None, "no such partition");
        assert_eq!(cache.moved("u", 0, sent(2, 4)), None, "no such topic");
    }

    #[test]
    fn a_stale_answer_does_not_undo_a_failover() {
        let mut cache = MetadataCache::default();
        cache.learn(&response(&[true; 3], vec![partition(Some(2), 4)]), false);
        // A node resumed from a pause still names itself leader at the old epoch.
        cache.learn(&response(&[true; 3], vec![partition(Some(1), 3)]), false);
        let p = cache.topic("t").unwrap().partitions[0].clone();
        assert_eq!((p.leader, p.leader_epoch), (Some(2), 4));
        // Stale entries stay the floor; forgetting drops it.
        cache.mark_stale("t");
        assert!(cache.fresh_topic("t").is_none());
        assert!(cache.topic("t").is_some());
        cache.forget("t");
        assert!(cache.topic("t").is_none());
    }

    #[test]
    fn candidates_live_first_rotating_suspects_and_avoided_last() {
        let now = Instant::now();
        let bootstrap = vec!["127.0.0.1:9001".to_owned(), "seed:1".to_owned()];
        assert_eq!(
            MetadataCache::default().candidates(&bootstrap, false, None, now),
            bootstrap,
            "nothing learned yet: the bootstrap list"
        );
        let mut cache = MetadataCache::default();
        cache.learn(&response(&[true, false, true, true], vec![]), true);
        let a = |n: u16| format!("127.0.0.1:{}", 9000 + n);
        let seed = "seed:1".to_owned();
        // Node 1 is fenced: after the live ones; the bootstrap address that is not a
        // broker comes last.
        let first = cache.candidates(&bootstrap, false, None, now);
        assert_eq!(first, [a(0), a(2), a(3), a(1), seed.clone()]);
        let second = cache.candidates(&bootstrap, false, None, now);
        assert_eq!(second, [a(2), a(3), a(0), a(1), seed.clone()]);
        cache.suspect(&a(3), now);
        let third = cache.candidates(&bootstrap, false, Some(&a(0)), now);
        assert_eq!(third, [a(2), a(3), a(1), seed.clone(), a(0)]);
        // A suspect is forgiven when it answers...
        cache.answered(&a(3));
        let fourth = cache.candidates(&bootstrap, false, None, now);
        assert_eq!(&fourth[..3], [a(0), a(2), a(3)]);
        // ... or after a while.
        cache.suspect(&a(2), now);
        let fifth = cache.candidates(&bootstrap, false, None, now);
        assert_eq!(&fifth[..3], [a(3), a(0), a(2)]);
        let _sixth = cache.candidates(&bootstrap, false, None, now);
        let later = cache.candidates(&bootstrap, false, None, now + SUSPECT_FOR);
        assert_eq!(&later[..3], [a(0), a(2), a(3)]);
        // Admin requests go to the controller leader (node 0 in `response`) first, unless
        // it failed to answer.
        let admin = cache.candidates(&bootstrap, true, None, now);
        assert_eq!(&admin[..3], [a(0), a(2), a(3)]);
        let admin = cache.candidates(&bootstrap, true, None, now);
        assert_eq!(&admin[..3], [a(0), a(3), a(2)]);
        cache.suspect(&a(0), now);
        let admin = cache.candidates(&bootstrap, true, None, now);
        assert_eq!(&admin[..3], [a(2), a(3), a(0)]);
    }

    #[test]
    fn an_error_entry_or_a_full_answer_drops_topics() {
        let mut cache = MetadataCache::default();
        cache.learn(&response(&[true], vec![partition(Some(0), 0)]), false);
        let mut gone = response(&[true], vec![]);
        gone.topics[0].error = ErrorCode::UnknownTopic.as_u16();
        cache.learn(&gone, false);
        assert!(cache.topic("t").is_none());
        cache.learn(&response(&[true], vec![partition(Some(0), 0)]), false);
        let mut none = response(&[true], vec![]);
        none.topics.clear();
        cache.learn(&none, true);
        assert!(cache.topic("t").is_none());
    }
}
