//! `shardlog-bench`: parses the command line, runs the workload, prints and saves the
//! report. Exit code 0 on success, 1 when the run failed, 2 on a usage error (clap).

mod args;
mod latency;
mod report;
mod workload;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::Engine(engine) => {
            let json = engine.json.clone();
            workload::engine::run(engine).and_then(|report| {
                report.print();
                match json {
                    Some(path) => report.write_json(&path),
                    None => Ok(()),
                }
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shardlog-bench: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}
