//! The admin HTTP listener from a test: a GET over a plain TCP stream (the listener
//! answers one request per connection and closes), sample values read from a `/metrics`
//! page, and `promtool check metrics` (Debian's `prometheus` package, installed under the
//! shared apt lock when missing, since CI runs on a clean machine).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use shardlog_net::testing::output_with_stdin;
use std::sync::Once;
use std::time::Duration;

/// The lock file every test's apt-get waits on (as `kcat.rs`).
const APT_LOCK: &str = "/tmp/shardlog-tests-apt.lock";

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends `request` as is and reads the answer to the end; `None` if the server closed
/// without answering (or the read failed).
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may close while we still write (an oversized head): not an error here.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_answer(&raw)
}

/// `GET path`; the server must answer.
pub fn get(addr: SocketAddr, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    exchange(addr, request.as_bytes()).unwrap_or_else(|| panic!("GET {path}: no answer"))
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

/// The value of the sample `name{labels}` on a page, if it has it.
pub use shardlog_net::testing::sample;

/// Installs promtool unless it is on the PATH; panics, naming why, when it cannot.
pub fn ensure_promtool() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let present = || {
            Command::new("promtool")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if present() {
            return;
        }
        let apt_get = |args: &[&str]| {
            Command::new("flock")
                .arg(APT_LOCK)
                .args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"])
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let install = [
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "prometheus",
        ];
        let installed = apt_get(&install) || (apt_get(&["update", "-qq"]) && apt_get(&install));
        assert!(
            installed && present(),
            "promtool is missing and `apt-get install -y prometheus` could not install it"
        );
    });
}

/// `promtool check metrics` of `page`: its exit code and what it printed.
pub fn promtool_check(page: &str) -> (Option<i32>, String) {
    ensure_promtool();
    let mut command = Command::new("promtool");
    command.args(["check", "metrics"]);
    let output = output_with_stdin(&mut command, page.as_bytes()).unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

/// What promtool does not check of a histogram: its buckets are cumulative (never
/// decreasing as `le` grows) and its `+Inf` bucket equals its `_count`. Checks every
/// unlabelled histogram family of the page; panics naming the first fault.
pub fn check_histograms(page: &str) {
    let families = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"));
    let mut checked = 0;
    for name in families {
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(String, f64)> = page
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(prefix.as_str())?;
                let (le, value) = rest.split_once("\"} ")?;
                Some((le.to_owned(), value.parse().ok()?))
            })
            .collect();
        assert!(buckets.len() >= 2, "{name}: buckets {buckets:?}");
        for pair in buckets.windows(2) {
            assert!(pair[0].1 <= pair[1].1, "{name}: not cumulative at {pair:?}");
        }
        let (le, inf) = buckets.last().unwrap();
        assert_eq!(le, "+Inf", "{name}: the last bucket is {le}");
        let count = sample(page, &format!("{name}_count"), "").unwrap();
        assert_eq!(*inf, count, "{name}: +Inf bucket {inf} but _count {count}");
        checked += 1;
    }
    assert!(checked >= 4, "{checked} histogram families");
}
