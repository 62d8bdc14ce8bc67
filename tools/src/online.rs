//! What every online subcommand shares: one glommio executor on a thread of its own (the
//! client is async and `!Send`), the client connected to `--brokers`, and what ends
//! `consume --follow`: the stop flag SIGINT/SIGTERM raise, and a closed stdout.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use glommio::{LocalExecutorBuilder, Placement};
use shardlog_net::client::{Client, ClientConfig, SaslCredentials, sasl_mechanism};

use crate::args::BrokerArgs;
use crate::error::ToolError;

/// Registered io_uring memory of the executor: the CLI moves little data at once.
const IO_MEMORY: usize = 1 << 20;

/// Runs `f` on a fresh executor (the client is async and `!Send`) and returns what it
/// returns; `f` connects itself (`consume --follow` retries the connection).
pub fn on_executor<T, F, Fut>(f: F) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ToolError>> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("shardlog-client")
        .io_memory(IO_MEMORY)
        .spawn(f)
        .map_err(|e| ToolError::Executor(e.to_string()))?
        .join()
        .map_err(|e| ToolError::Executor(e.to_string()))?
}

/// Connects to the brokers and runs `f` with the client on a fresh executor; returns what
/// `f` returns. A failed connection is [`ToolError::Connect`] (exit code 2).
pub fn run<T, F, Fut>(brokers: &BrokerArgs, f: F) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ToolError>> + 'static,
{
    run_with(brokers, ClientConfig::default(), f)
}

/// [`run`] with client settings other than the defaults (the SASL credentials come from
/// `brokers` unless `config` has them: a command that reads stdin itself reads the
/// password first).
pub fn run_with<T, F, Fut>(
    brokers: &BrokerArgs,
    mut config: ClientConfig,
    f: F,
) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ToolError>> + 'static,
{
    if config.sasl.is_none() {
        config.sasl = sasl_credentials(brokers)?;
    }
    let config = brokers.client_config(config)?;
    let brokers = brokers.brokers.clone();
    on_executor(move || async move {
        let client = Client::connect(&brokers, config)
            .await
            .map_err(|source| ToolError::Connect { brokers, source })?;
        f(client).await
    })
}

/// The SASL credentials of `--user`, with the password from the first line of stdin
/// (`--password-stdin`) or `SHARDLOG_PASSWORD`; `None` without `--user`.
pub fn sasl_credentials(brokers: &BrokerArgs) -> Result<Option<SaslCredentials>, ToolError> {
    let Some(user) = &brokers.user else {
        return Ok(None);
    };
    let password = if brokers.password_stdin {
        read_password_line()?
    } else {
        std::env::var("SHARDLOG_PASSWORD").map_err(|_| {
            ToolError::Usage(format!(
                "--user {user}: no password: pass --password-stdin or set SHARDLOG_PASSWORD"
            ))
        })?
    };
    let mechanism = sasl_mechanism(&brokers.sasl_mechanism).map_err(ToolError::Usage)?;
    Ok(Some(SaslCredentials {
        user: user.clone(),
        password,
        mechanism,
    }))
}

/// The first line of stdin, without its line end (the rest of stdin stays unread).
pub fn read_password_line() -> Result<String, ToolError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| ToolError::Usage(format!("reading a password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(ToolError::Usage(
            "the password read from stdin is empty".into(),
        ));
    }
    Ok(password)
}

/// Raised by SIGINT and SIGTERM once [`catch_stop_signals`] ran.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// From now on SIGINT and SIGTERM only raise the flag [`stop_requested`] reads, so a
/// long-running command can finish its output and exit cleanly.
pub fn catch_stop_signals() -> Result<(), ToolError> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&STOP))
            .map_err(|e| ToolError::Executor(format!("cannot install a signal handler: {e}")))?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`catch_stop_signals`].
#[must_use]
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Whether stdout is a pipe whose reader went away (`| head` exited), found without
/// writing: `poll(2)` reports `POLLERR` on such a pipe. A command that has nothing to
/// print for a while (a follower waiting for brokers) would otherwise never notice.
#[must_use]
pub fn stdout_closed() -> bool {
    let mut stdout = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own, with a zero timeout; it only writes `revents`.
    let ready = unsafe { libc::poll(&raw mut stdout, 1, 0) };
    ready > 0 && stdout.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Resolves once SIGINT/SIGTERM arrived or stdout was closed (polled every 100 ms).
pub async fn until_stopped() {
    while !stop_requested() && !stdout_closed() {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

/// How often [`until_stopped`] looks.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);
