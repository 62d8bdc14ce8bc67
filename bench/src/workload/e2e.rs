//! `shardlog-bench e2e`: producers and consumers at once. The consumers (on one executor of
//! their own) start at each partition's end before any producer sends; every record's value
//! begins with its request's send time (the intended time in open loop), and the consumer
//! that reads it records `read time - send time`. The run ends once every produced record
//! is read, or `--drain` seconds after the producers finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::args::{FromArg, NetArgs};
use crate::net_report::{NetReport, Outcome};
use crate::workload::consume::{ConsumerConfig, Until, spawn_consumers, start_offsets};
use crate::workload::net_common::{
    Run, check_measured, join_tasks, on_executor, start_when_ready, warmup,
};
use crate::workload::produce::{
    ProducerConfig, check_args, config_batch_bytes, ensure_topic, spawn_producers,
};
use crate::workload::progress::{Progress, Show};

/// Runs producers and consumers together.
pub fn run(args: NetArgs) -> anyhow::Result<Outcome> {
    check_args(&args)?;
    if args.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    if args.record_size < 8 {
        bail!("e2e needs --record-size of at least 8 (each value starts with its send time)");
    }
    let client = args.tls.client_config()?;
    let (brokers, topic, wanted) = (args.brokers.clone(), args.topic.clone(), args.partitions);
    let base = client.clone();
    let starts = on_executor(move || async move {
        ensure_topic(&brokers, base.clone(), &topic, wanted).await?;
        start_offsets(&brokers, base, &topic, FromArg::End).await
    })?;
    let partitions = u32::try_from(starts.len())?;
    let run = Arc::new(Run::new(warmup(&args, false)));
    let until = Until::Produced {
        drain: Duration::from_secs_f64(args.drain),
    };
    let consumers = Arc::new(ConsumerConfig::new(
        &args,
        client.clone(),
        starts,
        until,
        true,
    ));
    let producers = Arc::new(ProducerConfig::new(&args, client, partitions, true));
    let consumer_handles = spawn_consumers(&run, &consumers, 1)?;
    let producer_handles = spawn_producers(&run, &producers, args.threads)?;
    start_when_ready(&run, args.producers + args.consumers)?;
    let show = Show {
        produce: true,
        consume: true,
        e2e: true,
    };
    let progress = Progress::start(run.clone(), show, None);
    let produced = join_tasks(producer_handles);
    run.set_producers_done();
    if produced.is_err() {
        run.stop();
    }
    let consumed = join_tasks(consumer_handles);
    run.stop();
    progress.finish();
    produced?;
    consumed?;
    check_measured(&run, &run.produce, "produced")?;
    check_measured(&run, &run.consume, "read")?;
    let outcome = NetReport::build("e2e", &args, &run, partitions, config_batch_bytes(&args));
    if let Some(missing) = outcome.report.e2e_missing_records.filter(|m| *m > 0) {
        tracing::warn!(
            missing,
            "records produced but not consumed within --drain after the producers finished"
        );
    }
    Ok(outcome)
}
