//! `shardlog import DIR [--input FILE]`: restores what `export` wrote, offsets preserved.
//! The first line says which kind of export it is:
//!
//! - a whole topic (`exported_topic.rs`; first line `{"topic":...}`): DIR is a data
//!   directory (created if missing). The topic is built beside its final place, in
//!   `DIR/<topic>~import` (`~` is not allowed in topic names, so this never clashes with
//!   a topic), with every partition and its `topic.json`, and renamed to `DIR/<topic>`
//!   once whole: `shardlogd` started on DIR then serves it with its settings. DIR is
//!   locked meanwhile (`dir_locks.rs`), so this is refused while a server runs there.
//! - one partition (`exported_record.rs`): DIR is the partition directory to create. Put
//!   it at `DATA/<topic>/<partition>` of a topic that exists there to have it served.
//!
//! Consecutive lines of one batch become that batch (`import_reader.rs`), rebuilt with the
//! engine's `BatchBuilder` and given its base offset and leader epoch with
//! `batch::patch_base`. The batches are appended by the engine itself (a glommio executor,
//! `DmaStorage`, `append_replicated`), so the files are exactly what the server writes;
//! a log that does not start at 0 is first `reset` to its first offset, and an empty
//! partition of a topic export to the offset its end line names. Offsets must run on
//! without a gap or overlap, partitions must come in order and each must end with its end
//! line, whose log end and record count must match what was imported (an export cut short
//! is refused). The imported records count as committed: the high watermark is set to the
//! log end. A failed import removes everything it created (the partition or the topic
//! being built, and DIR if it made it), so a partial restore never looks like a whole one.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, Offset, PartitionLog, warm_iopoll_probe,
};
use shardlog_net::api::valid_topic_name;
use shardlog_net::server::topic_file::{self, PARTITIONS_MAX, TopicFile};

use crate::Outcome;
use crate::args::ImportArgs;
use crate::dir_locks;
use crate::error::ToolError;
use crate::exported_topic::{ExportedTopic, PartitionEnd, TopicLine};
use crate::import_reader::{Item, ItemReader};

/// Bytes of batches parsed per trip to the blocking pool.
const CHUNK_BYTES: usize = 8 << 20;
/// The file `warm_iopoll_probe` leaves in the directory it is given.
const PROBE_FILE: &str = ".iopoll-probe";

/// What was imported into one partition.
#[derive(Debug, Default, Clone, Copy)]
struct Imported {
    batches: u64,
    records: u64,
    log_start: Offset,
    log_end: Offset,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> Result<Outcome, ToolError> {
    let mut reader: Box<dyn BufRead + Send> = match &args.input {
        Some(path) => Box::new(BufReader::new(
            File::open(path).map_err(ToolError::io(path))?,
        )),
        None => Box::new(BufReader::new(io::stdin())),
    };
    let (lines_before, first) = first_line(&mut reader)?;
    match topic_header(lines_before + 1, &first)? {
        Some(topic) => {
            let items = ItemReader::new(reader, lines_before + 1);
            import_topic(&args.dir, &topic, items)
        }
        None => {
            // Not a header: the first record, handed back in front of the rest.
            let chained = io::Cursor::new(first.into_bytes()).chain(reader);
            let items = ItemReader::new(Box::new(chained), lines_before);
            import_partition(&args.dir, items)
        }
    }
}

/// The first non-blank line and the number of blank lines before it ("" for no input).
fn first_line(reader: &mut Box<dyn BufRead + Send>) -> Result<(u64, String), ToolError> {
    let mut blank = 0;
    loop {
        let mut text = String::new();
        if reader
            .read_line(&mut text)
            .map_err(ToolError::io("input"))?
            == 0
        {
            return Ok((blank, text));
        }
        if !text.trim().is_empty() {
            return Ok((blank, text));
        }
        blank += 1;
    }
}

/// The topic a first line names, checked; `None` when it is not a topic line.
fn topic_header(line: u64, text: &str) -> Result<Option<ExportedTopic>, ToolError> {
    let bad = |reason: String| ToolError::BadInput { line, reason };
    let is_topic = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v.get("topic").is_some());
    if !is_topic {
        return Ok(None);
    }
    let topic = serde_json::from_str::<TopicLine>(text)
        .map_err(|e| bad(format!("topic line: {e}")))?
        .topic;
    // The name becomes a directory name: never let it leave the data directory.
    if !valid_topic_name(&topic.name) {
        return Err(bad(format!(
            "topic name {:?}: 1 to 249 of [a-zA-Z0-9._-], not . or ..",
            topic.name
        )));
    }
    if !(1..=PARTITIONS_MAX).contains(&topic.partitions) {
        return Err(bad(format!(
            "partitions {}: 1 to {PARTITIONS_MAX}",
            topic.partitions
        )));
    }
    TopicFile::from(&topic)
        .engine_config(&EngineConfig::default())
        .validate()
        .map_err(|e| bad(format!("topic settings: {e}")))?;
    Ok(Some(topic))
}

