//! `shardlog node decommission ID [--cancel] --brokers B`: marks the node draining in the
//! controller (or takes it back); the controller leader then moves every replica it holds
//! to the other nodes, each through a reassignment (the new replica catches up and joins
//! the ISR before the old one leaves). Prints the server's answer; progress shows in
//! `cluster status` (the node's replica count, `drained` once it holds nothing).

use crate::Outcome;
use crate::args::{NodeArgs, NodeCommand};
use crate::command::topic::print_lines;
use crate::error::ToolError;
use crate::online;

/// Runs `node`.
pub fn run(args: NodeArgs) -> Result<Outcome, ToolError> {
    match args.command {
        NodeCommand::Decommission(args) => {
            let (id, draining) = (args.id, !args.cancel);
            online::run(&args.brokers, move |client| async move {
                let said = client
                    .drain_node(id, draining)
                    .await
                    .map_err(ToolError::request(format!("decommission node {id}")))?;
                print_lines([said])?;
                Ok(Outcome::Clean)
            })
        }
    }
}
