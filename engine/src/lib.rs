//! shardlog's storage engine: the partition log on disk. No network.
//!
//! ```text
//! DATA/<topic>/<partition>/
//!     00000000000000000000.log        segment: Kafka v2 record batches (batch.rs)
//!     00000000000000000000.index      sparse offset -> position, written when sealed
//!     00000000000000000000.timeindex  sparse timestamp -> position, written when sealed
//!     00000000000000052811.log        the active segment, preallocated in steps, O_DIRECT
//!     checkpoint                      high watermark + leader-epoch history
//! ```
//! [`PartitionLog`] owns one such directory; [`Storage`] is its only I/O seam, with
//! [`DmaStorage`] (glommio, io_uring) and [`SimStorage`] (in memory, crashable).
//! See the README for the tour and DESIGN.md for the architecture.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod dir_lock;
mod dma_storage;
pub mod error;
pub mod ids;
pub mod index_file;
mod log_maintenance;
mod log_open;
pub mod offset_index;
mod partition_log;
pub mod preflight;
pub mod record;
pub mod recovery;
pub mod retention;
pub mod segment;
mod signal;
pub mod storage;
mod storage_sim;
pub mod tail_cache;
pub mod time_index;

pub use config::{EngineConfig, FlushPolicy};
pub use dir_lock::DirLock;
pub use dma_storage::{DmaStorage, DmaStorageFile, warm_iopoll_probe};
pub use error::{Error, Result};
pub use ids::{LeaderEpoch, Offset, PartitionId, SegmentId, TimestampMs};
pub use partition_log::{
    Appended, LogStats, PartitionLog, PendingAppend, ReadBatches, SegmentInfo,
};
pub use storage::{OpenMode, Storage, StorageFile};
pub use storage_sim::{SimFile, SimStorage};