/// The export of one partition, into the partition directory `dir`.
fn import_partition(dir: &Path, items: ItemReader) -> Result<Outcome, ToolError> {
    refuse_non_empty(dir)?;
    let _locks = dir_locks::lock_served_ancestors(dir)?;
    let created = first_missing(dir);
    fs::create_dir_all(dir).map_err(ToolError::io(dir))?;
    let target = Target::Partition(dir.to_path_buf());
    let imported = match on_executor(target, items).and_then(|imported| {
        remove_probe(dir)?;
        Ok(imported)
    }) {
        Ok(imported) => imported,
        Err(error) => {
            remove_created(created.as_deref().unwrap_or(dir));
            return Err(error);
        }
    };
    let whole = imported.first().copied().unwrap_or_default();
    eprintln!(
        "imported {} record(s) in {} batch(es), offsets {}..{}, into {}",
        whole.records,
        whole.batches,
        whole.log_start,
        whole.log_end,
        dir.display()
    );
    Ok(Outcome::Clean)
}

/// The export of a whole topic, into the data directory `data_dir`.
fn import_topic(
    data_dir: &Path,
    topic: &ExportedTopic,
    items: ItemReader,
) -> Result<Outcome, ToolError> {
    let created = first_missing(data_dir);
    fs::create_dir_all(data_dir).map_err(ToolError::io(data_dir))?;
    let lock = match dir_locks::lock(data_dir) {
        Ok(lock) => lock,
        Err(error) => {
            remove_created_opt(created.as_deref());
            return Err(error);
        }
    };
    let done = topic_file::topic_dir(data_dir, &topic.name);
    let building = data_dir.join(format!("{}~import", topic.name));
    let result = build_topic(&done, &building, topic, items);
    if result.is_err() {
        if building.exists()
            && let Err(e) = fs::remove_dir_all(&building)
        {
            eprintln!(
                "shardlog: could not remove the partial import {}: {e}",
                building.display()
            );
        }
        // Unlocked first: the lock file is in the directory to remove.
        drop(lock);
        remove_created_opt(created.as_deref());
    }
    let imported = result?;
    let records: u64 = imported.iter().map(|i| i.records).sum();
    for (partition, i) in imported.iter().enumerate() {
        eprintln!(
            "  partition {partition}: {} record(s), offsets {}..{}",
            i.records, i.log_start, i.log_end
        );
    }
    eprintln!(
        "imported topic {}: {} partition(s), {records} record(s), into {}",
        topic.name,
        imported.len(),
        done.display()
    );
    Ok(Outcome::Clean)
}

/// Builds the topic in `building` and renames it to `done` once whole.
fn build_topic(
    done: &Path,
    building: &Path,
    topic: &ExportedTopic,
    items: ItemReader,
) -> Result<Vec<Imported>, ToolError> {
    let data_dir = done.parent().unwrap_or(done);
    let existing = topic_file::find(data_dir, &topic.name).map_err(ToolError::io(data_dir))?;
    if let Some(existing) = existing {
        return Err(ToolError::BadPath {
            path: existing,
            reason: "exists: import never replaces a topic (delete it first, or import into \
                     another data directory)",
        });
    }
    if building.exists() {
        // A crashed import's leftover: this process holds the directory's lock, so no
        // other import is building it now.
        eprintln!(
            "note: removing {}, left by an import that did not finish",
            building.display()
        );
        fs::remove_dir_all(building).map_err(ToolError::io(building))?;
    }
    fs::create_dir(building).map_err(ToolError::io(building))?;
    let target = Target::Topic {
        dir: building.to_path_buf(),
        partitions: topic.partitions,
    };
    let imported = on_executor(target, items)?;
    remove_probe(building)?;
    let spec = TopicFile::from(topic);
    topic_file::write(building, &spec)
        .map_err(ToolError::io(building.join(topic_file::TOPIC_FILE)))?;
    fs::rename(building, done).map_err(ToolError::io(done))?;
    let parent = done.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(ToolError::io(parent))?;
    Ok(imported)
}

/// Import only creates partitions: it never mixes its batches into existing data.
fn refuse_non_empty(dir: &Path) -> Result<(), ToolError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ToolError::BadPath {
                    path: dir.into(),
                    reason: "not empty: import only creates a new partition",
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ToolError::io(dir)(e)),
    }
}

/// The outermost directory of `dir`'s path that does not exist yet (what creating `dir`
/// creates first), if any.
fn first_missing(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .ancestors()
        .take_while(|path| !path.exists())
        .last()
        .map(Path::to_path_buf)
}

