//! Reads rosbag2 bags: MCAP (ours, `ros2 bag record`, `rosbags`) and sqlite3 `.db3`.
//!
//! Open a bag directory (with or without `metadata.yaml`), a single `.mcap` file or a
//! single `.db3` file. Messages stream in file order (log-time order for bags recorded
//! by rosbag2), filtered by topic and time range, without loading the bag into memory:
//! MCAP files are memory-mapped and uncompressed chunks are read in place.
//!
//! Damage is reported, not fatal: a file cut off by a crash or with a corrupt chunk
//! yields every complete message before the damage, then one `Err` item, then ends.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::mcap_read::{McapIndex, McapMessages};
use super::metadata::{parse_qos_profiles, BagMetadata, MetadataFile};
use super::sqlite::SqliteFile;
use super::BagError;
use crate::bus::Qos;
use crate::msg::{schema::same_definition, visit_type, Message, TypeVisitor};

/// A topic as recorded in the bag.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// ROS type name (`pkg/msg/Name`).
    pub type_name: String,
    /// Serialization format (`cdr`).
    pub serialization_format: String,
    /// The schema text stored in the bag, when there is one.
    pub definition: Option<String>,
    /// QoS offered by the recorded publishers.
    pub qos: Vec<Qos>,
    /// Messages counted in the bag's metadata or summary (`None` when unknown, e.g. a
    /// bag without `metadata.yaml` whose files lack summaries).
    pub message_count: Option<u64>,
    /// Whether dreamplan can decode it: the type is mirrored here and the bag's schema (if
    /// any) has the same shape as ours.
    pub decodable: Decodable,
}

/// Whether messages of a topic can be decoded into this crate's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decodable {
    /// Known type, matching schema (or no schema to compare).
    Yes,
    /// The type is not mirrored by dreamplan.
    UnknownType,
    /// The type name is known but the bag's definition differs from ours.
    SchemaMismatch,
}

/// One message as stored: topic, type, log time and encapsulated CDR bytes.
#[derive(Debug, Clone)]
pub struct RawRecord<'a> {
    /// Index into [`BagReader::topics`].
    pub topic_index: usize,
    /// Topic name.
    pub topic: &'a str,
    /// ROS type name.
    pub type_name: &'a str,
    /// Receive time in nanoseconds since the epoch.
    pub log_time: u64,
    /// Encapsulated CDR payload (borrowed from the mapped file when possible).
    pub data: Cow<'a, [u8]>,
}

impl RawRecord<'_> {
    /// Decodes the payload as `M`; the recorded type must be `M`.
    pub fn decode<M: Message>(&self) -> Result<M, BagError> {
        if crate::msg::normalize_type_name(self.type_name).as_deref() != Some(M::TYPE_NAME) {
            return Err(BagError::WrongType {
                topic: self.topic.into(),
                recorded: self.type_name.into(),
                requested: M::TYPE_NAME,
            });
        }
        M::from_cdr(&self.data).map_err(|e| BagError::Decode {
            topic: self.topic.into(),
            log_time: self.log_time,
            source: e,
        })
    }
}

/// Which messages to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these topics (all when empty).
    pub topics: Vec<String>,
    /// Only messages with log time ≥ this (ns since epoch).
    pub start: Option<u64>,
    /// Only messages with log time < this.
    pub end: Option<u64>,
}

impl Filter {
    /// All messages of these topics.
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(topics: I) -> Self {
        Self {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Whether messages of `topic` pass the topic part of the filter.
    pub fn accepts(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|f| f == topic)
    }
}

/// The bytes of an MCAP file: memory-mapped, or owned (bags given as bytes).
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

enum Storage {
    Mcap {
        path: PathBuf,
        map: Bytes,
        index: McapIndex,
    },
    Sqlite(SqliteFile),
}

/// An open bag.
pub struct BagReader {
    path: PathBuf,
    files: Vec<Storage>,
    topics: Vec<TopicInfo>,
    by_name: HashMap<String, usize>,
    metadata: Option<BagMetadata>,
    /// Every payload is a zstd frame (`compression_mode: MESSAGE`, `compression_format:
    /// zstd`, as `ros2 bag record --compression-mode message` writes).
    message_zstd: bool,
}

struct KnownDefinition;
impl TypeVisitor for KnownDefinition {
    type Output = &'static str;
    fn visit<M: Message>(self) -> &'static str {
        M::DEFINITION
    }
}

