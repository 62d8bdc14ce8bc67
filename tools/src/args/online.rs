//! Arguments of the online subcommands (`topic`, `produce`, `consume`, `cluster`, `group`,
//! `user`):
//! the ones that talk to running brokers. Every one takes `--brokers HOST:PORT[,HOST:PORT...]`
//! (or the `SHARDLOG_BROKERS` environment variable).

use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;

use shardlog_net::client::{ClientConfig, ClientTls, ClientTlsFiles};

use super::EXIT_CODES;
use crate::error::ToolError;

/// The brokers to bootstrap from, and how to reach them and who to authenticate as.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Brokers to connect to: `HOST:PORT[,HOST:PORT...]`.
    #[arg(long, env = "SHARDLOG_BROKERS", value_name = "HOST:PORT,...", value_parser = NonEmptyStringValueParser::new())]
    pub brokers: String,
    /// Authenticate as this user (SASL SCRAM), for brokers run with `--authentication
    /// sasl`. The password comes from `--password-stdin` or `SHARDLOG_PASSWORD`.
    #[arg(long, env = "SHARDLOG_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// Read the password of `--user` from the first line of stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// The SASL mechanism of `--user`.
    #[arg(long, default_value = "SCRAM-SHA-256", value_parser = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
    pub sasl_mechanism: String,
    /// Connect over TLS, trusting brokers whose certificate this CA (PEM) signed for the
    /// host dialled (brokers started with --tls-cert).
    #[arg(long, env = "SHARDLOG_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: this client's certificate (PEM), for brokers that ask for one
    /// (shardlogd --tls-client-ca); needs --tls-key.
    #[arg(
        long,
        env = "SHARDLOG_TLS_CERT",
        value_name = "PEM",
        requires = "tls_ca"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "SHARDLOG_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// With --tls-ca: the name the brokers' certificates must carry, instead of the host
    /// of each address dialled.
    #[arg(
        long,
        env = "SHARDLOG_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    pub tls_server_name: Option<String>,
}

impl BrokerArgs {
    /// `base` with TLS set when --tls-ca is given (the files read now).
    pub fn client_config(&self, base: ClientConfig) -> Result<ClientConfig, ToolError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(base);
        };
        let files = ClientTlsFiles {
            ca: ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        };
        let tls = ClientTls::load(&files).map_err(|e| ToolError::Usage(format!("TLS: {e}")))?;
        Ok(ClientConfig {
            tls: Some(tls),
            ..base
        })
    }
}

/// Arguments of `topic`.
#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    /// Which topic operation.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// The `topic` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = EXIT_CODES)]
    Create(TopicCreateArgs),
    /// Print the names of all topics, one per line, sorted.
    #[command(after_help = EXIT_CODES)]
    List(BrokerArgs),
    /// Print a topic's partitions: leader, epoch, replicas, ISR, log start, high watermark.
    #[command(after_help = EXIT_CODES)]
    Describe(TopicNameArgs),
    /// Delete a topic and all its records.
    #[command(after_help = EXIT_CODES)]
    Delete(TopicDeleteArgs),
}

/// Arguments of `topic create`.
#[derive(Debug, clap::Args)]
pub struct TopicCreateArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Topic name: 1 to 249 of `[a-zA-Z0-9._-]`.
    pub name: String,
    /// Number of partitions.
    #[arg(long)]
    pub partitions: NonZeroU32,
    /// Replicas per partition (default: the server's, which is 1 on a single node).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub replication_factor: Option<u16>,
    /// Smallest ISR that acknowledges `--acks all` (`min.insync.replicas`; default: the
    /// server's). At most the replication factor.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub min_insync: Option<u16>,
    /// Segment size in bytes (`segment.bytes`; default: the server's).
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Bytes kept per partition before old segments are deleted (`retention.bytes`).
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Age after which old segments are deleted, in ms (`retention.ms`).
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Succeed (exit 0) if the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

/// Arguments of `topic describe`.
#[derive(Debug, clap::Args)]
pub struct TopicNameArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Topic name.
    pub name: String,
}

