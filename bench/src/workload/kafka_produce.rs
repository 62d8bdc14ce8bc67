//! `shardlog-bench produce --protocol kafka`: the same producers as `produce.rs` (same
//! batches, records per request, in-flight window, acks, schedule and report), speaking
//! Kafka's protocol to a Kafka listener (`--kafka-listen` of `shardlogd`), so the two
//! front ends compare on one workload. Each producer has one connection
//! (`kafka_connection.rs`) and keeps `--inflight` Produce requests outstanding on it,
//! matching responses in order.
//!
//! Requests: CreateTopics v4 (replication factor -1: the broker's default) and Metadata v4
//! for the topic, InitProducerId v1 for an idempotent producer, and Produce v7 (what
//! librdkafka 2.0 sends): one topic, one partition, one batch per request. The batch is
//! the one the native producer sends; an idempotent producer's header (producer id, epoch,
//! base sequence counted per partition, CRC) is stamped into the encoded request in place,
//! as the native client does, so no request copies its records twice. Every broker in
//! `--brokers` but the first is ignored: the first must lead every partition (one node).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::future::Either;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, InitProducerIdRequest, MetadataRequest, ProduceRequest, ProducerId,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardlog_engine::batch::{self, BATCH_HEADER_SIZE};
use shardlog_engine::record::{BatchBuilder, ProducerFields};
use shardlog_net::api::Acks;

use crate::latency::histogram;
use crate::workload::kafka_connection::KafkaConnection;
use crate::workload::net_common::{Run, build_batch, micros, value_bytes};
use crate::workload::produce::{ProducerConfig, Schedule};

/// Produce version sent: the one librdkafka 2.0 uses, and not flexible, so the batch is
/// the request's last bytes.
const PRODUCE_VERSION: i16 = 7;
const METADATA_VERSION: i16 = 4;
const CREATE_TOPICS_VERSION: i16 = 4;
const INIT_PRODUCER_ID_VERSION: i16 = 1;
/// Kafka's TOPIC_ALREADY_EXISTS.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// How long the broker may take to create the topic, ms.
const CREATE_TIMEOUT_MS: i32 = 30_000;
/// Produce requests' `timeout_ms` (Kafka's default `request.timeout.ms`).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// The first broker of a `--brokers` list.
fn first_broker(brokers: &str) -> &str {
    brokers.split(',').next().unwrap_or(brokers).trim()
}

/// Creates the topic with `partitions` partitions unless it exists; returns its partition
/// count as the broker's metadata has it.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: u32) -> anyhow::Result<u32> {
    let mut connection = KafkaConnection::connect(first_broker(brokers), 1).await?;
    let name = TopicName(StrBytes::from_string(topic.to_owned()));
    let create = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name.clone())
                .with_num_partitions(i32::try_from(partitions).context("--partitions")?)
                .with_replication_factor(-1),
        ])
        .with_timeout_ms(CREATE_TIMEOUT_MS);
    let created = connection.call(&create, CREATE_TOPICS_VERSION).await?;
    for result in &created.topics {
        match result.error_code {
            0 => tracing::info!(topic, partitions, "created the topic"),
            TOPIC_ALREADY_EXISTS => {}
            code => bail!(
                "creating topic {topic}: Kafka error {code} {:?}",
                result.error_message
            ),
        }
    }
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name)),
        ]))
        .with_allow_auto_topic_creation(false);
    let metadata = connection.call(&metadata, METADATA_VERSION).await?;
    let found = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .with_context(|| format!("topic {topic} is not in the metadata"))?;
    if found.error_code != 0 || found.partitions.is_empty() {
        bail!(
            "metadata of topic {topic}: Kafka error {}",
            found.error_code
        );
    }
    u32::try_from(found.partitions.len()).context("partition count")
}

/// One Kafka producer: connect, wait for the start, send until the count or the deadline.
pub async fn producer(
    run: Arc<Run>,
    config: Arc<ProducerConfig>,
    index: usize,
) -> anyhow::Result<()> {
    let broker = first_broker(&config.brokers);
    let mut connection = KafkaConnection::connect(broker, config.inflight)
        .await
        .with_context(|| format!("producer {index}"))?;
    let mut requests = Requests::new(&config, init_producer(&mut connection, &config).await?);
    run.set_ready();
    let Some(start) = run.wait_start().await else {
        return Ok(());
    };
    let schedule = Schedule::new(&config, index, start);
    let mut partition = u32::try_from(index).unwrap_or(0) % config.partitions;
    let mut pending: VecDeque<(Instant, i32, u32)> = VecDeque::with_capacity(config.inflight);
    let mut sent = 0u64;
    let mut lag = histogram();
    loop {
        let now = Instant::now();
        let intended = schedule.due(sent, now);
        let more = !run.stopped() && schedule.wanted(sent, intended);
        if !more || pending.len() >= config.inflight {
            if pending.is_empty() {
                connection.flush().await?;
                run.add_send_lag(&lag);
                return Ok(());
            }
            receive(&mut connection, &run, &config, &mut pending, requests.len).await?;
            continue;
        }
        if intended > now {
            let wait = std::pin::pin!(glommio::timer::sleep(intended - now));
            if pending.is_empty() {
                connection.flush().await?;
                wait.await;
            } else {
                let answer = std::pin::pin!(connection.next_frame());
                if let Either::Right((frame, _)) = futures::future::select(wait, answer).await {
                    complete(frame?, &run, &config, &mut pending, requests.len)?;
                }
            }
            continue;
        }
        if config.interval.is_some() && run.measured(intended) {
            lag.saturating_record(micros(intended, Instant::now()));
        }
        let correlation = requests.send(&mut connection, partition).await?;
        if config.acks == Acks::None {
            // Kafka answers no acks=0 request: done once written, as on the native side.
            let now = Instant::now();
            let records = config.batch_records as u64;
            run.produce.complete(
                &run,
                now,
                records,
                requests.len as u64,
                micros(intended, now),
            );
        } else {
            pending.push_back((intended, correlation, partition));
        }
        partition = (partition + 1) % config.partitions;
        sent += 1;
    }
}