fn decodable(type_name: &str, definition: Option<&str>) -> Decodable {
    match visit_type(type_name, KnownDefinition) {
        None => Decodable::UnknownType,
        Some(ours) => match definition {
            Some(theirs)
                if !theirs.trim().is_empty() && !same_definition(type_name, ours, theirs) =>
            {
                Decodable::SchemaMismatch
            }
            _ => Decodable::Yes,
        },
    }
}

impl BagReader {
    /// Opens a bag directory, an `.mcap` file or a `.db3` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BagError> {
        let path = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&path).map_err(|e| BagError::io(&path, e))?;
        let mut metadata = None;
        let file_paths: Vec<PathBuf> = if meta.is_dir() {
            let yaml = path.join("metadata.yaml");
            if yaml.exists() {
                let text = std::fs::read_to_string(&yaml).map_err(|e| BagError::io(&yaml, e))?;
                // A metadata file that does not parse (cut short by a kill or a full disk)
                // leaves the storage files: they are read as a bag without one, the way a
                // killed recording is. Before session 52 the bag did not open at all.
                match serde_yaml::from_str::<MetadataFile>(&text) {
                    Ok(m) => metadata = Some(m.rosbag2_bagfile_information),
                    Err(e) => tracing::warn!(
                        "{}: not readable ({e}); reading the storage files without it",
                        yaml.display()
                    ),
                }
            }
            match &metadata {
                Some(m) if !m.relative_file_paths.is_empty() => {
                    // A file the metadata lists but the folder lacks (a split bag copied in
                    // part) is refused by name, as rosbags does: before session 45 the rest
                    // was read silently, with the metadata's counts and duration.
                    let listed: Vec<PathBuf> =
                        m.relative_file_paths.iter().map(|p| path.join(p)).collect();
                    let missing: Vec<String> = listed
                        .iter()
                        .filter(|p| !p.exists())
                        .map(|p| p.display().to_string())
                        .collect();
                    if !missing.is_empty() {
                        return Err(BagError::Metadata(format!(
                            "{} lists storage files that are missing: {}",
                            yaml.display(),
                            missing.join(", ")
                        )));
                    }
                    listed
                }
                _ => {
                    // No metadata (a recording cut off by a crash): every storage file, in name order.
                    let mut found: Vec<PathBuf> = std::fs::read_dir(&path)
                        .map_err(|e| BagError::io(&path, e))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            matches!(p.extension().and_then(|e| e.to_str()), Some("mcap" | "db3"))
                        })
                        .collect();
                    found.sort_by_key(|p| natural_key(p));
                    found
                }
            }
        } else {
            vec![path.clone()]
        };
        if file_paths.is_empty() {
            return Err(BagError::NoStorage(path));
        }
        // Compressed bags: before session 45 the fields were read and ignored, so a
        // message-compressed bag opened and then failed on every message as bad CDR.
        let message_zstd = match &metadata {
            None => false,
            Some(m) => match (
                m.compression_mode.to_ascii_uppercase().as_str(),
                m.compression_format.to_ascii_lowercase().as_str(),
            ) {
                ("" | "NONE", _) => false,
                ("MESSAGE", "zstd") => true,
                ("FILE", format) => {
                    return Err(BagError::Metadata(format!(
                        "{}: its storage files are compressed whole ({format}, compression_mode FILE), which this reader does not read: decompress them first (e.g. `ros2 bag convert` to an uncompressed bag)",
                        path.display()
                    )))
                }
                (mode, format) => {
                    return Err(BagError::Metadata(format!(
                        "{}: compression {format:?} in mode {mode:?} is not read here (only zstd per message)",
                        path.display()
                    )))
                }
            },
        };
        let mut reader = Self {
            path,
            files: Vec::new(),
            topics: Vec::new(),
            by_name: HashMap::new(),
            metadata,
            message_zstd,
        };
        let several = file_paths.len() > 1;
        for p in file_paths {
            // A split file created but never written (a recorder killed before it wrote
            // the file's header) holds nothing; the bag's other files are still read.
            if several && std::fs::metadata(&p).is_ok_and(|m| m.len() == 0) {
                tracing::warn!("{}: empty storage file, skipped", p.display());
                continue;
            }
            reader.add_file(&p)?;
        }
        if let Some(m) = reader.metadata.clone() {
            for t in &m.topics_with_message_count {
                let i = reader.topic_index(
                    &t.topic_metadata.name,
                    &t.topic_metadata.type_name,
                    None,
                    &t.topic_metadata.offered_qos_profiles,
                );
                reader.topics[i].message_count = Some(t.message_count);
                reader.topics[i].serialization_format =
                    t.topic_metadata.serialization_format.clone();
            }
        }
        Ok(reader)
    }

    fn topic_index(
        &mut self,
        name: &str,
        type_name: &str,
        definition: Option<&str>,
        qos: &serde_yaml::Value,
    ) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            let t = &mut self.topics[i];
            if t.definition.is_none() {
                if let Some(d) = definition {
                    t.definition = Some(d.to_string());
                    t.decodable = decodable(&t.type_name, Some(d));
                }
            }
            if t.qos.is_empty() {
                t.qos = parse_qos_profiles(qos).unwrap_or_default();
            }
            return i;
        }
        let i = self.topics.len();
        self.topics.push(TopicInfo {
            name: name.into(),
            type_name: type_name.into(),
            serialization_format: "cdr".into(),
            definition: definition.map(str::to_string),
            qos: parse_qos_profiles(qos).unwrap_or_default(),
            message_count: None,
            decodable: decodable(type_name, definition),
        });
        self.by_name.insert(name.into(), i);
        i
    }

    fn add_file(&mut self, p: &Path) -> Result<(), BagError> {
        let is_db3 = p.extension().and_then(|e| e.to_str()) == Some("db3");
        if is_db3 {
            let db = SqliteFile::open(p)?;
            for t in db.topics()? {
                self.topic_index(
                    &t.name,
                    &t.type_name,
                    t.definition.as_deref(),
                    &serde_yaml::Value::String(t.qos_yaml.clone()),
                );
            }
            self.files.push(Storage::Sqlite(db));
            return Ok(());
        }
        let file = std::fs::File::open(p).map_err(|e| BagError::io(p, e))?;
        // SAFETY: the map is read-only; a bag being rewritten while we read it is
        // outside what any bag reader supports (rosbag2 and rosbags likewise).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| BagError::io(p, e))?;
        self.add_mcap(p, Bytes::Mapped(map))
    }

    fn add_mcap(&mut self, p: &Path, map: Bytes) -> Result<(), BagError> {
        let index = McapIndex::build(&map, p)?;
        let mut ids: Vec<u16> = index.channels.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let c = &index.channels[&id];
            let def = (c.schema_encoding == "ros2msg")
                .then(|| String::from_utf8_lossy(&c.schema_data).to_string());
            let qos = serde_yaml::Value::String(
                c.metadata
                    .get("offered_qos_profiles")
                    .cloned()
                    .unwrap_or_default(),
            );
            let i = self.topic_index(&c.topic, &c.schema_name, def.as_deref(), &qos);
            self.topics[i].serialization_format = c.message_encoding.clone();
            if self.metadata.is_none() {
                if let Some(n) = index.counts.as_ref().and_then(|m| m.get(&id)) {
                    self.topics[i].message_count =
                        Some(self.topics[i].message_count.unwrap_or(0) + n);
                }
            }
        }
        self.files.push(Storage::Mcap {
            path: p.to_path_buf(),
            map,
            index,
        });
        Ok(())
    }

    /// Reads a single MCAP file given as bytes (for tests, fuzzing, network transfers).
    pub fn from_mcap_bytes(bytes: Vec<u8>) -> Result<Self, BagError> {
        let path = PathBuf::from("<memory>.mcap");
        let mut reader = Self {
            path: path.clone(),
            files: Vec::new(),
            topics: Vec::new(),
            by_name: HashMap::new(),
            metadata: None,
            message_zstd: false,
        };
        reader.add_mcap(&path, Bytes::Owned(bytes))?;
        Ok(reader)
    }

    /// The bag's path as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Topics in the bag.
    pub fn topics(&self) -> &[TopicInfo] {
        &self.topics
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicInfo> {
        self.by_name.get(name).map(|&i| &self.topics[i])
    }

    /// `metadata.yaml`, when the bag has one.
    pub fn metadata(&self) -> Option<&BagMetadata> {
        self.metadata.as_ref()
    }

    /// Storage files and their sizes in bytes.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        self.files
            .iter()
            .map(|f| match f {
                Storage::Mcap { path, map, .. } => (path.clone(), map.len() as u64),
                Storage::Sqlite(db) => (
                    db.path().to_path_buf(),
                    std::fs::metadata(db.path()).map(|m| m.len()).unwrap_or(0),
                ),
            })
            .collect()
    }

    /// Streams the messages that pass `filter`.
    pub fn messages(&self, filter: &Filter) -> Messages<'_> {
        let wanted: Vec<bool> = self
            .topics
            .iter()
            .map(|t| filter.accepts(&t.name))
            .collect();
        Messages {
            reader: self,
            filter: filter.clone(),
            wanted,
            heads: None,
            error: None,
            done: false,
        }
    }

    /// Decodes every message of `topic` as `M`.
    pub fn read_topic<M: Message>(
        &self,
        topic: &str,
    ) -> impl Iterator<Item = Result<(u64, M), BagError>> + '_ {
        self.messages(&Filter::topics([topic]))
            .map(|r| r.and_then(|rec| Ok((rec.log_time, rec.decode::<M>()?))))
    }
}

