//! Writes rosbag2 MCAP bags: a directory with `<name>_<i>.mcap` files and `metadata.yaml`.
//!
//! Each file: MCAP header profile `ros2`; one `ros2msg` schema per type holding the full
//! definition with dependencies; one `cdr` channel per topic whose metadata carries
//! `offered_qos_profiles`; messages in chunks (optionally zstd); a `rosbag2` metadata
//! record with the serialized metadata; summary and indexes. A file cut off by a crash
//! loses at most its unfinished chunk: `flush` closes the current chunk, and the reader
//! recovers every complete chunk of a file without a summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::metadata::{
    qos_profiles_yaml, BagMetadata, FileInfo, MetadataFile, Nanoseconds, Since, TopicMetadata,
    TopicWithCount,
};
use super::BagError;
use crate::bus::Qos;
use crate::msg::Message;

/// Chunk compression of MCAP files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Uncompressed chunks (fastest to read; what `ros2 bag record` does by default).
    #[default]
    None,
    /// zstd-compressed chunks.
    Zstd,
}

/// How a bag is written.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Chunk compression.
    pub compression: Compression,
    /// Target chunk size in bytes before compression.
    pub chunk_size: u64,
    /// Start a new file once the messages written to the current one reach this many
    /// bytes, counted before compression (with zstd the files come out smaller; rosbag2's
    /// `--max-bag-size` counts the file on disk).
    pub max_file_bytes: Option<u64>,
    /// Start a new file once the current one spans this much log time.
    pub max_file_duration: Option<Duration>,
    /// Written as the bag's `ros_distro` in the MCAP metadata record.
    pub ros_distro: String,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::None,
            chunk_size: 1 << 20,
            max_file_bytes: None,
            max_file_duration: None,
            ros_distro: std::env::var("ROS_DISTRO").unwrap_or_else(|_| "humble".into()),
        }
    }
}

/// A topic registered with the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(usize);

struct Topic {
    name: String,
    type_name: String,
    definition: String,
    qos_yaml: String,
    count: u64,
}

struct OpenFile {
    writer: mcap::Writer<BufWriter<File>>,
    relative: String,
    channels: BTreeMap<usize, u16>,
    schemas: BTreeMap<String, u16>,
    first: Option<u64>,
    last: u64,
    count: u64,
    sequence: u32,
    /// Bytes handed to the writer (payloads plus record overhead), for size-based splits.
    bytes: u64,
}

/// Summary of a finished bag.
#[derive(Debug, Clone)]
pub struct WrittenBag {
    /// The bag directory.
    pub dir: PathBuf,
    /// The metadata that was written to `metadata.yaml`.
    pub metadata: BagMetadata,
}

/// Writes one rosbag2 MCAP bag. Call [`BagWriter::finish`] to write the summary and
/// `metadata.yaml`; dropping without it leaves a bag the reader recovers.
pub struct BagWriter {
    dir: PathBuf,
    stem: String,
    options: WriterOptions,
    topics: Vec<Topic>,
    by_name: BTreeMap<String, usize>,
    current: Option<OpenFile>,
    files: Vec<FileInfo>,
}

