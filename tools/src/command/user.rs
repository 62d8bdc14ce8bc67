//! `shardlog user create NAME [--mechanism M] [--iterations N] [--new-password-stdin]`,
//! `shardlog user delete NAME`, `shardlog user list`: SASL users, kept in the
//! controller's replicated metadata. `create` derives the SCRAM credential here (a random
//! salt; the password never leaves this process) and sends it to the controller leader;
//! it also sets the password of a user that exists. `list` prints one line per user: its
//! name, then its mechanisms, tab-separated, sorted by name.

use shardlog_net::client::sasl_mechanism;

use crate::Outcome;
use crate::args::{UserArgs, UserCommand};
use crate::command::topic::print_lines;
use crate::error::ToolError;
use crate::online::{self, read_password_line};

/// Runs `user`.
pub fn run(args: UserArgs) -> Result<Outcome, ToolError> {
    match args.command {
        UserCommand::Create(args) => {
            let password = if args.new_password_stdin {
                read_password_line()?
            } else {
                std::env::var("SHARDLOG_NEW_PASSWORD").map_err(|_| {
                    ToolError::Usage(
                        "no password for the new user: pass --new-password-stdin or set \
                         SHARDLOG_NEW_PASSWORD"
                            .into(),
                    )
                })?
            };
            let mechanism = sasl_mechanism(&args.mechanism).map_err(ToolError::Usage)?;
            let (name, iterations) = (args.name, args.iterations);
            online::run(&args.brokers, move |client| async move {
                let said = client
                    .upsert_user(&name, &password, mechanism, iterations)
                    .await
                    .map_err(ToolError::request(format!("create user {name}")))?;
                print_lines([said])?;
                Ok(Outcome::Clean)
            })
        }
        UserCommand::Delete(args) => {
            let name = args.name;
            online::run(&args.brokers, move |client| async move {
                let said = client
                    .delete_user(&name)
                    .await
                    .map_err(ToolError::request(format!("delete user {name}")))?;
                print_lines([said])?;
                Ok(Outcome::Clean)
            })
        }
        UserCommand::List(brokers) => online::run(&brokers, |client| async move {
            let users = client
                .users()
                .await
                .map_err(ToolError::request("list users"))?;
            let lines = users
                .into_iter()
                .map(|u| format!("{}\t{}", u.name, u.mechanisms.join(",")));
            print_lines(lines)?;
            Ok(Outcome::Clean)
        }),
    }
}