fn remove_created_opt(created: Option<&Path>) {
    if let Some(dir) = created {
        remove_created(dir);
    }
}

/// Removes a directory this import created (it was absent or empty before).
fn remove_created(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        eprintln!(
            "shardlog: could not remove the partial import {}: {e}",
            dir.display()
        );
    }
}

/// The probe file belongs to the executor, not to the data.
fn remove_probe(dir: &Path) -> Result<(), ToolError> {
    let probe = dir.join(PROBE_FILE);
    match fs::remove_file(&probe) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ToolError::io(&probe)(e)),
        _ => Ok(()),
    }
}

/// Where the batches go.
#[derive(Debug, Clone)]
enum Target {
    /// One partition directory; every item is its batch.
    Partition(PathBuf),
    /// The partitions `0..partitions` of a topic being built in `dir`.
    Topic { dir: PathBuf, partitions: u32 },
}

impl Target {
    /// The directory the executor's iopoll probe goes in.
    fn dir(&self) -> &Path {
        match self {
            Target::Partition(dir) | Target::Topic { dir, .. } => dir,
        }
    }
}

/// Runs the import on a glommio executor; what each partition got, in order.
fn on_executor(target: Target, items: ItemReader) -> Result<Vec<Imported>, ToolError> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("shardlog-import")
        .spawn(move || async move { import_items(target, items).await })
        .map_err(|e| ToolError::Executor(e.to_string()))?
        .join()
        .map_err(|e| ToolError::Executor(e.to_string()))?
}

/// A partition log being filled.
struct Filling {
    partition: u32,
    log: PartitionLog<DmaStorage>,
    imported: Imported,
}

/// Runs on the executor: appends every item to its partition, closing each (which syncs).
async fn import_items(target: Target, items: ItemReader) -> Result<Vec<Imported>, ToolError> {
    warm_iopoll_probe(target.dir())
        .await
        .map_err(ToolError::io(target.dir()))?;
    let mut import = Import {
        target,
        current: None,
        done: Vec::new(),
    };
    let result = import.run(items).await;
    if let Some(filling) = import.current.take() {
        // Failed midway: the directory is about to be removed; close to stop the log.
        let _ = filling.log.close().await;
    }
    result.map(|()| import.done)
}

/// The import's progress over the partitions.
struct Import {
    target: Target,
    /// The partition being filled.
    current: Option<Filling>,
    /// Partitions finished, in order.
    done: Vec<Imported>,
}

impl Import {
    async fn run(&mut self, mut items: ItemReader) -> Result<(), ToolError> {
        if matches!(self.target, Target::Partition(_)) {
            // The partition is created even for empty input.
            self.current = Some(self.open(0).await?);
        }
        loop {
            let (back, chunk) = glommio::executor()
                .spawn_blocking(move || {
                    let chunk = items.next_items(CHUNK_BYTES);
                    (items, chunk)
                })
                .await;
            items = back;
            let chunk = chunk?;
            if chunk.is_empty() {
                return self.end_of_input(items.line()).await;
            }
            for item in chunk {
                match item {
                    Item::Batch {
                        partition,
                        line,
                        bytes,
                    } => self.batch(partition, line, bytes).await?,
                    Item::End { line, end } => self.partition_end(line, end).await?,
                }
            }
        }
    }

    async fn open(&self, partition: u32) -> Result<Filling, ToolError> {
        let dir = match &self.target {
            Target::Partition(dir) => dir.clone(),
            Target::Topic { dir, .. } => dir.join(partition.to_string()),
        };
        // Durability comes from the sync in `close`; syncing every batch would only slow a
        // restore.
        let config = EngineConfig {
            flush: FlushPolicy::Never,
            ..EngineConfig::default()
        };
        let log = PartitionLog::open(DmaStorage, &dir, config).await?;
        Ok(Filling {
            partition,
            log,
            imported: Imported::default(),
        })
    }

    /// Marks everything imported as committed and closes the log.
    async fn finish(&mut self, filling: Filling) -> Result<(), ToolError> {
        filling.log.set_high_watermark(filling.log.log_end());
        filling.log.close().await?;
        self.done.push(filling.imported);
        Ok(())
    }