/// Arguments of `topic delete`.
#[derive(Debug, clap::Args)]
pub struct TopicDeleteArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Topic name.
    pub name: String,
    /// Succeed (exit 0) if the topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
}

/// Arguments of `group`.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// Which group operation.
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// The `group` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Print every consumer group: `group<TAB>state<TAB>protocol_type`, sorted.
    #[command(after_help = EXIT_CODES)]
    List(BrokerArgs),
    /// Print a group's state, then per partition its committed offset, high watermark,
    /// lag and the member that reads it.
    #[command(after_help = EXIT_CODES)]
    Describe(GroupNameArgs),
    /// Set a group's committed offsets for a topic (refused while the group has members).
    #[command(after_help = EXIT_CODES)]
    ResetOffsets(GroupResetArgs),
}

/// Arguments of `group describe`.
#[derive(Debug, clap::Args)]
pub struct GroupNameArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Group id.
    pub group: String,
}

/// Where `group reset-offsets` moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's log start.
    Earliest,
    /// Each partition's high watermark.
    Latest,
    /// This offset in every partition (moved into `[log_start, high_watermark]`).
    Offset(u64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;

    fn from_str(s: &str) -> Result<ResetTo, String> {
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ => s
                .parse()
                .map(ResetTo::Offset)
                .map_err(|_| format!("`{s}` is not earliest, latest or an offset")),
        }
    }
}

/// Arguments of `group reset-offsets`.
#[derive(Debug, clap::Args)]
pub struct GroupResetArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Group id.
    pub group: String,
    /// The topic whose partitions' offsets to set (all of its partitions).
    #[arg(long)]
    pub topic: String,
    /// The new offsets: `earliest`, `latest` or an offset.
    #[arg(long, value_name = "earliest|latest|OFFSET")]
    pub to: ResetTo,
    /// Print the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Which cluster operation.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Print the controller and every broker (node id, address, live, replicas and
    /// leaderships held, serving/draining/drained) as one broker sees them; exit 1 if a
    /// broker is not live.
    #[command(after_help = EXIT_CODES)]
    Status(BrokerArgs),
    /// Move replicas so that every node holds about as many as the others (a node added
    /// to the cluster gets its share); the moves run in the background (see `cluster
    /// status` and `topic describe`).
    #[command(after_help = EXIT_CODES)]
    Rebalance(ClusterRebalanceArgs),
}

/// Arguments of `cluster rebalance`.
#[derive(Debug, clap::Args)]
pub struct ClusterRebalanceArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Only print how many replicas a rebalance would move.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Which node operation.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The `node` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Drain a node: every replica it holds moves to the other nodes (each new replica
    /// catches up and joins the ISR before the old one leaves), and it receives no new
    /// ones. `cluster status` shows it `drained` once it holds nothing.
    #[command(after_help = EXIT_CODES)]
    Decommission(NodeDecommissionArgs),
}

/// Arguments of `user`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// Which user operation.
    #[command(subcommand)]
    pub command: UserCommand,
}

/// The `user` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a SASL user, or set its password, for one SCRAM mechanism. The password is
    /// read from `--new-password-stdin` or `SHARDLOG_NEW_PASSWORD`; only the credential
    /// derived from it (salt, iterations, StoredKey, ServerKey) is sent.
    #[command(after_help = EXIT_CODES)]
    Create(UserCreateArgs),
    /// Delete a user (every mechanism).
    #[command(after_help = EXIT_CODES)]
    Delete(UserNameArgs),
    /// Print the users, one per line: name, then its mechanisms (tab-separated).
    #[command(after_help = EXIT_CODES)]
    List(BrokerArgs),
}

