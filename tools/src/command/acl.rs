//! `shardlog acl add|remove --principal User:NAME --operation OP (--topic T | --group G |
//! --cluster) [--prefix] [--deny]` and `shardlog acl list [--principal User:NAME]`: ACLs
//! in the controller's metadata, enforced by brokers running with `--authorization on`.
//! Add and remove print the server's answer; list prints one ACL per line, e.g.
//! `User:alice allow read on topic orders`.

use shardlog_net::api::{AclBinding, Operation, PatternType, Permission, ResourceType};

use crate::Outcome;
use crate::args::{AclArgs, AclBindingArgs, AclCommand};
use crate::command::topic::print_lines;
use crate::error::ToolError;
use crate::online;

/// Runs `acl`.
pub fn run(args: AclArgs) -> Result<Outcome, ToolError> {
    match args.command {
        AclCommand::Add(args) => {
            let binding = binding(&args)?;
            online::run(&args.brokers, move |client| async move {
                let said = (client.add_acl(binding).await)
                    .map_err(ToolError::request("add the ACL".to_owned()))?;
                print_lines([said])?;
                Ok(Outcome::Clean)
            })
        }
        AclCommand::Remove(args) => {
            let binding = binding(&args)?;
            online::run(&args.brokers, move |client| async move {
                let said = (client.remove_acl(binding).await)
                    .map_err(ToolError::request("remove the ACL".to_owned()))?;
                print_lines([said])?;
                Ok(Outcome::Clean)
            })
        }
        AclCommand::List(args) => {
            let principal = args.principal.as_deref().map(user).transpose()?;
            online::run(&args.brokers, move |client| async move {
                let bindings = (client.list_acls(principal.as_deref()).await)
                    .map_err(ToolError::request("list the ACLs".to_owned()))?;
                print_lines(bindings.iter().map(ToString::to_string))?;
                Ok(Outcome::Clean)
            })
        }
    }
}

/// The user name of `User:NAME`.
fn user(principal: &str) -> Result<String, ToolError> {
    match principal.strip_prefix("User:") {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(ToolError::Usage(format!(
            "--principal {principal:?}: expected User:NAME (User:* for every user)"
        ))),
    }
}

/// The binding the arguments name; the server checks its bounds.
fn binding(args: &AclBindingArgs) -> Result<AclBinding, ToolError> {
    let operation = Operation::parse(&args.operation).ok_or_else(|| {
        ToolError::Usage(format!(
            "--operation {:?}: one of read, write, create, delete, describe, alter, all",
            args.operation
        ))
    })?;
    let (resource_type, name) = match (&args.topic, &args.group) {
        (Some(topic), _) => (ResourceType::Topic, topic.clone()),
        (None, Some(group)) => (ResourceType::Group, group.clone()),
        (None, None) => (ResourceType::Cluster, String::new()),
    };
    Ok(AclBinding {
        principal: user(&args.principal)?,
        resource_type,
        pattern: if args.prefix {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        },
        name,
        operation,
        permission: if args.deny {
            Permission::Deny
        } else {
            Permission::Allow
        },
    })
}
