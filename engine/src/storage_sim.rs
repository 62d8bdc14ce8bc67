//! `SimStorage`: an in-memory [`Storage`] for tests and simulation. It keeps, per file,
//! the bytes as the OS shows them and the bytes as they are on disk, and, per directory
//! entry, whether its creation or rename is durable. [`SimStorage::crash`] throws away what
//! was never synced: a file keeps its durable bytes plus a prefix of its unsynced
//! operations, the last of which may be torn at any byte. [`SimStorage::flip_bit`] damages
//! data at rest, and [`SimStorage::fail_syncs`] makes syncs and writes fail.
//!
//! Single-threaded (`Rc`), like the shard that owns a log.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::storage::{OpenMode, Storage, StorageFile, assert_block_aligned};

#[derive(Clone, Debug)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct SimFileData {
    /// What reads see.
    visible: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Operations since the last sync, in order.
    unsynced: Vec<Op>,
}

impl SimFileData {
    fn apply(bytes: &mut Vec<u8>, op: &Op) {
        match op {
            Op::Write { pos, data } => {
                let pos = usize::try_from(*pos).expect("sim file position fits usize");
                if bytes.len() < pos + data.len() {
                    bytes.resize(pos + data.len(), 0);
                }
                bytes[pos..pos + data.len()].copy_from_slice(data);
            }
            Op::SetLen(len) => bytes.resize(usize::try_from(*len).expect("sim length"), 0),
        }
    }
}

#[derive(Debug, Default)]
struct SimFs {
    /// Directory entries as the OS shows them.
    names: BTreeMap<PathBuf, Rc<RefCell<SimFileData>>>,
    /// Directory entries that survive a crash.
    durable_names: BTreeMap<PathBuf, Rc<RefCell<SimFileData>>>,
    dirs: std::collections::BTreeSet<PathBuf>,
    fail_syncs: bool,
    /// File syncs held back (see [`SimStorage::hold_syncs`]).
    syncs_held: Hold,
    /// Directory syncs held back (see [`SimStorage::hold_dir_syncs`]).
    dir_syncs_held: Hold,
    syncs: u64,
    writes: u64,
}

/// Operations held back while set (a slow disk), and the wakers of those waiting.
#[derive(Debug, Default)]
struct Hold {
    on: bool,
    waiting: Vec<std::task::Waker>,
}

impl Hold {
    /// Sets the hold; releasing it returns the waiters, to wake once the borrow is over.
    fn set(&mut self, on: bool) -> Vec<std::task::Waker> {
        self.on = on;
        if on {
            Vec::new()
        } else {
            std::mem::take(&mut self.waiting)
        }
    }

    /// Ready unless held; held, it wakes `cx` on release.
    fn poll(&mut self, cx: &std::task::Context<'_>) -> std::task::Poll<()> {
        if self.on {
            self.waiting.push(cx.waker().clone());
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }
}

/// In-memory storage that can crash. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct SimStorage {
    fs: Rc<RefCell<SimFs>>,
}

/// An open file of [`SimStorage`].
#[derive(Debug)]
pub struct SimFile {
    data: Rc<RefCell<SimFileData>>,
    fs: Rc<RefCell<SimFs>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

/// A small deterministic PRNG (splitmix64), so a crash is replayed by its seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimStorage {
    /// Empty storage.
    #[must_use]
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Simulates power loss: every file falls back to its durable bytes plus, chosen by
    /// `seed`, a prefix of its unsynced operations, the next one torn at a random byte.
    /// Directory entries fall back to those made durable by `sync_dir`.
    pub fn crash(&self, seed: u64) {
        let mut fs = self.fs.borrow_mut();
        let mut rng = seed;
        fs.names = fs.durable_names.clone();
        let files: Vec<_> = fs.names.values().cloned().collect();
        for file in files {
            let mut file = file.borrow_mut();
            let mut bytes = file.durable.clone();
            let ops = std::mem::take(&mut file.unsynced);
            let keep = usize::try_from(splitmix(&mut rng) % (ops.len() as u64 + 1)).unwrap_or(0);
            for op in &ops[..keep] {
                SimFileData::apply(&mut bytes, op);
            }
            if let Some(Op::Write { pos, data }) = ops.get(keep) {
                let torn =
                    usize::try_from(splitmix(&mut rng) % (data.len() as u64 + 1)).unwrap_or(0);
                SimFileData::apply(
                    &mut bytes,
                    &Op::Write {
                        pos: *pos,
                        data: data[..torn].to_vec(),
                    },
                );
            }
            file.visible = bytes.clone();
            file.durable = bytes;
        }
    }

    /// A copy of this storage as a process that was killed leaves it: the OS keeps every
    /// write and directory entry it was handed, synced or not. The copy shares nothing
    /// with this one, so the crash this one may simulate next is not affected.
    #[must_use]
    pub fn after_process_kill(&self) -> SimStorage {
        let fs = self.fs.borrow();
        let names: BTreeMap<PathBuf, Rc<RefCell<SimFileData>>> = fs
            .names
            .iter()
            .map(|(path, file)| {
                let visible = file.borrow().visible.clone();
                let data = SimFileData {
                    durable: visible.clone(),
                    visible,
                    unsynced: Vec::new(),
                };
                (path.clone(), Rc::new(RefCell::new(data)))
            })
            .collect();
        SimStorage {
            fs: Rc::new(RefCell::new(SimFs {
                durable_names: names.clone(),
                names,
                dirs: fs.dirs.clone(),
                ..SimFs::default()
            })),
        }
    }

