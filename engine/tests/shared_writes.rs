//! A flush writes straight from the log's buffer (`StorageFile::write_shared_at` on DMA
//! files): glommio holds a share of the buffer while the write is in flight, instead of
//! a copy of its bytes, and lets go once the write lands, or, for a write whose future
//! was dropped, once the kernel is done with it. The bytes read back as written.
#![cfg(test)]
#![allow(clippy::indexing_slicing)]

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use shardlog_engine::segment::BLOCK_SIZE;
use shardlog_engine::{DmaStorage, DmaStorageFile, FlushBuffer, OpenMode, Storage, StorageFile};

/// Three blocks, each filled with its number plus one.
fn three_blocks() -> Rc<FlushBuffer> {
    let mut buffer = FlushBuffer::with_capacity(BLOCK_SIZE, 3 * BLOCK_SIZE);
    for block in 1..=3u8 {
        buffer.extend_from_slice(&[block; BLOCK_SIZE]);
    }
    Rc::new(buffer)
}

/// A new file `name` in `dir` with `blocks` preallocated.
async fn new_file(dir: &Path, name: &str, blocks: u64) -> DmaStorageFile {
    let file = DmaStorage
        .open(&dir.join(name), OpenMode::CreateNew)
        .await
        .expect("open");
    file.preallocate(blocks * BLOCK_SIZE as u64)
        .await
        .expect("fallocate");
    file
}

/// Polls `future` once; `true` if it is still pending.
async fn poll_once(future: std::pin::Pin<&mut impl Future>) -> bool {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        let pending = future
            .take()
            .is_some_and(|future| future.poll(cx).is_pending());
        Poll::Ready(pending)
    })
    .await
}

#[test]
fn a_flush_buffer_is_written_without_a_copy() {
    let dir = tempfile::tempdir_in(common::test_root().join(".")).expect("temp dir");
    common::on_executor(dir.path().to_path_buf(), |dir| async move {
        for durable in [false, true] {
            let file = new_file(&dir, &format!("segment-{durable}"), 3).await;
            let buffer = three_blocks();
            {
                let mut write =
                    pin!(file.write_shared_at(0, &buffer, BLOCK_SIZE..3 * BLOCK_SIZE, durable));
                assert!(
                    poll_once(write.as_mut()).await,
                    "a write lands on its own turn"
                );
                assert_eq!(
                    Rc::strong_count(&buffer),
                    2,
                    "durable={durable}: the write in flight holds the buffer itself"
                );
                write.await.expect("write");
            }
            assert_eq!(Rc::strong_count(&buffer), 1, "let go once landed");
            let read = file.read_at(0, 3 * BLOCK_SIZE).await.expect("read");
            assert_eq!(&read[..BLOCK_SIZE], &[2; BLOCK_SIZE][..]);
            assert_eq!(&read[BLOCK_SIZE..2 * BLOCK_SIZE], &[3; BLOCK_SIZE][..]);
            assert_eq!(&read[2 * BLOCK_SIZE..], &[0; BLOCK_SIZE][..], "untouched");
            file.close().await.expect("close");
        }
    });
}

#[test]
fn a_dropped_write_keeps_its_buffer_until_the_kernel_is_done() {
    let dir = tempfile::tempdir_in(common::test_root().join(".")).expect("temp dir");
    common::on_executor(dir.path().to_path_buf(), |dir| async move {
        let file = new_file(&dir, "segment", 3).await;
        let buffer = three_blocks();
        {
            let mut write = pin!(file.write_shared_at(0, &buffer, 0..3 * BLOCK_SIZE, false));
            assert!(
                poll_once(write.as_mut()).await,
                "a write lands on its own turn"
            );
        }
        // Dropped once queued: glommio cancels it, and keeps the buffer until the kernel
        // has seen the last of it (at once if it was never submitted, else at the
        // write's completion, whichever way it ends).
        assert_eq!(Rc::strong_count(&buffer), 2, "held past the drop");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Rc::strong_count(&buffer) > 1 {
            assert!(Instant::now() < deadline, "the dropped write never let go");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let bytes = Rc::try_unwrap(buffer).expect("sole owner");
        assert_eq!(bytes.len(), 3 * BLOCK_SIZE, "untouched by the write");
        assert!(
            bytes
                .chunks(BLOCK_SIZE)
                .zip(1u8..)
                .all(|(block, n)| block.iter().all(|&b| b == n))
        );
    });
}

#[test]
fn a_write_past_its_buffer_is_an_error() {
    let dir = tempfile::tempdir_in(common::test_root().join(".")).expect("temp dir");
    common::on_executor(dir.path().to_path_buf(), |dir| async move {
        let file = new_file(&dir, "segment", 1).await;
        let buffer = three_blocks();
        let error = file
            .write_shared_at(0, &buffer, 2 * BLOCK_SIZE..4 * BLOCK_SIZE, false)
            .await
            .expect_err("past the end");
        assert!(error.to_string().contains("past the end"), "{error}");
        assert_eq!(Rc::strong_count(&buffer), 1);
    });
}
