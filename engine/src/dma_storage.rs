//! `DmaStorage`: [`Storage`] on glommio DMA files, O_DIRECT through io_uring. Every glommio
//! file call lives here, so a fix or a swap of the runtime stays in this file.
//!
//! Must be used from a glommio executor whose first DMA file was opened by
//! [`warm_iopoll_probe`] (glommio#605/#670: otherwise every DMA read fails with EOPNOTSUPP).

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::flush_buffers::FlushBuffer;
use crate::segment::BLOCK_SIZE;
use crate::storage::{OpenMode, Storage, StorageFile, assert_block_aligned, shared_range};

/// The real storage: glommio DMA files.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

/// A glommio DMA file.
#[derive(Debug)]
pub struct DmaStorageFile {
    file: DmaFile,
    /// The same file opened again O_DSYNC, for [`StorageFile::write_durable_at`].
    durable: RefCell<DurableFd>,
}

/// The O_DSYNC descriptor of a [`DmaStorageFile`]: opened on first use (only the active
/// segment of a log under `flush=always` needs one) and closed when the segment is sealed
/// (one more descriptor per sealed segment would add up).
#[derive(Debug)]
enum DurableFd {
    NotOpened,
    /// Shared with the writes in flight, so that sealing never waits on one.
    Open(Rc<DmaFile>),
    /// It could not be opened: durable writes write and fdatasync.
    Unavailable,
}

fn glommio_err(err: glommio::GlommioError<()>) -> io::Error {
    err.into()
}

fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> impl Future<Output = io::Result<T>> {
    // Directory listing and creation have no io_uring form in glommio; its blocking pool
    // keeps them off the executor thread.
    glommio::executor().spawn_blocking(f)
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<DmaStorageFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if mode == OpenMode::CreateNew {
            options.create_new(true);
        }
        let file = options.dma_open(path).await.map_err(glommio_err)?;
        assert!(
            file.alignment() <= BLOCK_SIZE as u64,
            "device alignment {}",
            file.alignment()
        );
        Ok(DmaStorageFile {
            file,
            durable: RefCell::new(DurableFd::NotOpened),
        })
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking_io(move || std::fs::create_dir_all(path)).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_path_buf();
        blocking_io(move || {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(glommio_err)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to).await.map_err(glommio_err)
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // glommio's `Directory::open` calls openat(-1, path) rather than AT_FDCWD, so a
        // relative path fails with EBADF: hand it an absolute one.
        let path = std::path::absolute(path)?;
        let dir = glommio::io::Directory::open(&path)
            .await
            .map_err(glommio_err)?;
        dir.sync().await.map_err(glommio_err)?;
        dir.close().await.map_err(glommio_err)
    }
}

impl DmaStorageFile {
    /// Writes all of `buffer` at `pos`; if `durable`, made durable by itself (O_DSYNC, or
    /// a write and an fdatasync where there is no O_DSYNC descriptor).
    async fn write_dma(&self, pos: u64, buffer: DmaBuffer, durable: bool) -> io::Result<()> {
        let durable_fd = if durable {
            self.durable_fd().await
        } else {
            None
        };
        let file = durable_fd.as_deref().unwrap_or(&self.file);
        let len = buffer.len();
        let written = file.write_at(buffer, pos).await.map_err(glommio_err)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at {pos}"),
            ));
        }
        if durable && durable_fd.is_none() {
            self.sync_data().await?;
        }
        Ok(())
    }

    /// The O_DSYNC descriptor, opened on first use; `None` if there is none.
    async fn durable_fd(&self) -> Option<Rc<DmaFile>> {
        if matches!(*self.durable.borrow(), DurableFd::NotOpened) {
            let opened = self.open_durable().await;
            let mut durable = self.durable.borrow_mut();
            // Two first writes may both have opened one: the later one's closes on drop.
            if matches!(*durable, DurableFd::NotOpened) {
                *durable = opened.map_or(DurableFd::Unavailable, |file| {
                    DurableFd::Open(Rc::new(file))
                });
            }
        }
        match &*self.durable.borrow() {
            DurableFd::Open(durable) => Some(Rc::clone(durable)),
            DurableFd::NotOpened | DurableFd::Unavailable => None,
        }
    }

    /// Opens this file again, O_DSYNC, through `/proc/self/fd` (its path may have
    /// changed: a segment is created under a temporary name and renamed); `None`, with a
    /// warning, if that fails.
    async fn open_durable(&self) -> Option<DmaFile> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        let mut options = OpenOptions::new();
        options.read(true).write(true).custom_flags(libc::O_DSYNC);
        match options.dma_open(&path).await {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(error = %e, "no O_DSYNC descriptor; flushes fdatasync instead");
                None
            }
        }
    }
}

