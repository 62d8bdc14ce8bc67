//! One module per subcommand (online: topic, produce, consume (`consume_group` for
//! `--group`), cluster, node, group, user; offline: the rest);
//! [`run`] dispatches to them.

mod acl;
mod cluster;
mod consume;
mod consume_group;
mod dump;
mod export;
mod group;
mod import;
mod node;
mod partition;
mod produce;
mod repair;
mod stats;
mod topic;
mod user;
mod verify;

use crate::Outcome;
use crate::args::Command;
use crate::error::ToolError;

/// Runs one subcommand.
pub fn run(command: Command) -> Result<Outcome, ToolError> {
    match command {
        Command::Topic(args) => topic::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Partition(args) => partition::run(args),
        Command::Group(args) => group::run(args),
        Command::Node(args) => node::run(args),
        Command::User(args) => user::run(args),
        Command::Acl(args) => acl::run(args),
        Command::Dump(args) => dump::run(&args),
        Command::Verify(args) => verify::run(&args.dir),
        Command::Stats(args) => stats::run(&args.dir),
        Command::Repair(args) => repair::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Import(args) => import::run(&args),
    }
}