/// `bag_10.mcap` after `bag_9.mcap`.
fn natural_key(p: &Path) -> (String, u64) {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    match stem.rsplit_once('_') {
        Some((head, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
            (head.to_string(), n.parse().unwrap_or(0))
        }
        _ => (stem, 0),
    }
}

enum Cursor<'a> {
    Mcap {
        stream: Box<McapMessages<'a>>,
        channel_topic: Vec<Option<usize>>,
        path: &'a Path,
    },
    Sqlite(super::sqlite::Rows<'a>),
}

/// Iterator over a bag's messages; see [`BagReader::messages`].
///
/// Each storage file is read in log-time order, and the files are merged by log time
/// (ties: the earlier file first): a recorder that splits its bag can write a message that
/// came late into the next file, older than the last ones of the file before (rosbag2
/// files overlap the same way), and a reader going file by file would hand it out after
/// newer ones. A file is opened only once the merge reaches its first log time, so a bag
/// of many files holds a chunk of only those that overlap. A file that turns out damaged
/// stops only itself: the readable messages of every file come first, then the error.
pub struct Messages<'a> {
    reader: &'a BagReader,
    filter: Filter,
    wanted: Vec<bool>,
    /// One per storage file, opened on the first call.
    heads: Option<Vec<Head<'a>>>,
    /// A damaged file's error, handed out once the others are exhausted.
    error: Option<BagError>,
    done: bool,
}

