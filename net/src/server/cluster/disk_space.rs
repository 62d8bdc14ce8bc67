//! Disk space for new topics: what a replica reserves when it is created, the free space
//! of a data directory (statvfs), and the pure decision whether a topic's placement fits
//! the free space its nodes reported in their heartbeats.
//!
//! A new replica holds one preallocation step of its first segment (see the engine's
//! `preallocation_step_bytes`), its directory and its checkpoint. A node also keeps
//! `FREE_MARGIN_BYTES` free for what must always be writable: the controller's Raft log,
//! checkpoints, the next steps of active segments.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use shardlog_engine::EngineConfig;
use shardlog_replicator::NodeId;

/// Bytes of a new replica besides its first preallocation: the partition directory and
/// its checkpoint, a block each, with room for the topic directory's entries.
const REPLICA_OVERHEAD_BYTES: u64 = 16 << 10;

/// What a creation must leave free on every node it places replicas on.
pub(crate) const FREE_MARGIN_BYTES: u64 = 16 << 20;

/// Bytes a new replica of a topic with `engine` takes on disk when it opens.
#[must_use]
pub(crate) fn reservation_per_replica(engine: &EngineConfig) -> u64 {
    engine.first_preallocation() + REPLICA_OVERHEAD_BYTES
}

/// Bytes free for an unprivileged writer in the filesystem holding `path` (blocking).
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat`
    // points to writable memory the size of a `statvfs`.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// A node that would not hold a new topic's replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub(crate) node: NodeId,
    pub(crate) replicas: u64,
    pub(crate) needed: u64,
    pub(crate) free: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} would hold {} new replicas needing {} bytes ({:.1} MiB, with {} MiB \
             kept free) and has {} bytes ({:.1} MiB) free",
            self.node,
            self.replicas,
            self.needed,
            mib(self.needed),
            FREE_MARGIN_BYTES >> 20,
            self.free,
            mib(self.free),
        )
    }
}

#[allow(clippy::cast_precision_loss)] // A figure for people.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// The first node of `assignment` (replica lists) whose new replicas, `per_replica` bytes
/// each plus `FREE_MARGIN_BYTES`, exceed the free space it reported. A node that has not
/// reported is not refused: the check cannot tell.
#[must_use]
pub(crate) fn shortfall(
    assignment: &[Vec<NodeId>],
    per_replica: u64,
    free: &BTreeMap<NodeId, u64>,
) -> Option<Shortfall> {
    let mut replicas: BTreeMap<NodeId, u64> = BTreeMap::new();
    for node in assignment.iter().flatten() {
        *replicas.entry(*node).or_default() += 1;
    }
    replicas.into_iter().find_map(|(node, count)| {
        let free = *free.get(&node)?;
        let needed = count.saturating_mul(per_replica);
        (needed.saturating_add(FREE_MARGIN_BYTES) > free).then_some(Shortfall {
            node,
            replicas: count,
            needed,
            free,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_first_node_that_cannot_hold_its_share() {
        const MIB: u64 = 1 << 20;
        let assignment: Vec<Vec<NodeId>> = (0..4)
            .map(|p| vec![NodeId(p % 2), NodeId((p + 1) % 2)])
            .collect();
        // 4 replicas per node at 1 MiB each, plus the margin.
        let fits = BTreeMap::from([(NodeId(0), 20 * MIB + 1), (NodeId(1), 100 * MIB)]);
        assert_eq!(shortfall(&assignment, MIB, &fits), None);
        let tight = BTreeMap::from([(NodeId(0), 100 * MIB), (NodeId(1), 20 * MIB - 1)]);
        let short = shortfall(&assignment, MIB, &tight).expect("node 1 is short");
        assert_eq!(
            (short.node, short.replicas, short.needed),
            (NodeId(1), 4, 4 * MIB)
        );
        assert!(short.to_string().contains("has 20971519 bytes"), "{short}");
        // A node that never reported is not refused.
        let unknown = BTreeMap::from([(NodeId(0), 100 * MIB)]);
        assert_eq!(shortfall(&assignment, MIB, &unknown), None);
    }

    #[test]
    fn free_bytes_of_a_real_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
    }
}
