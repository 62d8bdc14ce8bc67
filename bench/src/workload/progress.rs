//! The progress line on stderr, once a second, from a plain thread: records/s and MiB/s of
//! the last second per side, and the p99 of what was measured so far ("warm-up" before).
//! It also stops a run that waits for records that never come (`idle`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::latency::human_us;
use crate::workload::net_common::{Run, Side};

/// The running printer; [`Progress::finish`] stops it.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Which parts the line shows.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    /// The produce side.
    pub produce: bool,
    /// The consume side.
    pub consume: bool,
    /// End-to-end latency.
    pub e2e: bool,
}

impl Progress {
    /// Starts printing for a started run. With `idle`, fails the run when consumers read
    /// nothing new for that long.
    pub fn start(run: Arc<Run>, show: Show, idle: Option<Duration>) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let thread_done = done.clone();
        let thread = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || print_loop(&run, show, idle, &thread_done))
            .ok();
        Progress { done, thread }
    }

    /// Stops the printer and waits for it.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn print_loop(run: &Run, show: Show, idle: Option<Duration>, done: &AtomicBool) {
    let Some(start) = run.start() else { return };
    let mut last_print = Instant::now();
    let mut last = (0, 0, 0, 0); // produced records, bytes; consumed records, bytes
    let mut seen_consumed = 0;
    let mut last_consumed_change = Instant::now();
    while !done.load(Ordering::SeqCst) && !run.stopped() {
        std::thread::sleep(Duration::from_millis(50));
        let consumed = run.consume.all.records();
        if consumed != seen_consumed {
            seen_consumed = consumed;
            last_consumed_change = Instant::now();
        }
        if let Some(limit) = idle
            && last_consumed_change.elapsed() >= limit
        {
            run.fail(format!(
                "consumed {consumed} records, then nothing new for {:.1} s",
                limit.as_secs_f64()
            ));
            return;
        }
        let secs = last_print.elapsed().as_secs_f64();
        if secs < 1.0 {
            continue;
        }
        let now = (
            run.produce.all.records(),
            run.produce.all.bytes(),
            consumed,
            run.consume.all.bytes(),
        );
        let warm = !run.measured(Instant::now());
        let mut line = format!("{:>6.1} s", start.elapsed().as_secs_f64());
        if show.produce {
            line += &side(
                "produced",
                "p99",
                &run.produce,
                now.0 - last.0,
                now.1 - last.1,
                secs,
                warm,
            );
        }
        if show.consume {
            line += &side(
                "consumed",
                "fetch p99",
                &run.consume,
                now.2 - last.2,
                now.3 - last.3,
                secs,
                warm,
            );
        }
        if show.e2e {
            let p99 = run.e2e_latency().value_at_quantile(0.99);
            line += &format!("  | e2e p99 {}", p99_text(p99, warm));
        }
        eprintln!("{line}");
        last = now;
        last_print = Instant::now();
    }
}

fn side(
    name: &str,
    latency: &str,
    side: &Side,
    records: u64,
    bytes: u64,
    secs: f64,
    warm: bool,
) -> String {
    let p99 = side.latency().value_at_quantile(0.99);
    format!(
        "  | {name} {:>10.0} rec/s {:>8.1} MiB/s {latency} {}",
        records as f64 / secs,
        bytes as f64 / secs / f64::from(1u32 << 20),
        p99_text(p99, warm)
    )
}

fn p99_text(us: u64, warm: bool) -> String {
    if warm {
        "(warm-up)".into()
    } else {
        human_us(us)
    }
}
