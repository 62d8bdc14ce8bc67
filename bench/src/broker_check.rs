//! The broker list's first check, before a network workload starts its clients: one plain
//! TCP connect to each `--brokers` address (`SHARDLOG_BROKERS` when the flag is absent).
//! When none accepts, the run fails at once, naming every address tried, why it failed
//! and where the list came from, instead of after the client's retries (about 5.5 s) with
//! a message that names neither. An address that accepts hands over to the client, which
//! deals with everything after (an election under way, a node catching up).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long one address may take to accept: a host that drops SYNs is as good as absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Ok once one address of `brokers` (`HOST:PORT[,HOST:PORT...]`) accepts a connection.
pub fn check_brokers(brokers: &str) -> anyhow::Result<()> {
    let mut tried = Vec::new();
    for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match connect(address) {
            Ok(()) => return Ok(()),
            Err(why) => tried.push(format!("{address}: {why}")),
        }
    }
    if tried.is_empty() {
        anyhow::bail!("no broker address given: set --brokers or SHARDLOG_BROKERS to HOST:PORT");
    }
    anyhow::bail!(
        "no broker reachable ({}); check --brokers (or SHARDLOG_BROKERS when the flag is \
         absent) names a running shardlogd",
        tried.join("; ")
    )
}

/// One connection attempt to each address `address` resolves to.
fn connect(address: &str) -> Result<(), String> {
    let resolved: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = String::from("resolves to nothing");
    for addr in resolved {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_address_and_the_variable_when_none_answers() {
        let error = check_brokers("127.0.0.1:1, not-an-address").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("127.0.0.1:1: "), "{text}");
        assert!(text.contains("not-an-address: cannot resolve"), "{text}");
        assert!(text.contains("SHARDLOG_BROKERS"), "{text}");
        assert!(check_brokers(" , ").is_err());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        check_brokers(&format!("127.0.0.1:1,{open}")).unwrap();
    }
}
