//! The data directory locks the writing subcommands (`repair --apply`, `import`) take, so
//! they never change files under a running `shardlogd` (or each other), and no server
//! starts on the directory while they work. The lock itself is the engine's
//! (`shardlog_engine::dir_lock`): `DATA/shardlog.lock`, held with `flock`.
//!
//! A tool is given a data directory or a partition directory (`DATA/<topic>/<partition>`),
//! so the data directory is the path itself or up to two levels above it. Every one of
//! those that holds a lock file (a server has used it) is locked. A directory without a
//! lock file has never been served, so there is no server to refuse; the tool then locks
//! nothing there, except where it creates the data directory itself (topic import), which
//! it always locks.

use std::path::{Path, PathBuf};

use shardlog_engine::DirLock;
use shardlog_engine::dir_lock::LOCK_FILE;

use crate::error::ToolError;

/// Locks `path` and its parent and grandparent wherever a lock file exists; refused
/// (naming the holder's pid) if any is held. The locks are released when dropped.
pub fn lock_served_ancestors(path: &Path) -> Result<Vec<DirLock>, ToolError> {
    let mut locks = Vec::new();
    for dir in candidates(path) {
        if dir.join(LOCK_FILE).is_file() {
            locks.push(lock(&dir)?);
        }
    }
    Ok(locks)
}

/// Locks the data directory `dir` (it must exist), creating its lock file if needed.
pub fn lock(dir: &Path) -> Result<DirLock, ToolError> {
    DirLock::acquire(dir).map_err(ToolError::DirectoryInUse)
}

/// `path`, its parent and its grandparent, as far as they exist. A relative path is made
/// absolute first, so `shardlog repair 0` inside a topic directory still finds the data
/// directory two levels up.
fn candidates(path: &Path) -> Vec<PathBuf> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute
        .ancestors()
        .take(3)
        .filter(|dir| dir.is_dir())
        .map(Path::to_path_buf)
        .collect()
}
