//! Shared by the engine tests that drive real DMA files: where their directories go and
//! a glommio executor to run them on.

use std::path::{Path, PathBuf};

use shardlog_engine::warm_iopoll_probe;

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
