//! Scratch smoke test (to be replaced by model.rs).
use bytes::BytesMut;
use futures::executor::block_on;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::*;
use std::path::Path;

fn batch(i: u64, n: usize) -> BytesMut {
    let mut b = BatchBuilder::new();
    for j in 0..n {
        b.push(TimestampMs(1000 + i as i64), Some(format!("k{i}").as_bytes()), Some(&vec![(i + j as u64) as u8; 300]), &[]);
    }
    BytesMut::from(&b.finish()[..])
}

#[test]
fn append_read_reopen_crash() {
    block_on(async {
        let storage = SimStorage::new();
        let dir = Path::new("/data/t/0");
        let config = EngineConfig { segment_bytes: 64 << 10, ..EngineConfig::default() };
        let log = PartitionLog::open(storage.clone(), dir, config.clone()).await.unwrap();
        let mut ends = vec![];
        for i in 0..500 {
            let a = log.append(batch(i, 3), LeaderEpoch(1)).await.unwrap();
            assert_eq!(a.base_offset, Offset(i * 3));
            ends.push(a.next_offset);
        }
        assert!(log.segments().len() > 5, "{:?}", log.segments().len());
        let r = log.read(Offset(0), 1000).await.unwrap();
        assert!(r.bytes() > 0);
        let mut from = Offset(0);
        let mut count = 0;
        while from < log.log_end() {
            let r = log.read(from, 5000).await.unwrap();
            for (h, _) in r.batches() { assert!(h.base_offset <= from || h.base_offset == from); count += h.record_count; from = h.next_offset(); }
            assert_eq!(r.next_offset, from);
        }
        assert_eq!(count, 1500);
        assert_eq!(log.offset_for_timestamp(TimestampMs(1100)).await.unwrap(), Some(Offset(300)));
        log.close().await.unwrap();
        let log = PartitionLog::open(storage.clone(), dir, config.clone()).await.unwrap();
        assert_eq!(log.log_end(), Offset(1500));
        let r = log.read(Offset(700), 100).await.unwrap();
        assert_eq!(r.batches().next().unwrap().0.base_offset, Offset(699));
        for i in 500..520 { log.append(batch(i, 3), LeaderEpoch(2)).await.unwrap(); }
        storage.crash(7);
        drop(log);
        let log = PartitionLog::open(storage.clone(), dir, config.clone()).await.unwrap();
        assert_eq!(log.log_end(), Offset(1560));
        assert_eq!(log.truncate(Offset(1000)).await.unwrap(), Offset(999));
        assert_eq!(log.log_end(), Offset(999));
        log.append(batch(9, 1), LeaderEpoch(3)).await.unwrap();
        drop(log);
        storage.crash(3);
        let log = PartitionLog::open(storage.clone(), dir, config.clone()).await.unwrap();
        assert_eq!(log.log_end(), Offset(1000));
        assert_eq!(log.checkpoint().epochs.last().unwrap().epoch, LeaderEpoch(3));
    });
}

#[test]
fn dma_roundtrip() {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/shardlog-test"));
    std::fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::tempdir_in(root).unwrap();
    let dir = tmp.path().to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(1 << 20).spawn(move || async move {
        warm_iopoll_probe(&dir).await.unwrap();
        let config = EngineConfig { segment_bytes: 1 << 20, ..EngineConfig::default() };
        let pdir = dir.join("t/0");
        let log = PartitionLog::open(DmaStorage, &pdir, config.clone()).await.unwrap();
        let tasks: Vec<_> = (0..8).map(|t| {
            let log = &log;
            async move { for i in 0..100 { log.append(batch(t * 1000 + i, 2), LeaderEpoch(0)).await.unwrap(); } }
        }).collect();
        futures::future::join_all(tasks).await;
        let stats = log.stats();
        assert_eq!(log.log_end(), Offset(1600));
        assert!(stats.syncs < 800, "{stats:?}");
        eprintln!("{stats:?}");
        log.close().await.unwrap();
        let log = PartitionLog::open(DmaStorage, &pdir, config).await.unwrap();
        assert_eq!(log.log_end(), Offset(1600));
        let mut from = Offset(0);
        while from < log.log_end() { from = log.read(from, 100_000).await.unwrap().next_offset; }
        log.close().await.unwrap();
    }).unwrap().join().unwrap();
}
