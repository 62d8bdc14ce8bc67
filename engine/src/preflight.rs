//! Start-up checks, each failing with the fix to apply: io_uring available, locked-memory
//! limit high enough for glommio, and a data directory whose filesystem supports O_DIRECT.
//! Warned about, not refused: a locked-memory limit below `io_memory`, and a data
//! directory on a filesystem mounted with online discard.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// glommio refuses to start an executor below this RLIMIT_MEMLOCK.
pub const MEMLOCK_MIN_BYTES: u64 = 512 << 10;

/// What the checks found that is worth a warning but not a refusal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// RLIMIT_MEMLOCK in bytes (`None`: unlimited).
    pub memlock_bytes: Option<u64>,
    /// Whether CAP_IPC_LOCK lets io_uring register buffers beyond the limit.
    pub can_lock_beyond_limit: bool,
    /// The mount point of the data directory's filesystem, if it is mounted with online
    /// discard (`-o discard`).
    pub online_discard: Option<PathBuf>,
}

impl PreflightReport {
    /// Warns when glommio cannot lock `io_memory` bytes per executor: it then runs without
    /// registered buffers (slower, still correct).
    pub fn warn_if_memlock_below(&self, io_memory: usize) {
        if self
            .memlock_bytes
            .is_some_and(|limit| limit < io_memory as u64)
            && !self.can_lock_beyond_limit
        {
            tracing::warn!(
                memlock = ?self.memlock_bytes,
                io_memory,
                "locked-memory limit below io_memory: glommio runs without registered \
                 buffers (raise `ulimit -l` for full speed)"
            );
        }
    }

    /// Warns when the data directory's filesystem discards freed blocks online: every
    /// segment retention deletes is then trimmed as it is freed, and appends stalled
    /// meanwhile where it was measured (ext4, issue 15).
    pub fn warn_if_online_discard(&self) {
        if let Some(mount) = &self.online_discard {
            tracing::warn!(
                mount = %mount.display(),
                "the data directory's filesystem is mounted with `discard`: the segments \
                 retention deletes are trimmed as they are freed, and appends stall meanwhile \
                 (0.1% of them for 160 ms and more, measured on ext4); mount it without \
                 `discard` and trim periodically (fstrim.timer)"
            );
        }
    }
}

/// Runs every check against `data_dir` (created if missing).
pub fn preflight(data_dir: &Path) -> Result<PreflightReport> {
    check_io_uring()?;
    let mut report = check_memlock()?;
    check_o_direct(data_dir)?;
    report.online_discard = online_discard_mount(data_dir);
    Ok(report)
}

/// The mount point of the filesystem holding `dir` if it is mounted with online discard;
/// `None` if not, or if `/proc/self/mountinfo` cannot tell.
#[must_use]
pub fn online_discard_mount(dir: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    discard_mount_in(&mountinfo, &dir)
}

/// The mount holding a directory, as `/proc/self/mountinfo` lists it.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    /// Mounted with online discard: among the mount's own options or its superblock's
    /// (ext4 lists it there).
    discard: bool,
}

/// [`online_discard_mount`] on the text of a mountinfo file.
fn discard_mount_in(mountinfo: &str, dir: &Path) -> Option<PathBuf> {
    mount_holding(mountinfo, dir).and_then(|mount| mount.discard.then_some(mount.point))
}

/// The mount holding `dir`: the one with the longest mount point above it (the last one
/// listed, where mounts stack).
fn mount_holding(mountinfo: &str, dir: &Path) -> Option<Mount> {
    let mut holding: Option<Mount> = None;
    for line in mountinfo.lines() {
        // `ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER_OPTIONS`
        let Some((mount, superblock)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = mount.split(' ').skip(4);
        let (Some(point), Some(options)) = (fields.next(), fields.next()) else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        let deeper = holding
            .as_ref()
            .is_none_or(|held| point.as_os_str().len() >= held.point.as_os_str().len());
        if !dir.starts_with(&point) || !deeper {
            continue;
        }
        let super_options = superblock.split(' ').nth(2).unwrap_or("");
        let discard = options
            .split(',')
            .chain(super_options.split(','))
            .any(|option| option == "discard");
        holding = Some(Mount { point, discard });
    }
    holding
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let mut bytes = field.as_bytes().iter();
    let mut out = Vec::with_capacity(field.len());
    while let Some(&byte) = bytes.next() {
        let rest = bytes.as_slice();
        let escaped = rest
            .get(..3)
            .filter(|_| byte == b'\\')
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match escaped {
            Some(unescaped) => {
                out.push(unescaped);
                bytes.nth(2);
            }
            None => out.push(byte),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Below this many open files a server warns at start: each connection, segment and
/// index holds one.
pub const NOFILE_LOW: u64 = 4096;

/// RLIMIT_NOFILE after `raise_nofile_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (an unlimited hard limit: to
/// `fs.nr_open`, the most the kernel allows), logs the result at info, and warns when
/// it stays below `NOFILE_LOW`. Call it before any thread starts: every thread shares it.
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20)
    } else {
        limit.rlim_max
    };
    if target > limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit.rlim_cur = target;
        } else {
            tracing::warn!(
                soft = before,
                hard = limit.rlim_max,
                error = %std::io::Error::last_os_error(),
                "could not raise the open-files limit"
            );
        }
    }
    let result = NofileLimit {
        before,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    };
    tracing::info!(
        before,
        soft = result.soft,
        hard = result.hard,
        "open-files limit"
    );
    if result.soft < NOFILE_LOW {
        tracing::warn!(
            soft = result.soft,
            "open-files limit below {NOFILE_LOW}: connections and segments may run out of \
             file descriptors (EMFILE); raise the hard limit (`ulimit -Hn`, LimitNOFILE= in \
             a systemd unit, --ulimit nofile= for a container)"
        );
    }
    Ok(result)
}

