//! Replica placement for a new topic (a pure decision).
//!
//! Partition `p` of the `k`-th topic created starts at live node `(k + p) mod n` and takes
//! the next `rf` nodes in id order: replicas are distinct, each node holds about
//! `partitions * rf / n` replicas and leads about `partitions / n` partitions, and topics
//! do not all start on the same node. Shards within a node are the driver's business.

use crate::ids::NodeId;

/// Replica lists (preferred leader first) for `partitions` partitions over `live` nodes
/// (sorted by id); needs `rf <= live.len()`.
#[must_use]
pub fn assign(live: &[NodeId], partitions: u32, rf: u16, topic_seq: u64) -> Vec<Vec<NodeId>> {
    let n = live.len();
    if n == 0 {
        return Vec::new();
    }
    let offset = usize::try_from(topic_seq % n as u64).unwrap_or(0);
    (0..partitions)
        .map(|p| {
            let start = offset + usize::try_from(p).unwrap_or(0);
            (0..usize::from(rf))
                .filter_map(|j| live.get((start + j) % n).copied())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_and_even() {
        let live: Vec<NodeId> = (0..3).map(NodeId).collect();
        let a = assign(&live, 6, 3, 1);
        let mut leaders = [0; 3];
        let mut replicas = [0; 3];
        for r in &a {
            assert_eq!(r.len(), 3);
            assert!(r[0] != r[1] && r[1] != r[2] && r[0] != r[2]);
            leaders[r[0].0 as usize] += 1;
            for n in r {
                replicas[n.0 as usize] += 1;
            }
        }
        assert_eq!(leaders, [2, 2, 2]);
        assert_eq!(replicas, [6, 6, 6]);
    }
}
