//! The partition log's snapshot files (format and rules in `snapshot_file.rs`): which
//! exist, writing one, reading one back, and deleting those a truncation, retention or
//! recovery made stale. Every deletion is durable (directory synced) before the log
//! changes in a way that would make the deleted snapshot lie.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ids::Offset;
use crate::log_maintenance::{remove_if_exists, rename_durably, write_file};
use crate::log_open::read_whole;
use crate::partition_log::PartitionLog;
use crate::snapshot_file::{self, SNAPSHOT_HEADER_SIZE, SNAPSHOT_PAYLOAD_MAX, SNAPSHOTS_KEPT};
use crate::storage::{OpenMode, Storage, StorageFile};

impl<S: Storage> PartitionLog<S> {
    /// Offsets of the snapshot files, oldest first; all within `[log_start, log_end]`.
    #[must_use]
    pub fn snapshot_offsets(&self) -> Vec<Offset> {
        self.state.borrow().snapshots.iter().copied().collect()
    }

    /// The payload of the snapshot at `offset`, or `None` (with a warning) if it is
    /// missing, unreadable or fails a check: the caller then tries an older one.
    pub async fn read_snapshot(&self, offset: Offset) -> Option<Bytes> {
        let path = self.snapshot_path(offset);
        match read_snapshot_file(&self.storage, &path, offset).await {
            Ok(payload) => Some(payload),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "snapshot not used");
                None
            }
        }
    }

    /// Deletes the snapshot at `offset` (its owner found it unusable), durably.
    pub async fn delete_snapshot(&self, offset: Offset) -> Result<()> {
        self.delete_snapshots(&[offset]).await
    }

    /// Writes `payload` as the snapshot at `offset` (the state of the batches below it),
    /// durably, then deletes all but the newest [`SNAPSHOTS_KEPT`]. Appends wait meanwhile,
    /// so `offset` stays in the log. A failure is logged and returned, and the log goes
    /// on: a snapshot only shortens the next open, and a failed one is never renamed
    /// into place (its `.tmp` is removed on open).
    pub async fn write_snapshot(&self, offset: Offset, payload: &[u8]) -> Result<()> {
        let result = self.write_snapshot_inner(offset, payload).await;
        if let Err(error) = &result {
            tracing::warn!(dir = %self.dir.display(), %offset, %error, "writing a snapshot failed");
        }
        result
    }

    async fn write_snapshot_inner(&self, offset: Offset, payload: &[u8]) -> Result<()> {
        let _guard = self.exclusive().await?;
        {
            let state = self.state.borrow();
            assert!(
                offset <= state.log_end,
                "snapshot at {offset} past the log end {}",
                state.log_end
            );
            if offset < state.log_start() {
                return Ok(());
            }
        }
        let bytes = snapshot_file::encode(offset, payload);
        let path = self.snapshot_path(offset);
        let tmp = path.with_extension(format!("{}.tmp", snapshot_file::SNAPSHOT_SUFFIX));
        write_file(&self.storage, &tmp, &bytes).await?;
        // Known before the rename: a truncation must delete it even if the rename's
        // outcome is unknown (an error after it).
        self.state.borrow_mut().snapshots.insert(offset);
        rename_durably(&self.storage, &self.dir, &tmp, &path).await?;
        let surplus: Vec<Offset> = {
            let state = self.state.borrow();
            let excess = state.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
            state.snapshots.iter().take(excess).copied().collect()
        };
        self.delete_snapshots(&surplus).await
    }

    /// Deletes the snapshots above `log_end`: a truncation to `log_end` is about to
    /// remove the batches they describe. Durable when this returns.
    pub(crate) async fn delete_snapshots_above(&self, log_end: Offset) -> Result<()> {
        let doomed: Vec<Offset> = {
            let state = self.state.borrow();
            state
                .snapshots
                .range(log_end..)
                .copied()
                .filter(|o| *o > log_end)
                .collect()
        };
        self.delete_snapshots(&doomed).await
    }

    /// Deletes the snapshots below `log_start` (retention deleted what they continue).
    pub(crate) async fn delete_snapshots_below(&self, log_start: Offset) -> Result<()> {
        let doomed: Vec<Offset> = {
            let state = self.state.borrow();
            state.snapshots.range(..log_start).copied().collect()
        };
        self.delete_snapshots(&doomed).await
    }

    /// Deletes every snapshot (the log restarts empty).
    pub(crate) async fn delete_all_snapshots(&self) -> Result<()> {
        let all = self.snapshot_offsets();
        self.delete_snapshots(&all).await
    }

    /// Finds the snapshot files at open and deletes those outside
    /// `[log_start, log_end]` (a crash lost the log tail they describe, or retention
    /// deleted their segments and stopped before them).
    pub(crate) async fn load_snapshot_list(&self) -> Result<()> {
        let names = self
            .storage
            .list_dir(&self.dir)
            .await
            .map_err(Error::io(&self.dir))?;
        let (log_start, log_end) = {
            let state = self.state.borrow();
            (state.log_start(), state.log_end)
        };
        let mut stale = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            for offset in names
                .iter()
                .filter_map(|n| snapshot_file::parse_snapshot_name(n))
            {
                state.snapshots.insert(offset);
                if offset < log_start || offset > log_end {
                    stale.push(offset);
                }
            }
        }
        if !stale.is_empty() {
            tracing::info!(dir = %self.dir.display(), ?stale, %log_start, %log_end, "deleting snapshots outside the log");
        }
        self.delete_snapshots(&stale).await
    }

    async fn delete_snapshots(&self, offsets: &[Offset]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        for offset in offsets {
            remove_if_exists(&self.storage, &self.snapshot_path(*offset)).await?;
            self.state.borrow_mut().snapshots.remove(offset);
        }
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(Error::io(&self.dir))
    }

    fn snapshot_path(&self, offset: Offset) -> PathBuf {
        self.dir.join(snapshot_file::snapshot_file_name(offset))
    }
}

/// Why a snapshot file was not used: its damage, or an I/O error reading it.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error(transparent)]
    Damaged(#[from] snapshot_file::SnapshotDamage),
    #[error(transparent)]
    Io(#[from] Error),
}

async fn read_snapshot_file<S: Storage>(
    storage: &S,
    path: &Path,
    offset: Offset,
) -> std::result::Result<Bytes, Unusable> {
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .await
        .map_err(Error::io(path))?;
    let size = file.size().await.map_err(Error::io(path))?;
    // Never read more than the largest valid snapshot: the length is untrusted.
    let bound = (SNAPSHOT_HEADER_SIZE + SNAPSHOT_PAYLOAD_MAX) as u64;
    let bytes = if size > bound.next_multiple_of(crate::segment::BLOCK_SIZE as u64) {
        Err(Unusable::Damaged(snapshot_file::SnapshotDamage::TooLarge(
            size,
        )))
    } else {
        read_whole(&file, path).await.map_err(Unusable::Io)
    };
    let _ = file.close().await;
    let bytes = bytes?;
    let len = snapshot_file::decode(&bytes, offset)?.len();
    Ok(bytes.slice(SNAPSHOT_HEADER_SIZE..SNAPSHOT_HEADER_SIZE + len))
}
