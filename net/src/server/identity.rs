//! Who a data directory belongs to: `DATA/node.json` holds the node id the directory was
//! first started with and the incarnation of its last start. A start with another node
//! id is refused (the directory holds that node's replicas and controller log; under
//! another id they would be taken for someone else's). Each start is a new incarnation
//! (KIP-903: a leader tells a restarted replica from one that kept its log): the wall
//! clock in microseconds, but never less than one more than the last, so it only grows
//! even when the clock goes back. (A directory wiped and started on a machine whose
//! clock is behind could still start lower; the clock alone covers that case.)

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file, in the data directory.
pub const NODE_FILE: &str = "node.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct NodeFile {
    node_id: u32,
    incarnation: u64,
}

/// Checks the directory's node id against `node_id` (recording it on a first start) and
/// records this start's incarnation, which it returns. Blocking, at start.
pub fn start(data_dir: &Path, node_id: u32) -> anyhow::Result<u64> {
    let path = data_dir.join(NODE_FILE);
    let previous = match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice::<NodeFile>(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is damaged ({e}); it names the node this directory belongs to: \
                 restore it, or write {{\"node_id\": ID, \"incarnation\": 0}} with this \
                 node's id",
                path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
    };
    if let Some(previous) = previous
        && previous.node_id != node_id
    {
        anyhow::bail!(
            "{} belongs to node {}, not node {node_id}: start it with --node-id {} (or give \
             node {node_id} its own data directory)",
            data_dir.display(),
            previous.node_id,
            previous.node_id
        );
    }
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let next = NodeFile {
        node_id,
        incarnation: clock.max(previous.map_or(0, |p| p.incarnation).saturating_add(1)),
    };
    let tmp = data_dir.join(format!("{NODE_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(&next)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(next.incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_only_grow_and_another_node_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path(), 3).unwrap();
        assert!(start(dir.path(), 3).unwrap() > first);
        let refused = start(dir.path(), 4).unwrap_err().to_string();
        assert!(refused.contains("belongs to node 3"), "{refused}");
        // A clock far behind the last start: still one more.
        let ahead = u64::MAX / 2;
        let file = NodeFile {
            node_id: 3,
            incarnation: ahead,
        };
        std::fs::write(
            dir.path().join(NODE_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        assert_eq!(start(dir.path(), 3).unwrap(), ahead + 1);
        std::fs::write(dir.path().join(NODE_FILE), b"garbage").unwrap();
        assert!(start(dir.path(), 3).is_err());
    }
}
