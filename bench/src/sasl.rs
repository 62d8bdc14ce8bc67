//! SASL credentials of the network workloads (`--user`, with the password from
//! `--password-stdin` or `SHARDLOG_PASSWORD`). Set once at start, read by every client the
//! workloads connect (from many tasks and threads, each given only the broker list):
//! hence a process-wide value rather than a field threaded through every config.

use std::sync::OnceLock;

use anyhow::Context;
use shardlog_net::client::{ClientConfig, SaslCredentials, sasl_mechanism};

use crate::args::NetArgs;

static CREDENTIALS: OnceLock<SaslCredentials> = OnceLock::new();

/// Reads the credentials of `args` (if `--user`) and keeps them for [`client_config`].
pub fn init(args: &NetArgs) -> anyhow::Result<()> {
    let Some(user) = &args.user else {
        return Ok(());
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        std::env::var("SHARDLOG_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "--user {user}: no password: pass --password-stdin or set SHARDLOG_PASSWORD"
            )
        })?
    };
    let mechanism = sasl_mechanism(&args.sasl_mechanism).map_err(anyhow::Error::msg)?;
    let _ = CREDENTIALS.set(SaslCredentials {
        user: user.clone(),
        password,
        mechanism,
    });
    Ok(())
}

/// The client defaults, with the credentials of [`init`] if any.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        sasl: CREDENTIALS.get().cloned(),
        ..ClientConfig::default()
    }
}