type Item<'a> = (usize, u64, Cow<'a, [u8]>);

/// A file's cursor and the next message it will hand out.
struct Head<'a> {
    /// The earliest log time the file may hold (0: not known before reading it).
    start: u64,
    opened: bool,
    cursor: Option<Cursor<'a>>,
    next: Option<Item<'a>>,
}

impl<'a> Messages<'a> {
    fn open(&self, storage: &'a Storage) -> Cursor<'a> {
        match storage {
            Storage::Mcap { path, map, index } => {
                let mut channel_topic = Vec::new();
                for (&id, c) in &index.channels {
                    if channel_topic.len() <= id as usize {
                        channel_topic.resize(id as usize + 1, None);
                    }
                    channel_topic[id as usize] = self.reader.by_name.get(&c.topic).copied();
                }
                let range = (
                    self.filter.start.unwrap_or(0),
                    self.filter.end.unwrap_or(u64::MAX),
                );
                let stream = McapMessages::new(map, index, range);
                Cursor::Mcap {
                    stream: Box::new(stream),
                    channel_topic,
                    path,
                }
            }
            Storage::Sqlite(db) => {
                let topic_map: HashMap<i64, usize> = db
                    .topic_ids()
                    .into_iter()
                    .filter_map(|(id, name)| self.reader.by_name.get(&name).map(|&i| (id, i)))
                    .collect();
                Cursor::Sqlite(db.rows(topic_map, self.filter.start, self.filter.end))
            }
        }
    }

    /// The next wanted message of one file's cursor: `Ok(None)` at its end.
    fn pull(
        cursor: &mut Cursor<'a>,
        wanted: &[bool],
        filter: &Filter,
    ) -> Result<Option<Item<'a>>, BagError> {
        loop {
            let item = match cursor {
                Cursor::Mcap {
                    stream,
                    channel_topic,
                    path,
                } => match stream.next() {
                    None => None,
                    Some(Err(reason)) => {
                        return Err(BagError::Damaged {
                            file: path.to_path_buf(),
                            reason,
                        })
                    }
                    Some(Ok((channel, time, data))) => {
                        let t = channel_topic
                            .get(channel as usize)
                            .copied()
                            .flatten()
                            .unwrap_or(usize::MAX);
                        Some((t, time, data))
                    }
                },
                Cursor::Sqlite(rows) => match rows.next() {
                    None => None,
                    Some(r) => {
                        let (t, time, data) = r?;
                        Some((t, time, Cow::Owned(data)))
                    }
                },
            };
            let Some((t, time, data)) = item else {
                return Ok(None);
            };
            if t == usize::MAX || !wanted[t] {
                continue;
            }
            if filter.start.is_some_and(|s| time < s) || filter.end.is_some_and(|e| time >= e) {
                continue;
            }
            return Ok(Some((t, time, data)));
        }
    }

