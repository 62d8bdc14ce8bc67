//! shardlog's storage engine: the partition log on disk. No network.
//!
//! ```text
//! DATA/<topic>/<partition>/
//!     00000000000000000000.log        segment: Kafka v2 record batches (batch.rs)
//!     00000000000000000000.index      sparse offset -> position, written when sealed
//!     00000000000000000000.timeindex  sparse timestamp -> position, written when sealed
//!     00000000000000052811.log        the active segment, preallocated in steps, O_DIRECT
//!     checkpoint                      high watermark + leader-epoch history
//!     00000000000000052811.snapshot   the owner's state as of offset 52811 (producer
//!                                     table, epochs), written at rolls and clean close
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
mod flush_buffers;
pub mod ids;
pub mod index_file;
mod log_maintenance;
mod log_open;
mod log_snapshot;
pub mod offset_index;
mod partition_log;
pub mod preflight;
pub mod record;
pub mod recovery;
pub mod retention;
pub mod segment;
mod signal;
pub mod snapshot_file;
pub mod space_probe;
pub mod storage;
mod storage_sim;
pub mod sync_observer;
pub mod tail_cache;
pub mod time_index;
pub mod zero_fill;

pub use config::{EngineConfig, FlushPolicy};
pub use dir_lock::DirLock;
pub use dma_storage::{DmaStorage, DmaStorageFile, warm_iopoll_probe};
pub use error::{Error, Result};
pub use flush_buffers::FlushBuffer;
pub use ids::{LeaderEpoch, Offset, PartitionId, SegmentId, TimestampMs};
pub use partition_log::{
    Appended, LogStats, PartitionLog, PendingAppend, ReadBatches, SegmentInfo, StopCause,
    is_disk_full,
};
pub use storage::{OpenMode, Storage, StorageFile};
pub use storage_sim::{SimFile, SimStorage};
pub use tail_cache::TailCacheBudget;
