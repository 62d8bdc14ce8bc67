//! A small ext4 filesystem on a loop device, for storage-fault tests: a data directory
//! that fills up for real (ENOSPC from the kernel, O_DIRECT works, unlike tmpfs).
//!
//! `SmallDisk::mount` needs root (or CAP_SYS_ADMIN), `mkfs.ext4` and a free loop device;
//! when any of that is missing it returns the reason, and the test prints it and returns
//! (a skip, never a pass that proves something). Dropping it unmounts (lazily if a
//! process still holds a file) and removes the image, whatever the test did.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted loop filesystem; unmounted and removed when dropped.
pub struct SmallDisk {
    /// Where it is mounted.
    mount: PathBuf,
    image: PathBuf,
    _root: tempfile::TempDir,
}

impl SmallDisk {
    /// A fresh ext4 filesystem of `mib` MiB (no blocks reserved for root), mounted under
    /// the test root; `Err` says why it could not be (the caller skips).
    pub fn mount(mib: u64) -> Result<SmallDisk, String> {
        let root = tempfile::Builder::new()
            .prefix("small-disk-")
            .tempdir_in(shardlog_net::testing::test_root().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let image = root.path().join("disk.img");
        let mount = root.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .map_err(|e| format!("creating {}: {e}", image.display()))?;
        run("mkfs.ext4", &["-q", "-m", "0", "-F", path(&image)])?;
        run("mount", &["-o", "loop", path(&image), path(&mount)])?;
        Ok(SmallDisk {
            mount,
            image,
            _root: root,
        })
    }

    /// The mounted filesystem's root.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Fills the filesystem with `FILLER` until the kernel says ENOSPC, and syncs it:
    /// what is left is at most a few blocks. Returns the bytes written.
    pub fn fill(&self) -> u64 {
        let path = self.filler();
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .expect("filler file");
        let chunk = vec![0xa5u8; 64 << 10];
        let mut written = 0;
        for size in [64 << 10, 4096, 512, 1] {
            loop {
                match file.write(&chunk[..size]) {
                    Ok(n) if n > 0 => written += n as u64,
                    _ => break,
                }
            }
            // Delayed allocation: space is only known taken once written back.
            let _ = file.sync_all();
        }
        written
    }

    /// Removes the filler: the space is free again.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("removing the filler");
        let _ = File::open(&self.mount).and_then(|d| d.sync_all());
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("FILLER")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if run("umount", &[path(&self.mount)]).is_err() {
            // A process (a server the test could not stop) still holds a file.
            let _ = run("umount", &["-l", path(&self.mount)]);
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 test path")
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