    /// Fills a head whose message was handed out; a damaged file's error is kept for the
    /// end and the file closed.
    fn refill(&mut self, k: usize) {
        let heads = self.heads.as_mut().expect("opened");
        let head = &mut heads[k];
        let Some(cursor) = head.cursor.as_mut() else {
            return;
        };
        match Self::pull(cursor, &self.wanted, &self.filter) {
            Ok(Some(item)) => head.next = Some(item),
            Ok(None) => head.cursor = None,
            Err(e) => {
                head.cursor = None;
                self.error.get_or_insert(e);
            }
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<RawRecord<'a>, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let reader = self.reader;
        if self.heads.is_none() {
            let heads = reader
                .files
                .iter()
                .map(|f| Head {
                    start: match f {
                        Storage::Mcap { index, .. } => index.start_time(),
                        Storage::Sqlite(_) => 0,
                    },
                    opened: false,
                    cursor: None,
                    next: None,
                })
                .collect();
            self.heads = Some(heads);
        }
        // Open the files whose first message may come before the earliest head, earliest
        // first (each opened one may lower that bound).
        loop {
            let heads = self.heads.as_ref().expect("made above");
            let earliest = heads
                .iter()
                .filter_map(|h| h.next.as_ref().map(|(_, time, _)| *time))
                .min()
                .unwrap_or(u64::MAX);
            let Some(k) = heads
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.opened && h.start <= earliest)
                .min_by_key(|(k, h)| (h.start, *k))
                .map(|(k, _)| k)
            else {
                break;
            };
            let cursor = self.open(&reader.files[k]);
            let head = &mut self.heads.as_mut().expect("made above")[k];
            head.opened = true;
            head.cursor = Some(cursor);
            self.refill(k);
        }
        let heads = self.heads.as_mut().expect("made above");
        // The earliest head; of equal times the earlier file.
        let best = heads
            .iter()
            .enumerate()
            .filter_map(|(k, h)| h.next.as_ref().map(|(_, time, _)| (*time, k)))
            .min();
        let Some((_, k)) = best else {
            self.done = true;
            return self.error.take().map(Err);
        };
        let (t, time, data) = heads[k].next.take().expect("chosen above");
        self.refill(k);
        let info = &reader.topics[t];
        let data = if reader.message_zstd {
            match zstd::decode_all(&data[..]) {
                Ok(plain) => Cow::Owned(plain),
                Err(e) => {
                    return Some(Err(BagError::Damaged {
                        file: reader.path.clone(),
                        reason: format!(
                            "a message of {} at {time} ns is not a zstd frame, though the bag says every message is one: {e}",
                            info.name
                        ),
                    }))
                }
            }
        } else {
            data
        };
        Some(Ok(RawRecord {
            topic_index: t,
            topic: &info.name,
            type_name: &info.type_name,
            log_time: time,
            data,
        }))
    }
}

/// Whether every MCAP file of the bag was opened from its summary, i.e. written whole.
/// A file without one was cut off (or its recorder died) and its counts in
/// `metadata.yaml` may promise more than can be read; sqlite3 files count as whole.
pub fn written_whole(reader: &BagReader) -> bool {
    reader.files.iter().all(|s| match s {
        Storage::Mcap { index, .. } => index.has_summary(),
        Storage::Sqlite(_) => true,
    })
}

/// Messages per topic, counted by reading the whole bag (for bags without counts).
pub fn count_messages(reader: &BagReader) -> (BTreeMap<String, u64>, Option<BagError>) {
    let mut counts = BTreeMap::new();
    for r in reader.messages(&Filter::default()) {
        match r {
            Ok(rec) => *counts.entry(rec.topic.to_string()).or_insert(0) += 1,
            Err(e) => return (counts, Some(e)),
        }
    }
    (counts, None)
}
