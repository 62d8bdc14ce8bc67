//! Heap allocations of reading one frame off a stream (`wire::read_frame`), counted by a
//! counting global allocator (`common::alloc_count`; this binary holds this one test, so
//! nothing else runs beside it).
//!
//! A batch's data region is read into one buffer of exactly its length. It used to start
//! at 64 KiB and grow to the length, so a batch of 100 x 1 KiB records cost a second
//! allocation and a copy of its first 64 KiB on every read (`finish_grow`, 3 to 5% of
//! the servers' samples under RF=3 batched: README, "Issue 15, a thirteenth sitting").
//! Seen to fail that way: 4 allocations, 168,576 bytes. The figures are printed
//! (`--no-capture`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use shardlog_net::wire;

#[global_allocator]
static ALLOC: common::alloc_count::Counting = common::alloc_count::Counting;

/// A data region as long as a batch of 100 records of 1 KiB, past the first step.
const DATA_BYTES: usize = 103_000;

#[test]
fn a_batch_frame_is_read_with_one_allocation_of_its_data_region() {
    let data: Vec<u8> = (0..DATA_BYTES)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let sent = common::frame(1, 1, 7, &42u64, &data);
    let mut stream = futures::io::Cursor::new(sent);

    let before = common::alloc_count::snapshot();
    let frame = futures::executor::block_on(wire::read_frame(&mut stream))
        .unwrap()
        .unwrap();
    let spent = common::alloc_count::snapshot() - before;

    assert_eq!(&frame.data[..], &data[..]);
    println!(
        "reading a frame of {DATA_BYTES} data bytes: {} allocations, {} bytes",
        spent.allocations, spent.bytes
    );
    // The meta archive's buffer, the data region's, and the small shared header that
    // turning it into a `BytesMut` takes.
    assert!(spent.allocations <= 3, "{spent:?}");
    assert!(
        spent.bytes < (DATA_BYTES + 4096) as u64,
        "{} bytes asked for a data region of {DATA_BYTES}: it grew on the way",
        spent.bytes
    );
}