impl StorageFile for DmaStorageFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let result = self.file.read_at(pos, len).await.map_err(glommio_err)?;
        Ok(Bytes::copy_from_slice(&result))
    }

    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.write_dma(pos, copy_to_dma(&self.file, pos, data), false)
            .await
    }

    /// One O_DSYNC write: durable when it completes, without an fdatasync after it.
    /// io_uring hands an fdatasync to a kernel worker thread, and a log under
    /// `flush=always` synced after every flush, per partition: on a loaded machine those
    /// hand-offs made three partitions on a node take more CPU per record than one, and
    /// replicated throughput fell with every partition added.
    async fn write_durable_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.write_dma(pos, copy_to_dma(&self.file, pos, data), true)
            .await
    }

    /// Writes straight from the flush buffer: glommio holds a share of it until the
    /// write completes, even if this future is dropped first.
    async fn write_shared_at(
        &self,
        pos: u64,
        buffer: &Rc<FlushBuffer>,
        range: Range<usize>,
        durable: bool,
    ) -> io::Result<()> {
        let data = shared_range(buffer, range.clone())?;
        assert_block_aligned(pos, data.len());
        assert_eq!(
            data.as_ptr() as usize % BLOCK_SIZE,
            0,
            "unaligned write buffer"
        );
        let dma = DmaBuffer::from_owner(SharedRange {
            buffer: Rc::clone(buffer),
            range,
        });
        self.write_dma(pos, dma, durable).await
    }

    async fn end_durable_writes(&self) -> io::Result<()> {
        // Back to not opened: a truncation that cuts into a sealed segment makes it the
        // active one again, and its next durable write opens a descriptor again.
        let released = std::mem::replace(&mut *self.durable.borrow_mut(), DurableFd::NotOpened);
        match released {
            // A write still in flight holds a clone: the descriptor closes when it drops.
            DurableFd::Open(durable) => match Rc::try_unwrap(durable) {
                Ok(durable) => durable.close().await.map_err(glommio_err),
                Err(_) => Ok(()),
            },
            DurableFd::NotOpened | DurableFd::Unavailable => Ok(()),
        }
    }

    async fn write_zeros(&self, pos: u64, len: usize) -> io::Result<()> {
        assert_block_aligned(pos, len);
        // DMA buffers are not zeroed (they may hold an earlier write's bytes).
        let mut buffer = self.file.alloc_dma_buffer(len);
        buffer.as_bytes_mut().fill(0);
        self.write_dma(pos, buffer, false).await
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(glommio_err)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(glommio_err)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(glommio_err)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(glommio_err)
    }

    async fn close(self) -> io::Result<()> {
        let closed = self.end_durable_writes().await;
        self.file.close().await.map_err(glommio_err)?;
        closed
    }
}

/// Opens one non-empty DMA file in `dir` so that glommio's per-thread iopoll probe hits the
/// device and turns the poll ring off (glommio#605/#670). Call it first in every executor
/// that will read DMA files, before any other DMA file is opened.
pub async fn warm_iopoll_probe(dir: &Path) -> io::Result<()> {
    let probe: PathBuf = dir.join(".iopoll-probe");
    let tmp = dir.join(format!(".iopoll-probe.tmp{}", glommio::executor().id()));
    blocking_io(move || {
        std::fs::create_dir_all(probe.parent().unwrap_or(Path::new(".")))?;
        if std::fs::metadata(&probe).map(|m| m.len()).unwrap_or(0) < BLOCK_SIZE as u64 {
            std::fs::write(&tmp, vec![0u8; BLOCK_SIZE])?;
            std::fs::rename(&tmp, &probe)?;
        }
        Ok(())
    })
    .await?;
    let file = DmaFile::open(dir.join(".iopoll-probe"))
        .await
        .map_err(glommio_err)?;
    file.close().await.map_err(glommio_err)
}

/// A range of a flush buffer, as the bytes of a [`DmaBuffer`] that shares the buffer.
struct SharedRange {
    buffer: Rc<FlushBuffer>,
    range: Range<usize>,
}

impl AsRef<[u8]> for SharedRange {
    fn as_ref(&self) -> &[u8] {
        // In bounds: `write_shared_at` checked before making this.
        &self.buffer[self.range.clone()]
    }
}

/// A DMA buffer holding a copy of `data`, to be written at `pos` (both block-aligned).
/// Only the small writes of recovery, truncation and metadata files are copied: flushes
/// write from their own buffer (`write_shared_at`).
fn copy_to_dma(file: &DmaFile, pos: u64, data: &[u8]) -> DmaBuffer {
    assert_block_aligned(pos, data.len());
    let mut buffer = file.alloc_dma_buffer(data.len());
    buffer.as_bytes_mut().copy_from_slice(data);
    buffer
}