/// Arguments of `user create`.
#[derive(Debug, clap::Args)]
pub struct UserCreateArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// The user name: 1 to 128 of `[A-Za-z0-9._@-]`.
    pub name: String,
    /// Read the new password from the first line of stdin (else `SHARDLOG_NEW_PASSWORD`).
    #[arg(long, conflicts_with = "password_stdin")]
    pub new_password_stdin: bool,
    /// The SCRAM mechanism of the credential.
    #[arg(long, default_value = "SCRAM-SHA-256", value_parser = ["SCRAM-SHA-256", "SCRAM-SHA-512"])]
    pub mechanism: String,
    /// Hi's iteration count (4096 to 1048576).
    #[arg(long, default_value_t = 4096)]
    pub iterations: u32,
}

/// Arguments of `user delete`.
#[derive(Debug, clap::Args)]
pub struct UserNameArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// The user name.
    pub name: String,
}

/// Arguments of `node decommission`.
#[derive(Debug, clap::Args)]
pub struct NodeDecommissionArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// The node id.
    pub id: u32,
    /// Take the node back instead: it receives replicas again (those already moved stay
    /// where they are until a rebalance).
    #[arg(long)]
    pub cancel: bool,
}

/// When the producer is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    /// Once the in-sync replicas hold the records.
    All,
    /// Once the leader has written them.
    Leader,
    /// Never: fire and forget (no offsets to report).
    None,
}

/// Arguments of `produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Topic to write to.
    #[arg(long)]
    pub topic: String,
    /// Write every record to this partition. Without it, keyed records go to
    /// murmur2(key) % partitions (Kafka's default partitioner), unkeyed batches round-robin.
    #[arg(long)]
    pub partition: Option<u32>,
    /// When the broker answers.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Each line is `key<TAB>value` (split at the first TAB); a line without a TAB fails.
    #[arg(long)]
    pub keyed: bool,
    /// Print `partition<TAB>offset` on stdout for each acknowledged record, in input order
    /// (nothing for a record that failed). Not with `--acks none`.
    #[arg(long)]
    pub report_offsets: bool,
    /// Most lines per batch; a batch is also sent as soon as stdin has no more lines ready.
    #[arg(long, default_value = "1000")]
    pub batch_records: NonZeroU32,
    /// Most batches waiting for their answer at once (pipelined on one connection).
    #[arg(long, default_value = "8")]
    pub inflight: NonZeroU32,
}

/// Where `consume` starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The log start.
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    /// This offset.
    Offset(u64),
}

impl std::str::FromStr for ConsumeFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<ConsumeFrom, String> {
        match s {
            "beginning" => Ok(ConsumeFrom::Beginning),
            "end" => Ok(ConsumeFrom::End),
            _ => s
                .parse()
                .map(ConsumeFrom::Offset)
                .map_err(|_| format!("`{s}` is not beginning, end or an offset")),
        }
    }
}

/// How `consume` prints a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The value alone.
    Value,
    /// `partition<TAB>offset<TAB>timestamp_ms<TAB>key<TAB>value` (bytes that are not UTF-8
    /// shown lossily; a value with a TAB or newline is ambiguous).
    Full,
    /// One JSON object per line: partition, offset, timestamp, key, value, headers; bytes
    /// that are not UTF-8 as base64 in `key_b64` / `value_b64`. Unambiguous.
    Json,
}

/// Arguments of `consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Read only this partition (default: all, one after the other without --follow).
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<u32>,
    /// Read as a member of this consumer group: the group's members share the topic's
    /// partitions, each partition starts at the group's committed offset (at --from where
    /// it has none), and what was printed is committed every --commit-interval-ms and on
    /// exit. Implies --follow.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// With --group: how often to commit what was printed, in ms.
    #[arg(long, default_value = "1000", value_name = "MS", requires = "group")]
    pub commit_interval_ms: NonZeroU32,
    /// With --group: a member silent this long (killed, hung) is removed from the group
    /// and its partitions go to the others, in ms.
    #[arg(long, default_value = "10000", value_name = "MS", requires = "group")]
    pub session_timeout_ms: NonZeroU32,
    /// Where to start in each partition (with --group: each partition the group has no
    /// committed offset for): `beginning`, `end` or an offset.
    #[arg(long, default_value = "beginning", value_name = "beginning|end|OFFSET")]
    pub from: ConsumeFrom,
    /// Keep waiting for new records at the tail (until --count, SIGINT/SIGTERM or a closed
    /// stdout). Without it, each partition is read up to the high watermark seen at start.
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// What to print per record.
    #[arg(long, value_enum, default_value_t = OutputFormat::Value)]
    pub format: OutputFormat,
}

