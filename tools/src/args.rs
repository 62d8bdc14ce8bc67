//! The command line of `shardlog` (clap derive). Two kinds of subcommands:
//! - online (`topic`, `produce`, `consume`, `cluster`, `node`, `group`, `acl`; arguments in `args/online.rs`): talk
//!   to running `shardlogd` brokers over the wire protocol;
//! - offline (`dump`, `verify`, `stats`, `repair`, `export`, `import`): read a data
//!   directory with plain file I/O; the ones that write (`repair --apply`, `import`) take
//!   its lock and refuse one a running `shardlogd` holds.

mod online;

pub use online::{
    Acks, AclArgs, AclBindingArgs, AclCommand, BrokerArgs, ClusterArgs, ClusterCommand,
    ConsumeArgs, ConsumeFrom, GroupArgs, GroupCommand, GroupNameArgs, GroupResetArgs, NodeArgs,
    NodeCommand, OutputFormat, PartitionArgs, PartitionCommand, PartitionReassignArgs, ProduceArgs,
    ResetTo, TopicArgs, TopicCommand, TopicCreateArgs, TopicDeleteArgs, TopicNameArgs, UserArgs,
    UserCommand,
};

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success (verify: no problems found; repair: nothing to do, or everything repaired)
  1  problems found or a request failed (verify: any finding; repair: repairs needed but
     --apply not given, or problems left that need manual work; online commands: a server
     error such as an unknown topic, records that failed, a broker not live)
  2  usage error, I/O error or connection error (missing directory, unreadable file, bad
     input, brokers unreachable)";

/// shardlog's operator CLI: create, list, describe and delete topics, produce and consume
/// records (alone or in a consumer group), show the cluster's brokers and the consumer
/// groups on running brokers; offline, inspect, verify, repair, back up and restore
/// partition logs on disk (repair --apply and import refuse a
/// data directory a running shardlogd holds; the others may read it).
#[derive(Debug, Parser)]
#[command(name = "shardlog", version, after_help = EXIT_CODES)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe or delete topics on the brokers.
    #[command(after_help = EXIT_CODES)]
    Topic(TopicArgs),
    /// Send records read from stdin lines (`key<TAB>value` with --keyed) to a topic.
    #[command(after_help = EXIT_CODES)]
    Produce(ProduceArgs),
    /// Print a topic's records, one value per line, in offset order per partition.
    #[command(after_help = EXIT_CODES)]
    Consume(ConsumeArgs),
    /// Show the cluster (controller and brokers), or rebalance its replicas.
    #[command(after_help = EXIT_CODES)]
    Cluster(ClusterArgs),
    /// Move a partition's replicas to other nodes (reassign).
    #[command(after_help = EXIT_CODES)]
    Partition(PartitionArgs),
    /// Decommission a node (drain its replicas to the others).
    #[command(after_help = EXIT_CODES)]
    Node(NodeArgs),
    /// Create, delete or list SASL users (for brokers run with `--authentication sasl`).
    #[command(after_help = EXIT_CODES)]
    User(UserArgs),
    /// Add, remove or list ACLs (who may do what to which topic, group or the cluster;
    /// enforced by brokers running with `--authorization on`).
    #[command(after_help = EXIT_CODES)]
    Acl(AclArgs),
    /// List consumer groups, describe one (members, committed offsets, lag), or reset its
    /// committed offsets.
    #[command(after_help = EXIT_CODES)]
    Group(GroupArgs),
    /// Print batches and records of a segment file or a partition directory.
    #[command(after_help = EXIT_CODES)]
    Dump(DumpArgs),
    /// Check every batch's CRC, offset continuity and the indexes of every partition.
    #[command(after_help = EXIT_CODES)]
    Verify(DirArgs),
    /// Per partition: segments, bytes, records, offset range and time range.
    #[command(after_help = EXIT_CODES)]
    Stats(DirArgs),
    /// Print a repair plan (cut torn tails, rebuild indexes, set damaged data aside);
    /// act on it only with --apply.
    #[command(after_help = EXIT_CODES)]
    Repair(RepairArgs),
    /// Write a topic (settings and every partition) or one partition as JSON lines
    /// (backup), offsets preserved; it may run beside a live shardlogd.
    #[command(after_help = EXIT_CODES)]
    Export(ExportArgs),
    /// Restore what export wrote: a whole topic into a data directory (served by the next
    /// shardlogd started on it), or one partition directory.
    #[command(after_help = EXIT_CODES)]
    Import(ImportArgs),
}

/// Arguments of `dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// A segment file (`<20 digits>.log`) or a partition directory.
    pub path: PathBuf,
    /// Skip records below this offset.
    #[arg(long)]
    pub from_offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// One JSON object per line (`"type"`: `batch`, `record` or `stop`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `verify` and `stats`.
#[derive(Debug, clap::Args)]
pub struct DirArgs {
    /// A data directory (`DIR/<topic>/<partition>/`) or one partition directory.
    pub dir: PathBuf,
}

/// Arguments of `repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// A data directory (`DIR/<topic>/<partition>/`) or one partition directory.
    pub dir: PathBuf,
    /// Carry out the plan (without it, repair only prints the plan and changes nothing).
    #[arg(long)]
    pub apply: bool,
}

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A topic directory (`DATA/<topic>`, with its topic.json): the whole topic with its
    /// settings. Or a partition directory (`DATA/<topic>/<partition>`): that partition.
    pub dir: PathBuf,
    /// Write here instead of stdout (the file must not exist).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// For the export of a whole topic: the data directory to restore it into (created if
    /// missing; `DIR/<topic>` must not exist). For the export of one partition: the
    /// partition directory to create (it must not exist or be empty).
    pub dir: PathBuf,
    /// Read JSON lines from here instead of stdin.
    #[arg(long)]
    pub input: Option<PathBuf>,
}
