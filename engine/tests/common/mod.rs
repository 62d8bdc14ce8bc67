//! Shared by the engine tests that drive real DMA files: where their directories go and
//! a glommio executor to run them on.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use shardlog_engine::batch;
use shardlog_engine::{
    DmaStorage, EngineConfig, LeaderEpoch, Offset, PartitionLog, warm_iopoll_probe,
};

/// `$SHARDLOG_TEST_DIR` (O_DIRECT needs a real filesystem), else `target/shardlog-test`.
pub fn test_root() -> PathBuf {
    std::env::var_os("SHARDLOG_TEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/shardlog-test"),
        PathBuf::from,
    )
}

/// Runs `test` on a glommio executor with `dir` (created) as its directory.
pub fn on_executor<F, Fut>(dir: PathBuf, test: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::fs::create_dir_all(&dir).expect("test dir");
    if let Err(e) = shardlog_engine::preflight::preflight(&dir) {
        panic!(
            "glommio tests need io_uring, memlock >= 512 KiB and O_DIRECT under {}: {e}",
            dir.display()
        );
    }
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            warm_iopoll_probe(&dir).await.expect("iopoll probe");
            test(dir).await;
        })
        .expect("executor")
        .join()
        .expect("executor thread");
}

/// Runs `test` on an executor with a new log (DMA files, `config`) at `topic/0` of a
/// fresh temporary directory under [`test_root`]; `test` gets that partition directory
/// and the log.
#[allow(dead_code, reason = "recovery.rs opens its logs itself")]
pub fn on_fresh_log<F, Fut>(config: EngineConfig, test: F)
where
    F: FnOnce(PathBuf, PartitionLog<DmaStorage>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    std::fs::create_dir_all(test_root()).expect("test root");
    let tmp = tempfile::tempdir_in(test_root()).expect("temp dir");
    on_executor(tmp.path().to_path_buf(), move |dir| async move {
        let pdir = dir.join("topic/0");
        let log = PartitionLog::open(DmaStorage, &pdir, config)
            .await
            .expect("open");
        test(pdir, log).await;
    });
}

/// Appends the batch `bytes` in epoch 1; returns its base offset and its bytes as stored
/// (base offset and epoch patched in), to compare with what the log reads back.
#[allow(dead_code, reason = "recovery.rs appends its own way")]
pub async fn append_stored(
    log: &PartitionLog<DmaStorage>,
    mut bytes: Vec<u8>,
) -> (Offset, Vec<u8>) {
    let appended = log
        .append(BytesMut::from(&bytes[..]), LeaderEpoch(1))
        .await
        .expect("append");
    batch::patch_base(&mut bytes, appended.base_offset, LeaderEpoch(1));
    (appended.base_offset, bytes)
}
