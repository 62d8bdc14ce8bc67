//! What every online subcommand shares: one glommio executor on a thread of its own (the
//! client is async and `!Send`), the client connected to `--brokers`, and the stop flag
//! that SIGINT/SIGTERM raise for `consume --follow`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use glommio::{LocalExecutorBuilder, Placement};
use shardlog_net::client::{Client, ClientConfig};

use crate::args::BrokerArgs;
use crate::error::ToolError;

/// Registered io_uring memory of the executor: the CLI moves little data at once.
const IO_MEMORY: usize = 1 << 20;

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

/// [`run`] with client settings other than the defaults.
pub fn run_with<T, F, Fut>(brokers: &BrokerArgs, config: ClientConfig, f: F) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ToolError>> + 'static,
{
    let brokers = brokers.brokers.clone();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("shardlog-client")
        .io_memory(IO_MEMORY)
        .spawn(move || async move {
            let client = Client::connect(&brokers, config)
                .await
                .map_err(|source| ToolError::Connect { brokers, source })?;
            f(client).await
        })
        .map_err(|e| ToolError::Executor(e.to_string()))?;
    handle
        .join()
        .map_err(|e| ToolError::Executor(e.to_string()))?
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