    /// The partition a batch of `partition` goes to, opened if it is the next one.
    async fn partition_for(
        &mut self,
        partition: Option<u32>,
        line: u64,
    ) -> Result<&mut Filling, ToolError> {
        let bad = |reason: String| ToolError::BadInput { line, reason };
        let partitions = match (&self.target, partition) {
            (Target::Partition(_), None) => None,
            (Target::Partition(_), Some(p)) => {
                return Err(bad(format!(
                    "a record of partition {p} of a whole-topic export without its first \
                     (topic) line"
                )));
            }
            (Target::Topic { .. }, None) => {
                return Err(bad(
                    "a record without a partition in the export of a whole topic".to_owned(),
                ));
            }
            (Target::Topic { partitions, .. }, Some(_)) => Some(*partitions),
        };
        if let (Some(partitions), Some(p)) = (partitions, partition) {
            let expected = self.next_partition();
            match self.current.as_ref().map(|f| f.partition) {
                Some(open) if open != p => {
                    return Err(bad(format!(
                        "records of partition {p} before the end line of partition {open}"
                    )));
                }
                Some(_) => {}
                None if p >= partitions => {
                    return Err(bad(format!(
                        "partition {p}: the topic has {partitions} partition(s)"
                    )));
                }
                None if p != expected => {
                    return Err(bad(format!(
                        "records of partition {p} where partition {expected} comes next \
                         (partitions come in order, each once)"
                    )));
                }
                None => self.current = Some(self.open(p).await?),
            }
        }
        self.current
            .as_mut()
            .ok_or_else(|| bad("no partition open".to_owned()))
    }

    /// The partition whose records or end come next in a topic export.
    fn next_partition(&self) -> u32 {
        u32::try_from(self.done.len()).unwrap_or(u32::MAX)
    }

    async fn batch(
        &mut self,
        partition: Option<u32>,
        line: u64,
        bytes: Vec<u8>,
    ) -> Result<(), ToolError> {
        let filling = self.partition_for(partition, line).await?;
        let header = BatchHeader::parse(&bytes).map_err(|e| ToolError::BadInput {
            line,
            reason: format!("rebuilt batch: {e}"),
        })?;
        let (log, imported) = (&filling.log, &mut filling.imported);
        if imported.batches == 0 {
            if header.base_offset != log.log_end() {
                log.reset(header.base_offset).await?;
            }
            imported.log_start = header.base_offset;
        }
        let log_end = log.log_end();
        if header.base_offset != log_end {
            let reason = if header.base_offset > log_end {
                format!("gap: offsets {log_end}..{} are missing", header.base_offset)
            } else {
                format!(
                    "offset {} goes back below {log_end} (overlap or disorder)",
                    header.base_offset
                )
            };
            return Err(ToolError::BadInput { line, reason });
        }
        log.append_replicated(Bytes::from(bytes)).await?;
        imported.batches += 1;
        imported.records += u64::from(header.record_count);
        imported.log_end = header.next_offset();
        Ok(())
    }

    /// A partition's end line: checks it against what was imported and closes the
    /// partition (an empty one is created at its log end).
    async fn partition_end(&mut self, line: u64, end: PartitionEnd) -> Result<(), ToolError> {
        let bad = |reason: String| ToolError::BadInput { line, reason };
        let Target::Topic { partitions, .. } = self.target else {
            return Err(bad(
                "a partition end line without its topic's first (topic) line".to_owned(),
            ));
        };
        let expected = self
            .current
            .as_ref()
            .map_or_else(|| self.next_partition(), |f| f.partition);
        if end.partition != expected || end.partition >= partitions {
            return Err(bad(format!(
                "end line of partition {} where partition {expected} ends next (of {partitions})",
                end.partition
            )));
        }
        let mut filling = match self.current.take() {
            Some(filling) => filling,
            None => self.open(end.partition).await?,
        };
        if filling.imported.batches == 0 && end.log_end > 0 {
            // Its records were all deleted by retention (or it never had any): it goes on
            // at the offset it had, never back at 0.
            filling.log.reset(Offset(end.log_end)).await?;
            filling.imported.log_start = Offset(end.log_end);
            filling.imported.log_end = Offset(end.log_end);
        }
        let (log_end, records) = (filling.log.log_end(), filling.imported.records);
        let mismatch = if log_end.0 != end.log_end {
            Some(format!(
                "partition {} ends at offset {} in the export, its records end at {log_end}",
                end.partition, end.log_end
            ))
        } else if records != end.records {
            Some(format!(
                "partition {} has {} record(s) in the export, {records} were read",
                end.partition, end.records
            ))
        } else {
            None
        };
        if let Some(reason) = mismatch {
            self.current = Some(filling);
            return Err(bad(reason));
        }
        self.finish(filling).await
    }

    async fn end_of_input(&mut self, last_line: u64) -> Result<(), ToolError> {
        match self.target {
            Target::Partition(_) => match self.current.take() {
                Some(filling) => self.finish(filling).await,
                None => Ok(()),
            },
            Target::Topic { partitions, .. } => {
                let next = self
                    .current
                    .as_ref()
                    .map_or_else(|| self.next_partition(), |f| f.partition);
                if next < partitions {
                    return Err(ToolError::BadInput {
                        line: last_line,
                        reason: format!(
                            "the input ends before the end line of partition {next} (of \
                             {partitions}): the export was cut short"
                        ),
                    });
                }
                Ok(())
            }
        }
    }
}