/// An idempotent producer's id and epoch (InitProducerId), or none.
async fn init_producer(
    connection: &mut KafkaConnection,
    config: &ProducerConfig,
) -> anyhow::Result<Option<ProducerFields>> {
    if !config.idempotence || config.acks == Acks::None {
        return Ok(None);
    }
    // The crate's default transactional id is "" (not null): a transactional request.
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = connection.call(&request, INIT_PRODUCER_ID_VERSION).await?;
    if response.error_code != 0 {
        bail!("InitProducerId: Kafka error {}", response.error_code);
    }
    Ok(Some(ProducerFields {
        producer_id: response.producer_id.0,
        producer_epoch: response.producer_epoch,
        base_sequence: 0,
    }))
}

/// Takes the next response, which answers the oldest pending request.
async fn receive(
    connection: &mut KafkaConnection,
    run: &Run,
    config: &ProducerConfig,
    pending: &mut VecDeque<(Instant, i32, u32)>,
    batch_bytes: usize,
) -> anyhow::Result<()> {
    let frame = connection.next_frame().await?;
    complete(frame, run, config, pending, batch_bytes)
}

/// Checks a response frame against the oldest pending request and counts it.
fn complete(
    frame: Bytes,
    run: &Run,
    config: &ProducerConfig,
    pending: &mut VecDeque<(Instant, i32, u32)>,
    batch_bytes: usize,
) -> anyhow::Result<()> {
    let (intended, correlation, partition) =
        pending.pop_front().context("a response to no request")?;
    let response = KafkaConnection::decode::<ProduceRequest>(frame, correlation, PRODUCE_VERSION)?;
    let answer = response
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .context("a produce response without a partition")?;
    if answer.error_code != 0 {
        bail!(
            "producing to {}/{partition}: Kafka error {}",
            config.topic,
            answer.error_code
        );
    }
    let now = Instant::now();
    run.produce.complete(
        run,
        now,
        config.batch_records as u64,
        batch_bytes as u64,
        micros(intended, now),
    );
    Ok(())
}

/// The base sequence after a batch of `records` at `sequence`: Kafka's sequences wrap from
/// `i32::MAX` to 0 (`DefaultRecordBatch.incrementSequence`).
fn next_sequence(sequence: i32, records: i32) -> i32 {
    if sequence > i32::MAX - records {
        records - (i32::MAX - sequence) - 1
    } else {
        sequence + records
    }
}

/// The Produce request every send reuses, and the idempotent producer's sequences.
struct Requests {
    request: ProduceRequest,
    template: Bytes,
    /// Bytes of the batch.
    len: usize,
    producer: Option<ProducerFields>,
    /// Next base sequence per partition.
    sequences: Vec<i32>,
    batch_records: i32,
}

impl Requests {
    fn new(config: &ProducerConfig, producer: Option<ProducerFields>) -> Requests {
        let mut builder = BatchBuilder::new();
        let template = build_batch(
            &mut builder,
            config.batch_records,
            &value_bytes(config.record_size),
        );
        let acks = match config.acks {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        };
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(config.topic.clone())))
                    .with_partition_data(vec![
                        PartitionProduceData::default().with_records(Some(template.clone())),
                    ]),
            ]);
        Requests {
            request,
            len: template.len(),
            template,
            producer,
            sequences: vec![0; config.partitions as usize],
            batch_records: i32::try_from(config.batch_records).unwrap_or(i32::MAX),
        }
    }

    /// Sends the batch to `partition`; returns the request's correlation id.
    async fn send(
        &mut self,
        connection: &mut KafkaConnection,
        partition: u32,
    ) -> anyhow::Result<i32> {
        let index = i32::try_from(partition).context("partition")?;
        if let Some(data) = self
            .request
            .topic_data
            .first_mut()
            .and_then(|topic| topic.partition_data.first_mut())
        {
            data.index = index;
        }
        let stamped = match (self.producer, self.sequences.get_mut(partition as usize)) {
            (Some(producer), Some(sequence)) => {
                let fields = ProducerFields {
                    base_sequence: *sequence,
                    ..producer
                };
                *sequence = next_sequence(*sequence, self.batch_records);
                Some(batch::stamped_header(&self.template, fields).context("stamping")?)
            }
            _ => None,
        };
        let (template, len) = (&self.template, self.len);
        connection
            .send(&self.request, PRODUCE_VERSION, |frame| {
                let Some(header) = stamped else {
                    return Ok(());
                };
                // v7 is not flexible: the batch is the frame's last bytes.
                let at = frame.len().checked_sub(len).context("short frame")?;
                let head = frame
                    .get_mut(at..at + BATCH_HEADER_SIZE)
                    .context("short frame")?;
                if head != template.get(..BATCH_HEADER_SIZE).unwrap_or_default() {
                    bail!("the encoded produce request does not end with its batch");
                }
                head.copy_from_slice(&header);
                Ok(())
            })
            .await
    }
}
