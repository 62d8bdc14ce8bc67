//! The write probe a stopped partition's owner runs before reopening it: whether the
//! directory's filesystem takes a write again (space freed after ENOSPC, a device back
//! after EIO). It writes its own file, never the log's, so a failed probe changes nothing
//! the log holds.
//!
//! The probe file, `space-probe.tmp`, is removed at the end, and ignored and removed by
//! the log's open (a `.tmp`) if a crash leaves it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::segment::BLOCK_SIZE;
use crate::storage::{OpenMode, Storage, StorageFile};

/// The probe's file name, inside the partition's directory.
pub const PROBE_FILE: &str = "space-probe.tmp";

/// Reserves `bytes` (rounded up to whole blocks) in a file of its own in `dir`, writes
/// and syncs its first block, then removes it. `Ok` means a write of that much would
/// have fit and reached the device just now.
pub async fn probe_dir<S: Storage>(storage: &S, dir: &Path, bytes: u64) -> Result<()> {
    let path = dir.join(PROBE_FILE);
    match storage.remove_file(&path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path)(e)),
        _ => {}
    }
    let file = storage
        .open(&path, OpenMode::CreateNew)
        .await
        .map_err(Error::io(&path))?;
    let written = async {
        let bytes = bytes
            .max(BLOCK_SIZE as u64)
            .next_multiple_of(BLOCK_SIZE as u64);
        file.preallocate(bytes).await?;
        file.write_at(0, &[0u8; BLOCK_SIZE]).await?;
        file.sync_data().await
    }
    .await;
    let closed = file.close().await;
    let removed = storage.remove_file(&path).await;
    written.and(closed).and(removed).map_err(Error::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage_sim::SimStorage;

    #[test]
    fn a_probe_leaves_nothing_behind() {
        futures::executor::block_on(async {
            let storage = SimStorage::default();
            let dir = Path::new("/p");
            storage.create_dir_all(dir).await.unwrap();
            probe_dir(&storage, dir, 1 << 20).await.unwrap();
            assert!(storage.list_dir(dir).await.unwrap().is_empty());
        });
    }
}