fn check_io_uring() -> Result<()> {
    io_uring::IoUring::new(2)
        .map(drop)
        .map_err(|e| Error::Preflight {
            check: "io_uring",
            detail: e.to_string(),
            fix: "run on Linux >= 5.8 with io_uring enabled (sysctl kernel.io_uring_disabled=0; \
              in a container, allow io_uring_setup in the seccomp profile)",
        })
}

fn check_memlock() -> Result<PreflightReport> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut limit) };
    if rc != 0 {
        return Err(Error::Preflight {
            check: "RLIMIT_MEMLOCK",
            detail: std::io::Error::last_os_error().to_string(),
            fix: "check the process limits (ulimit -l)",
        });
    }
    let memlock = (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur);
    if memlock.is_some_and(|bytes| bytes < MEMLOCK_MIN_BYTES) {
        return Err(Error::Preflight {
            check: "RLIMIT_MEMLOCK",
            detail: format!(
                "locked-memory limit is {} KiB, glommio needs 512 KiB",
                memlock.unwrap_or(0) >> 10
            ),
            fix: "raise it: `ulimit -l 8192` in the shell, LimitMEMLOCK=8M in a systemd unit, \
                  or --ulimit memlock=8388608 for a container",
        });
    }
    Ok(PreflightReport {
        memlock_bytes: memlock,
        can_lock_beyond_limit: has_cap_ipc_lock(),
        online_discard: None,
    })
}

fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn check_o_direct(data_dir: &Path) -> Result<()> {
    let fail = |detail: String| Error::Preflight {
        check: "O_DIRECT on the data directory",
        detail,
        fix: "put --data-dir on a filesystem that supports O_DIRECT (ext4, xfs, btrfs); \
              tmpfs and some overlay filesystems do not",
    };
    std::fs::create_dir_all(data_dir).map_err(|e| fail(format!("{}: {e}", data_dir.display())))?;
    let probe = data_dir.join(".o_direct-probe");
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    opened
        .map(drop)
        .map_err(|e| fail(format!("{}: {e}", data_dir.display())))
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;

    #[test]
    fn passes_on_a_real_filesystem() {
        let root = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/shardlog-test"
        ));
        std::fs::create_dir_all(&root).unwrap();
        let dir = tempfile::tempdir_in(root).unwrap();
        let report = preflight(dir.path()).unwrap();
        assert!(report.memlock_bytes.is_none_or(|b| b >= MEMLOCK_MIN_BYTES));
    }

    #[test]
    fn raises_the_open_files_limit_to_the_hard_one() {
        let limit = raise_nofile_limit().unwrap();
        assert!(limit.soft >= limit.before);
        if limit.hard != libc::RLIM_INFINITY {
            assert_eq!(limit.soft, limit.hard);
        }
    }

    /// Lines as a kernel writes them: the root mounted with discard, a data disk without
    /// it, a mount over part of it with discard again, and a point with a space.
    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard,resv_strict
30 22 254:16 / /data rw,noatime shared:2 - xfs /dev/vdb rw,attr2,inode64,noquota
31 30 254:32 / /data/fast rw,noatime shared:3 - ext4 /dev/vdc rw,discard
32 22 0:40 / /mnt/with\\040space rw,discard shared:4 - tmpfs tmpfs rw
33 22 0:41 / /proc rw,nosuid - proc proc rw
";

    #[test]
    fn finds_online_discard_on_the_filesystem_holding_the_directory() {
        let found = |dir: &str| discard_mount_in(MOUNTINFO, Path::new(dir));
        assert_eq!(found("/var/lib/shardlog"), Some(PathBuf::from("/")));
        assert_eq!(found("/data/shardlog"), None);
        assert_eq!(found("/data"), None);
        assert_eq!(
            found("/data/fast/shardlog"),
            Some(PathBuf::from("/data/fast"))
        );
        assert_eq!(
            found("/data/fastest"),
            None,
            "a path prefix is not a parent"
        );
        assert_eq!(
            found("/mnt/with space/d"),
            Some(PathBuf::from("/mnt/with space"))
        );
        assert_eq!(discard_mount_in("garbage\n\n - x", Path::new("/")), None);
    }

    #[test]
    fn finds_the_mount_holding_a_directory_of_this_machine() {
        let dir = std::env::temp_dir().canonicalize().unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mount_holding(&mountinfo, &dir).expect("a mount holds the temp dir");
        assert!(
            dir.starts_with(&mount.point),
            "{mount:?} for {}",
            dir.display()
        );
        assert_eq!(
            online_discard_mount(&dir),
            mount.discard.then_some(mount.point)
        );
    }

    #[test]
    fn names_the_fix_when_the_directory_is_unusable() {
        let err = check_o_direct(Path::new("/proc/self/no-such-dir")).unwrap_err();
        assert!(err.to_string().contains("Fix: put --data-dir"), "{err}");
    }
}