/// Arguments of `partition`.
#[derive(Debug, clap::Args)]
pub struct PartitionArgs {
    /// Which partition operation.
    #[command(subcommand)]
    pub command: PartitionCommand,
}

/// The `partition` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PartitionCommand {
    /// Move a partition's replicas to other nodes: the new ones catch up (throttled) and
    /// join the in-sync replicas, then the old ones leave; the leader moves if it leaves.
    /// The replicas before the move as --replicas cancel a move in progress.
    #[command(after_help = EXIT_CODES)]
    Reassign(PartitionReassignArgs),
}

/// Arguments of `partition reassign`.
#[derive(Debug, clap::Args)]
pub struct PartitionReassignArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Topic name.
    #[arg(long)]
    pub topic: String,
    /// Partition number.
    #[arg(long)]
    pub partition: u32,
    /// The target replicas, node ids, preferred leader first: `2,3,4`.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub replicas: Vec<u32>,
    /// Bytes per second the leader ships to the replicas being added while they catch up,
    /// for this move (0: unthrottled). Default: the leader node's --move-throttle-bytes.
    #[arg(long, value_name = "BYTES")]
    pub throttle_bytes: Option<u64>,
    /// Block until the move is over (every target replica in sync, the old ones gone),
    /// printing its progress once a second; exit 1 if it is not over within --timeout.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds. Default 600.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Arguments of `acl`.
#[derive(Debug, clap::Args)]
pub struct AclArgs {
    /// Which ACL operation.
    #[command(subcommand)]
    pub command: AclCommand,
}

/// The `acl` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Add an ACL: allow (or with --deny, deny) a principal an operation on a topic, a
    /// group or the cluster. Takes effect on every broker once the controller applied
    /// it; enforced only on brokers running with `--authorization on`.
    #[command(after_help = EXIT_CODES)]
    Add(AclBindingArgs),
    /// Remove an ACL: the one with exactly these arguments.
    #[command(after_help = EXIT_CODES)]
    Remove(AclBindingArgs),
    /// Print every ACL (or a principal's), one per line.
    #[command(after_help = EXIT_CODES)]
    List(AclListArgs),
}

/// The binding `acl add` and `acl remove` name.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("resource").required(true).args(["topic", "group", "cluster"])))]
pub struct AclBindingArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Who: `User:NAME`, or `User:*` for every user (`User:ANONYMOUS`: connections that
    /// did not authenticate).
    #[arg(long)]
    pub principal: String,
    /// What: read, write, create, delete, describe, alter or all. Read, write, delete
    /// and alter also allow describe.
    #[arg(long)]
    pub operation: String,
    /// On this topic (`*`: every topic), or with --prefix every topic starting with it.
    #[arg(long)]
    pub topic: Option<String>,
    /// On this consumer group (`*`: every group), or with --prefix every group starting
    /// with it.
    #[arg(long)]
    pub group: Option<String>,
    /// On the cluster: create (any topic), alter (reassign, decommission, rebalance,
    /// ACLs), describe (list reassignments, groups, ACLs), write (idempotent producers).
    #[arg(long)]
    pub cluster: bool,
    /// The topic or group name is a prefix.
    #[arg(long, conflicts_with = "cluster")]
    pub prefix: bool,
    /// Deny instead of allow (a deny wins over every allow).
    #[arg(long)]
    pub deny: bool,
}

/// Arguments of `acl list`.
#[derive(Debug, clap::Args)]
pub struct AclListArgs {
    /// Where to connect.
    #[command(flatten)]
    pub brokers: BrokerArgs,
    /// Only this principal's ACLs (`User:NAME`).
    #[arg(long)]
    pub principal: Option<String>,
}
