//! The buffers appends fill and flushes write from, kept per thread between flushes.
//!
//! A flush takes a log's pending bytes and leaves it a fresh buffer for the next appends.
//! Freed and reallocated per flush, a buffer of megabytes is fresh pages every time, and
//! faulting them in cost appends of 1 MiB more CPU than copying their bytes (the engine
//! alone wrote 40% more with the buffers kept). Kept per log, a node with thousands of
//! partitions would hold each one's largest burst for good. So buffers past 1 MiB are
//! kept per thread (a shard's logs share them), within `KEPT_BYTES_MAX`; a log keeps one
//! smaller buffer of its own (`LogState::spare`) for the small flushes of small appends.
//!
//! A buffer starts on a block boundary, as O_DIRECT needs, so a flush writes straight
//! from it ([`crate::storage::StorageFile::write_shared_at`]): an appended batch is copied
//! once, into the buffer, and never again on its way to the disk.

use std::cell::RefCell;

use aligned_vec::{AVec, ConstAlign};

use crate::segment::BLOCK_SIZE;

/// Pending bytes of a log, and a flush's bytes: block-aligned memory.
pub type FlushBuffer = AVec<u8, ConstAlign<BLOCK_SIZE>>;

/// Zeros that pad a flush to whole blocks.
static ZEROS: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];

/// At most this many bytes of buffers are kept per thread.
const KEPT_BYTES_MAX: usize = 8 << 20;
/// Smaller buffers are not kept: they cost malloc little, and no page faults.
const KEPT_BYTES_MIN: usize = 64 << 10;

thread_local! {
    static KEPT: RefCell<Vec<FlushBuffer>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer that has allocated nothing yet.
pub(crate) fn empty() -> FlushBuffer {
    // The argument is the alignment at run time, which `ConstAlign` ignores.
    FlushBuffer::new(BLOCK_SIZE)
}

/// An empty buffer with room for `len` bytes.
pub(crate) fn with_capacity(len: usize) -> FlushBuffer {
    FlushBuffer::with_capacity(BLOCK_SIZE, len)
}

/// A buffer holding a copy of `bytes`.
pub(crate) fn copy_of(bytes: &[u8]) -> FlushBuffer {
    let mut buffer = with_capacity(bytes.len());
    buffer.extend_from_slice(bytes);
    buffer
}

/// Pads `buffer` with zeros to a whole number of blocks.
pub(crate) fn pad_to_block(buffer: &mut FlushBuffer) {
    let padding = buffer.len().next_multiple_of(BLOCK_SIZE) - buffer.len();
    buffer.extend_from_slice(&ZEROS[..padding]);
}

/// An empty buffer, for about `len` bytes: the smallest kept one with room for them, else
/// the largest kept one, else a new one (grown as appends need; a new one of `len` bytes
/// up front held more memory per log than it saved in reallocations).
pub(crate) fn take(len: usize) -> FlushBuffer {
    KEPT.with_borrow_mut(|kept| {
        let roomy = (0..kept.len())
            .filter(|&at| kept[at].capacity() >= len)
            .min_by_key(|&at| kept[at].capacity());
        let at = roomy.or_else(|| (0..kept.len()).max_by_key(|&at| kept[at].capacity()))?;
        Some(kept.swap_remove(at))
    })
    .unwrap_or_else(empty)
}

/// Keeps `buffer` (emptied) for a later `take` if it is large enough and there is room.
pub(crate) fn give_back(mut buffer: FlushBuffer) {
    if buffer.capacity() < KEPT_BYTES_MIN {
        return;
    }
    buffer.clear();
    KEPT.with_borrow_mut(|kept| {
        let bytes: usize = kept.iter().map(FlushBuffer::capacity).sum();
        if bytes + buffer.capacity() <= KEPT_BYTES_MAX {
            kept.push(buffer);
        }
    });
}

/// Bytes of buffers kept on this thread.
#[cfg(test)]
fn kept_bytes() -> usize {
    KEPT.with_borrow(|kept| kept.iter().map(FlushBuffer::capacity).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_within_the_budget() {
        assert_eq!(
            take(1000).capacity(),
            0,
            "nothing kept yet: a new, empty one"
        );
        give_back(with_capacity(1000));
        assert_eq!(kept_bytes(), 0, "too small to keep");
        let first = with_capacity(1 << 20);
        let address = first.as_ptr();
        give_back(first);
        let again = take(1000);
        assert_eq!(
            again.as_ptr(),
            address,
            "a kept buffer serves a smaller take"
        );
        give_back(again);
        let again = take(2 << 20);
        assert_eq!(
            again.as_ptr(),
            address,
            "the largest kept one serves a larger take"
        );
        assert!(again.is_empty());
        assert_eq!(again.as_ptr() as usize % BLOCK_SIZE, 0, "block-aligned");
        // Over the budget: the excess is freed, never kept.
        for _ in 0..40 {
            give_back(with_capacity(1 << 20));
        }
        assert!(kept_bytes() <= KEPT_BYTES_MAX, "{}", kept_bytes());
        assert!(
            kept_bytes() > KEPT_BYTES_MAX - (1 << 20),
            "{}",
            kept_bytes()
        );
    }
}
