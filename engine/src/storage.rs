//! `Storage`, the engine's only I/O seam: the partition log reaches files and directories
//! through it and nothing else. [`crate::DmaStorage`] is the real one (glommio, O_DIRECT,
//! io_uring); [`crate::SimStorage`] is in memory and can crash, tear and flip bits.
//!
//! Writes go to block-aligned positions in block-multiple lengths (the O_DIRECT rule).
//! Nothing written is durable until [`StorageFile::sync_data`] resolves; a directory
//! entry (create, rename, remove) is durable only after [`Storage::sync_dir`].
#![allow(async_fn_in_trait)] // Futures here are !Send by design: one shard owns the log.

use std::io;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

use crate::flush_buffers::FlushBuffer;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create it; fail if it exists. Read and write.
    CreateNew,
    /// Open an existing file for reading and writing.
    ReadWrite,
}

/// Files and directories.
pub trait Storage: Clone + 'static {
    /// An open file.
    type File: StorageFile;

    /// Opens `path`.
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Creates a directory and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory, sorted.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable (fsync of the directory).
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// An open file.
pub trait StorageFile: 'static {
    /// Reads up to `len` bytes at `pos`; fewer at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// Writes `data` at `pos`; both block-aligned.
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Writes `len` zero bytes at `pos`; both block-aligned. The upkeep writes zeros into
    /// preallocated blocks ahead of the appends, which then land on written blocks
    /// (cheaper to fdatasync than unwritten ones); see `zero_fill.rs`.
    async fn write_zeros(&self, pos: u64, len: usize) -> io::Result<()> {
        self.write_at(pos, &vec![0; len]).await
    }
    /// Writes `data` at `pos` (both block-aligned) and returns once it is durable, with
    /// whatever metadata reading it back needs; what other writes left unsynced may stay
    /// so. The default writes, then syncs.
    async fn write_durable_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(pos, data).await?;
        self.sync_data().await
    }
    /// Writes `buffer[range]` at `pos` (both block-aligned), made durable by itself as
    /// [`write_durable_at`](Self::write_durable_at) does if `durable`. `buffer` is a log's
    /// flush: a storage may hold it until the write lands rather than copy its bytes (the
    /// default copies what `write_at` copies).
    async fn write_shared_at(
        &self,
        pos: u64,
        buffer: &Rc<FlushBuffer>,
        range: Range<usize>,
        durable: bool,
    ) -> io::Result<()> {
        let data = shared_range(buffer, range)?;
        if durable {
            self.write_durable_at(pos, data).await
        } else {
            self.write_at(pos, data).await
        }
    }
    /// No durable write will follow (the segment is sealed): let go of what
    /// [`write_durable_at`](Self::write_durable_at) kept open for them (a later durable
    /// write opens it again). The default has nothing to let go.
    async fn end_durable_writes(&self) -> io::Result<()> {
        Ok(())
    }
    /// fdatasync: everything written so far, and the file's length, is on disk.
    async fn sync_data(&self) -> io::Result<()>;
    /// The file's length.
    async fn size(&self) -> io::Result<u64>;
    /// Sets the length to `len` (block-aligned), dropping what lies past it.
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Allocates blocks up to `len`, extending the length; new bytes read as zeros.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Closes the file.
    async fn close(self) -> io::Result<()>;
}

/// The bytes of `buffer[range]`, or an error if the range runs past its end.
pub(crate) fn shared_range(buffer: &FlushBuffer, range: Range<usize>) -> io::Result<&[u8]> {
    buffer
        .get(range)
        .ok_or_else(|| io::Error::other("a write past the end of its buffer"))
}

/// Panics unless a write at `pos` of `len` bytes is block-aligned: the engine only ever
/// writes whole blocks (a local invariant, not input).
pub(crate) fn assert_block_aligned(pos: u64, len: usize) {
    assert!(
        pos % crate::segment::BLOCK_SIZE as u64 == 0,
        "unaligned write position {pos}"
    );
    assert!(
        len % crate::segment::BLOCK_SIZE == 0,
        "unaligned write length {len}"
    );
}
