//! The workspace's tidy check (TigerBeetle `tidy.zig`): banned file names, TODOs without an
//! issue number, files without a `//!` header, and blocking calls (`std::fs`,
//! `thread::sleep`) in code that runs on a shard's executor. It lives in the engine crate
//! because every other crate depends on the engine, so it always runs.

use std::path::{Path, PathBuf};

/// Engine files allowed to block: start-up checks and the data directory's lock run before
/// any executor (or in offline tools), and the DMA storage runs `std::fs` only inside
/// glommio's blocking pool.
const BLOCKING_ALLOWED: &[&str] = &[
    "engine/src/preflight.rs",
    "engine/src/dir_lock.rs",
    "engine/src/dma_storage.rs",
];
/// Directories whose code runs on a shard's executor.
const EXECUTOR_CODE: &[&str] = &["engine/src"];
const BANNED_STEMS: &[&str] = &[
    "utils", "util", "common", "helpers", "helper", "misc", "types", "manager",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "fixtures" | "corpus" | "artifacts" | "vendor"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// A TODO/FIXME/XXX marker (a whole word) not followed by an issue reference like `(#12)`.
fn untracked_marker(line: &str) -> Option<&'static str> {
    ["TODO", "FIXME", "XXX"].into_iter().find(|marker| {
        line.match_indices(marker).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = &line[at + marker.len()..];
            let word = before.is_none_or(|c| !c.is_alphanumeric())
                && after.chars().next().is_none_or(|c| !c.is_alphanumeric());
            word && !after.trim_start_matches(['(', ':', ' ']).starts_with('#')
        })
    })
}

#[test]
fn markers_need_issue_numbers() {
    assert_eq!(untracked_marker("// TODO: later"), Some("TODO"));
    assert_eq!(untracked_marker("// TODO(#12): later"), None);
    assert_eq!(untracked_marker("// TODOs are tracked"), None);
    assert_eq!(untracked_marker("// FIXME #3"), None);
}

#[test]
fn tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let mut problems = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if BANNED_STEMS.contains(&stem.as_str()) {
            problems.push(format!("{rel}: banned file name (say what the file holds)"));
        }
        if stem.chars().last().is_some_and(|c| c.is_ascii_digit())
            && stem.chars().any(|c| c.is_ascii_alphabetic())
        {
            problems.push(format!("{rel}: numbered copy"));
        }
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{rel}: no //! header saying what the file owns"));
        }
        // This file names the markers it looks for.
        let lines = if rel == "engine/tests/tidy.rs" {
            ""
        } else {
            text.as_str()
        };
        for (i, line) in lines.lines().enumerate() {
            if let Some(marker) = untracked_marker(line) {
                problems.push(format!(
                    "{rel}:{}: {marker} without an issue number (#N)",
                    i + 1
                ));
            }
        }
        let executor = EXECUTOR_CODE.iter().any(|dir| rel.starts_with(dir));
        if executor && !BLOCKING_ALLOWED.contains(&rel.as_str()) {
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for banned in ["std::fs", "thread::sleep"] {
                if code.contains(banned) {
                    problems.push(format!("{rel}: {banned} in executor code"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "tidy found:\n{}", problems.join("\n"));
}
