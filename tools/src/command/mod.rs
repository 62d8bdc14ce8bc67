//! One module per subcommand; [`run`] dispatches to them.

mod dump;
mod export;
mod import;
mod repair;
mod stats;
mod verify;

use crate::Outcome;
use crate::args::Command;
use crate::error::ToolError;

/// Runs one subcommand.
pub fn run(command: Command) -> Result<Outcome, ToolError> {
    match command {
        Command::Dump(args) => dump::run(&args),
        Command::Verify(args) => verify::run(&args.dir),
        Command::Stats(args) => stats::run(&args.dir),
        Command::Repair(args) => repair::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Import(args) => import::run(&args),
    }
}