    /// Flips one bit of a file, on disk and as seen.
    pub fn flip_bit(&self, path: &Path, pos: u64, bit: u8) -> io::Result<()> {
        let fs = self.fs.borrow();
        let file = fs.names.get(path).ok_or_else(|| not_found(path))?;
        let mut file = file.borrow_mut();
        let file = &mut *file;
        let pos = usize::try_from(pos).map_err(|_| io::Error::other("position"))?;
        for bytes in [&mut file.visible, &mut file.durable] {
            if let Some(byte) = bytes.get_mut(pos) {
                *byte ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// Replaces a file's bytes on disk and as seen (test set-up: zeroed or cut files).
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let fs = self.fs.borrow();
        let file = fs.names.get(path).ok_or_else(|| not_found(path))?;
        let mut file = file.borrow_mut();
        file.visible.clone_from(&bytes);
        file.durable = bytes;
        file.unsynced.clear();
        Ok(())
    }

    /// A file's bytes as seen.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let fs = self.fs.borrow();
        let file = fs.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(file.borrow().visible.clone())
    }

    /// Removes a file at once, durably (an operator deleting it while the log is closed).
    pub fn delete(&self, path: &Path) {
        let mut fs = self.fs.borrow_mut();
        fs.names.remove(path);
        fs.durable_names.remove(path);
    }

    /// From now on every write and sync fails with an I/O error.
    pub fn fail_syncs(&self, fail: bool) {
        self.fs.borrow_mut().fail_syncs = fail;
    }

    /// While `hold`, every `sync_data` waits (a slow disk): a test can stop or drop what
    /// awaits a sync in flight. Releasing lets the waiting syncs go on.
    pub fn hold_syncs(&self, hold: bool) {
        let waiting = self.fs.borrow_mut().syncs_held.set(hold);
        waiting.into_iter().for_each(std::task::Waker::wake);
    }

    /// Whether a `sync_data` is waiting on [`SimStorage::hold_syncs`].
    #[must_use]
    pub fn sync_held(&self) -> bool {
        !self.fs.borrow().syncs_held.waiting.is_empty()
    }

    /// While `hold`, every `sync_dir` waits (a slow directory sync, as after deleting a
    /// large file); releasing lets the waiting ones go on.
    pub fn hold_dir_syncs(&self, hold: bool) {
        let waiting = self.fs.borrow_mut().dir_syncs_held.set(hold);
        waiting.into_iter().for_each(std::task::Waker::wake);
    }

    /// Whether a `sync_dir` is waiting on [`SimStorage::hold_dir_syncs`].
    #[must_use]
    pub fn dir_sync_held(&self) -> bool {
        !self.fs.borrow().dir_syncs_held.waiting.is_empty()
    }

    /// Successful `sync_data` calls so far.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        self.fs.borrow().syncs
    }

    /// Successful `write_at` calls so far.
    #[must_use]
    pub fn write_count(&self) -> u64 {
        self.fs.borrow().writes
    }

    /// Paths of all files, sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<PathBuf> {
        self.fs.borrow().names.keys().cloned().collect()
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let mut fs = self.fs.borrow_mut();
        let data = match (mode, fs.names.get(path)) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ));
            }
            (OpenMode::CreateNew, None) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !fs.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                let data = Rc::new(RefCell::new(SimFileData::default()));
                fs.names.insert(path.to_path_buf(), data.clone());
                data
            }
            (OpenMode::ReadWrite, Some(data)) => data.clone(),
            (OpenMode::ReadWrite, None) => return Err(not_found(path)),
        };
        Ok(SimFile {
            data,
            fs: self.fs.clone(),
        })
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        for dir in path.ancestors() {
            fs.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let fs = self.fs.borrow();
        if !fs.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(fs
            .names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        fs.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = self.fs.borrow_mut();
        let data = fs.names.remove(from).ok_or_else(|| not_found(from))?;
        fs.names.insert(to.to_path_buf(), data);
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::future::poll_fn(|cx| self.fs.borrow_mut().dir_syncs_held.poll(cx)).await;
        let mut fs = self.fs.borrow_mut();
        if fs.fail_syncs {
            return Err(io::Error::other("injected sync failure"));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(path);
        fs.durable_names.retain(|p, _| !in_dir(p));
        let entries: Vec<_> = fs
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect();
        fs.durable_names.extend(entries);
        Ok(())
    }
}

impl SimFile {
    fn push(&self, op: Op) -> io::Result<()> {
        if self.fs.borrow().fail_syncs {
            return Err(io::Error::other("injected write failure"));
        }
        let mut data = self.data.borrow_mut();
        SimFileData::apply(&mut data.visible, &op);
        data.unsynced.push(op);
        Ok(())
    }
}

impl StorageFile for SimFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let data = self.data.borrow();
        let start = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(data.visible.len());
        let end = start.saturating_add(len).min(data.visible.len());
        Ok(Bytes::copy_from_slice(&data.visible[start..end]))
    }

    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        assert_block_aligned(pos, data.len());
        self.push(Op::Write {
            pos,
            data: data.to_vec(),
        })?;
        self.fs.borrow_mut().writes += 1;
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.fs.borrow_mut().syncs_held.poll(cx)).await;
        if self.fs.borrow().fail_syncs {
            return Err(io::Error::other("injected sync failure"));
        }
        let mut data = self.data.borrow_mut();
        data.durable = data.visible.clone();
        data.unsynced.clear();
        self.fs.borrow_mut().syncs += 1;
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.data.borrow().visible.len() as u64)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.push(Op::SetLen(len))
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        let current = self.data.borrow().visible.len() as u64;
        if len > current {
            self.push(Op::SetLen(len))?;
        }
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}
