//! The server's allocator: mimalloc, told to give memory back the way glibc's malloc did.
//!
//! glibc's malloc took about a fifth of a shard's CPU at one small record per request
//! (README, "Issue 15, a sixth sitting"). mimalloc's defaults kept more memory than glibc
//! for a node whose tail caches churn: with 80 partitions each filling its cache, the node
//! grew 364 to 376 MiB through a 256 MiB budget against glibc's 275 to 293 (README,
//! "Issue 15, a seventh sitting"). Two causes, measured apart:
//! - transparent huge pages: mimalloc asks for them on its arenas (`MADV_HUGEPAGE`), so a
//!   sparsely used heap is resident 2 MiB at a time. The `no_thp` feature (workspace
//!   `Cargo.toml`) leaves them out.
//! - the purge delay: mimalloc v3 holds freed pages for 1 s before returning them, and a
//!   shard that has gone quiet never purges. 100 ms returns them while the load still runs.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay`: `libmimalloc-sys` does not name it. Its default
/// is 1,000 ms, which the test below checks, so a renumbering fails there, not in the field.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long a freed page waits before it goes back to the OS. Shorter cost throughput:
/// batched produce ran about 14% slower at 10 ms and 23% at 0 (with arena eager commit
/// off as well); at 100 ms it stayed inside the spread.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets the allocator's options, unless the environment sets them (`MIMALLOC_PURGE_DELAY`,
/// read by mimalloc itself). Call first in `main`, before other threads start: mimalloc's
/// option setters are not thread safe.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` writes one option slot; `main` calls this before any other
    // thread exists, so nothing reads the slot meanwhile.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads one option slot; no test in this binary sets options.
        let default = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                default, 1_000,
                "option {PURGE_DELAY} is not mimalloc's purge delay"
            );
        }
    }
}