impl BagWriter {
    /// Creates the bag directory `dir` (which must not exist yet, as with `ros2 bag record -o`).
    pub fn create(dir: impl AsRef<Path>, options: WriterOptions) -> Result<Self, BagError> {
        let dir = dir.as_ref().to_path_buf();
        if dir.exists() {
            return Err(BagError::Exists(dir));
        }
        std::fs::create_dir_all(&dir).map_err(|e| BagError::io(&dir, e))?;
        let stem = dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "bag".into());
        Ok(Self {
            dir,
            stem,
            options,
            topics: Vec::new(),
            by_name: BTreeMap::new(),
            current: None,
            files: Vec::new(),
        })
    }

    /// Registers a topic with its type, full definition and the QoS of its publishers.
    /// Registering the same topic again returns the same id (the type must match).
    pub fn add_topic(
        &mut self,
        name: &str,
        type_name: &str,
        definition: &str,
        qos: &[Qos],
    ) -> Result<TopicId, BagError> {
        if let Some(&i) = self.by_name.get(name) {
            if self.topics[i].type_name != type_name {
                return Err(BagError::TypeConflict {
                    topic: name.into(),
                    existing: self.topics[i].type_name.clone(),
                    requested: type_name.into(),
                });
            }
            return Ok(TopicId(i));
        }
        let i = self.topics.len();
        self.topics.push(Topic {
            name: name.into(),
            type_name: type_name.into(),
            definition: definition.into(),
            qos_yaml: qos_profiles_yaml(qos),
            count: 0,
        });
        self.by_name.insert(name.into(), i);
        Ok(TopicId(i))
    }

    /// Registers a topic carrying `M`.
    pub fn add_typed_topic<M: Message>(
        &mut self,
        name: &str,
        qos: &[Qos],
    ) -> Result<TopicId, BagError> {
        self.add_topic(name, M::TYPE_NAME, M::DEFINITION, qos)
    }

    /// Writes encapsulated CDR bytes received at `log_time_ns` (nanoseconds since the epoch).
    pub fn write_raw(
        &mut self,
        topic: TopicId,
        log_time_ns: u64,
        cdr: &[u8],
    ) -> Result<(), BagError> {
        self.rotate_if_needed(log_time_ns)?;
        if self.current.is_none() {
            self.open_file()?;
        }
        let t = &self.topics[topic.0];
        let file = self.current.as_mut().expect("opened above");
        let channel = match file.channels.get(&topic.0) {
            Some(&c) => c,
            None => {
                let schema = match file.schemas.get(&t.type_name) {
                    Some(&s) => s,
                    None => {
                        let s = file
                            .writer
                            .add_schema(&t.type_name, "ros2msg", t.definition.as_bytes())
                            .map_err(mcap_err)?;
                        file.schemas.insert(t.type_name.clone(), s);
                        s
                    }
                };
                let meta =
                    BTreeMap::from([("offered_qos_profiles".to_string(), t.qos_yaml.clone())]);
                let c = file
                    .writer
                    .add_channel(schema, &t.name, "cdr", &meta)
                    .map_err(mcap_err)?;
                file.channels.insert(topic.0, c);
                c
            }
        };
        file.sequence = file.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id: channel,
            sequence: file.sequence,
            log_time: log_time_ns,
            publish_time: log_time_ns,
        };
        file.writer
            .write_to_known_channel(&header, cdr)
            .map_err(mcap_err)?;
        file.first = Some(file.first.map_or(log_time_ns, |f| f.min(log_time_ns)));
        file.last = file.last.max(log_time_ns);
        file.count += 1;
        file.bytes += cdr.len() as u64 + 31;
        self.topics[topic.0].count += 1;
        Ok(())
    }

    /// Encodes and writes a message on `topic` (registered on first use with default QoS).
    pub fn write<M: Message>(
        &mut self,
        topic: &str,
        log_time_ns: u64,
        msg: &M,
    ) -> Result<(), BagError> {
        let id = self.add_typed_topic::<M>(topic, &[Qos::default()])?;
        self.write_raw(id, log_time_ns, &msg.to_cdr())
    }

    /// Closes the current chunk so everything written so far survives a crash.
    pub fn flush(&mut self) -> Result<(), BagError> {
        if let Some(f) = self.current.as_mut() {
            f.writer.flush().map_err(mcap_err)?;
        }
        Ok(())
    }

    fn rotate_if_needed(&mut self, log_time_ns: u64) -> Result<(), BagError> {
        let Some(f) = self.current.as_ref() else {
            return Ok(());
        };
        let too_long = match (self.options.max_file_duration, f.first) {
            (Some(d), Some(first)) => log_time_ns.saturating_sub(first) >= d.as_nanos() as u64,
            _ => false,
        };
        let too_big = self
            .options
            .max_file_bytes
            .is_some_and(|max| f.bytes >= max);
        if too_long || too_big {
            self.close_file()?;
        }
        Ok(())
    }

    fn open_file(&mut self) -> Result<(), BagError> {
        let relative = format!("{}_{}.mcap", self.stem, self.files.len());
        let path = self.dir.join(&relative);
        let file = File::create(&path).map_err(|e| BagError::io(&path, e))?;
        let compression = match self.options.compression {
            Compression::None => None,
            Compression::Zstd => Some(mcap::Compression::Zstd),
        };
        let mut writer = mcap::WriteOptions::new()
            .profile("ros2")
            .library(concat!("dreamplan ", env!("CARGO_PKG_VERSION")))
            .compression(compression)
            .chunk_size(Some(self.options.chunk_size))
            .compression_threads(0)
            .create(BufWriter::with_capacity(1 << 20, file))
            .map_err(mcap_err)?;
        // The header goes to disk now: a file left empty until the first flush (a second
        // later) made a recording killed in between unreadable as a whole.
        writer.flush().map_err(mcap_err)?;
        self.current = Some(OpenFile {
            writer,
            relative,
            channels: BTreeMap::new(),
            schemas: BTreeMap::new(),
            first: None,
            last: 0,
            count: 0,
            sequence: 0,
            bytes: 0,
        });
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), BagError> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        let info = FileInfo {
            path: f.relative.clone(),
            starting_time: Since {
                nanoseconds_since_epoch: f.first.unwrap_or(0),
            },
            duration: Nanoseconds {
                nanoseconds: f.last.saturating_sub(f.first.unwrap_or(f.last)),
            },
            message_count: f.count,
        };
        self.files.push(info);
        let yaml = serde_yaml::to_string(&self.metadata())
            .map_err(|e| BagError::Metadata(e.to_string()))?;
        let record = mcap::records::Metadata {
            name: "rosbag2".into(),
            metadata: BTreeMap::from([
                ("serialized_metadata".to_string(), yaml),
                ("ROS_DISTRO".to_string(), self.options.ros_distro.clone()),
            ]),
        };
        f.writer.write_metadata(&record).map_err(mcap_err)?;
        f.writer.finish().map_err(mcap_err)?;
        use std::io::Write as _;
        f.writer
            .into_inner()
            .flush()
            .map_err(|e| BagError::io(&self.dir.join(&f.relative), e))?;
        Ok(())
    }

    fn metadata(&self) -> BagMetadata {
        let first = self
            .files
            .iter()
            .filter(|f| f.message_count > 0)
            .map(|f| f.starting_time.nanoseconds_since_epoch)
            .min();
        let last = self
            .files
            .iter()
            .filter(|f| f.message_count > 0)
            .map(|f| f.starting_time.nanoseconds_since_epoch + f.duration.nanoseconds)
            .max();
        BagMetadata {
            version: 5,
            storage_identifier: "mcap".into(),
            relative_file_paths: self.files.iter().map(|f| f.path.clone()).collect(),
            duration: Nanoseconds {
                nanoseconds: match (first, last) {
                    (Some(a), Some(b)) => b - a,
                    _ => 0,
                },
            },
            starting_time: Since {
                nanoseconds_since_epoch: first.unwrap_or(0),
            },
            message_count: self.files.iter().map(|f| f.message_count).sum(),
            topics_with_message_count: self
                .topics
                .iter()
                .map(|t| TopicWithCount {
                    topic_metadata: TopicMetadata {
                        name: t.name.clone(),
                        type_name: t.type_name.clone(),
                        serialization_format: "cdr".into(),
                        offered_qos_profiles: serde_yaml::Value::String(t.qos_yaml.clone()),
                        type_description_hash: String::new(),
                    },
                    message_count: t.count,
                })
                .collect(),
            compression_format: String::new(),
            compression_mode: String::new(),
            files: self.files.clone(),
            custom_data: None,
            ros_distro: None,
        }
    }

    /// Finishes the last file and writes `metadata.yaml`.
    pub fn finish(mut self) -> Result<WrittenBag, BagError> {
        if self.current.is_none() && self.files.is_empty() {
            // An empty bag still gets one (empty) storage file, like ros2 bag record.
            self.open_file()?;
        }
        self.close_file()?;
        let metadata = self.metadata();
        let path = self.dir.join("metadata.yaml");
        let text = serde_yaml::to_string(&MetadataFile {
            rosbag2_bagfile_information: metadata.clone(),
        })
        .map_err(|e| BagError::Metadata(e.to_string()))?;
        // Through a temporary file and a rename: a kill or a full disk while it is written
        // leaves no half file, which no reader would open (plain `write` before session 52).
        crate::train::checkpoint::write_atomic(&path, text.as_bytes())
            .map_err(|e| BagError::io(&path, e))?;
        Ok(WrittenBag {
            dir: self.dir.clone(),
            metadata,
        })
    }

    /// The bag directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The MCAP error with its cause: mcap's own text for an I/O error does not say which
/// ("I/O error from writing, …"), the cause does ("No space left on device").
fn mcap_err(e: mcap::McapError) -> BagError {
    match std::error::Error::source(&e) {
        Some(cause) => BagError::Mcap(format!("{e}: {cause}")),
        None => BagError::Mcap(e.to_string()),
    }
}
