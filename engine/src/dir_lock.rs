//! One writer per data directory: an exclusive `flock(2)` on `DIR/shardlog.lock`.
//!
//! Whoever changes a data directory takes the lock first and keeps it while it works:
//! `shardlogd` for its whole life (before any cleanup or recovery touches a file), and
//! `shardlog repair --apply` and `shardlog import` while they write. A second process is
//! refused with the holder's pid, which the holder writes into the file as decimal text
//! followed by a newline. Read-only tools (dump, verify, stats, export) take no lock.
//!
//! Why `flock` on a file that stays: the kernel drops the lock when its holder exits, even
//! by SIGKILL, so a crash never leaves a directory locked and no stale-pid guessing is
//! needed. The file is never removed, because removing it would let a third process lock
//! a fresh file while a second still holds the old one. The pid inside is only for the
//! message; a refused process reads it after its `flock` failed, so it may read an empty
//! file for a moment while the holder is writing it ("pid unknown").
//!
//! Blocking `std::fs`: it runs before the executors start (the server) or in an offline
//! tool, never on a shard.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "shardlog.lock";

/// A held lock on a data directory; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct DirLock {
    /// Kept open: the lock lives as long as this descriptor.
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process, or fails with
    /// [`Error::DirectoryLocked`] naming the holder's pid, without changing anything.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        // No truncation on open: the file may be the holder's, with its pid inside.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(&path))?;
        // SAFETY: flock(2) on a descriptor we own; it touches no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::DirectoryLocked {
                    dir: dir.to_path_buf(),
                    holder: holder_pid(&mut file),
                });
            }
            return Err(Error::io(&path)(error));
        }
        file.set_len(0).map_err(Error::io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(Error::io(&path))?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The directory this lock holds.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid the holder wrote, if the file holds one yet.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// How [`Error::DirectoryLocked`] names the holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "process {pid}"),
            None => f.write_str("another process (pid unknown)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock locks belong to the open file description: a second open in the same
        // process conflicts like another process would.
        let refused = DirLock::acquire(dir.path()).unwrap_err();
        match &refused {
            Error::DirectoryLocked { holder, .. } => {
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("{other}"),
        }
        let message = refused.to_string();
        assert!(
            message.contains(&format!("process {}", std::process::id())),
            "{message}"
        );
        assert_eq!(first.dir(), dir.path());
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        assert!(matches!(DirLock::acquire(&missing), Err(Error::Io { .. })));
    }
}
