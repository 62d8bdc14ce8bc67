//! `shardlog-bench`: parses the command line, runs the workload, prints and saves the
//! report. Exit code 0 on success (a stdout closed by its reader is no failure), 1 when
//! the run failed or measured nothing, 2 on a usage error (clap).

mod args;
mod broker_check;
mod latency;
mod net_report;
mod plot;
mod report;
mod sasl;
mod soak;
mod timeline;
mod timeline_plot;
mod workload;

use std::io::Write;

use anyhow::Context;
use clap::Parser;

use crate::args::NetArgs;
use crate::net_report::Outcome;

/// glibc's malloc took about a fifth of the bench's CPU at one small record per request
/// (README, "Issue 15, a sixth sitting").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shardlog_net::logging::init_stderr("info");
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Engine(engine) => {
            let json = engine.json.clone();
            workload::engine::run(engine).and_then(|report| {
                print_stdout(|out| report.print(out))?;
                match json {
                    Some(path) => report.write_json(&path),
                    None => Ok(()),
                }
            })
        }
        args::Command::Produce(net) => net_run(net, true, workload::produce::run),
        args::Command::Consume(net) => net_run(net, false, workload::consume::run),
        args::Command::E2e(net) => net_run(net, false, workload::e2e::run),
        args::Command::Failover(failover) => {
            let json = failover.json.clone();
            broker_check::check_brokers(&failover.brokers)
                .and_then(|()| workload::failover::run(failover))
                .and_then(|report| {
                    print_stdout(|out| report.print(out))?;
                    match json {
                        Some(path) => std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                            .with_context(|| format!("writing {}", path.display())),
                        None => Ok(()),
                    }
                })
        }
        args::Command::Soak(soak) => soak::run(&soak),
        args::Command::SoakCheck(check) => soak::check_file(&check.history),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shardlog-bench: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Runs a network workload (which speaks Kafka's protocol too if `speaks_kafka`), prints
/// its table and writes `--json` / `--plot`.
fn net_run(
    args: NetArgs,
    speaks_kafka: bool,
    workload: fn(NetArgs) -> anyhow::Result<Outcome>,
) -> anyhow::Result<()> {
    if args.protocol == args::Protocol::Kafka && !speaks_kafka {
        anyhow::bail!("--protocol kafka is for produce only (consume and e2e speak shardlog's)");
    }
    broker_check::check_brokers(&args.brokers)?;
    sasl::init(&args)?;
    let (json, plot) = (args.json.clone(), args.plot.clone());
    let outcome = workload(args)?;
    print_stdout(|out| outcome.report.print(out))?;
    if let Some(path) = json {
        outcome.report.write_json(&path)?;
    }
    if let Some(path) = plot {
        let title = format!(
            "shardlog-bench {}: latency by percentile",
            outcome.report.workload
        );
        plot::write_svg(&path, &title, &outcome.curves)?;
        let title = format!("shardlog-bench {}: per second", outcome.report.workload);
        timeline_plot::write_svg(&timeline_plot::path_beside(&path), &title, &outcome.report)?;
    }
    if let Some(errors) = outcome
        .report
        .produce
        .as_ref()
        .map(|s| s.errors)
        .filter(|e| *e > 0)
    {
        anyhow::bail!("{errors} produce requests failed after the client's retries");
    }
    Ok(())
}

/// Runs `print` on stdout. A stdout closed by its reader (`| head`) is a normal end: the
/// rest of the table is dropped and the run goes on to `--json` and `--plot`.
fn print_stdout(
    print: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match print(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing the report to stdout"),
    }
}
