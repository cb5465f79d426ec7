//! rosbag2 bags: write (MCAP), read (MCAP and sqlite3), replay onto a bus, and the
//! DreamPlan transition view that training reads.
//!
//! Bags written here are real rosbag2 bags: `ros2 bag info/play`, Foxglove and the Python
//! `rosbags` library read them (tests check the latter both ways).

mod mcap_read;
mod metadata;
mod reader;
pub mod replay;
mod sqlite;
pub mod transitions;
mod writer;

use std::path::{Path, PathBuf};

pub use metadata::{
    parse_qos_profiles, qos_profiles_yaml, BagMetadata, FileInfo, TopicMetadata, TopicWithCount,
};
pub use reader::{
    count_messages, written_whole, BagReader, Decodable, Filter, Messages, RawRecord, TopicInfo,
};
pub use writer::{BagWriter, Compression, TopicId, WriterOptions, WrittenBag};

/// What can go wrong with a bag.
#[derive(Debug, thiserror::Error)]
pub enum BagError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The output directory exists already.
    #[error("{0} exists already; choose a new bag directory")]
    Exists(PathBuf),
    /// Neither MCAP nor sqlite3 rosbag2 storage.
    #[error("{0} is not a rosbag2 storage file (MCAP or sqlite3)")]
    NotABag(PathBuf),
    /// A directory without storage files.
    #[error("{0} holds no .mcap or .db3 file")]
    NoStorage(PathBuf),
    /// metadata.yaml could not be parsed or written.
    #[error("metadata.yaml: {0}")]
    Metadata(String),
    /// The MCAP writer failed.
    #[error("MCAP: {0}")]
    Mcap(String),
    /// A storage file is damaged (truncated, bad CRC, garbage); messages before the
    /// damage were delivered.
    #[error("{file} is damaged: {reason} (messages before this point were read)")]
    Damaged {
        /// The file.
        file: PathBuf,
        /// What the MCAP reader reported.
        reason: String,
    },
    /// An sqlite3 storage file could not be queried.
    #[error("{file}: sqlite: {reason}")]
    Sqlite {
        /// The file.
        file: PathBuf,
        /// What sqlite reported.
        reason: String,
    },
    /// A topic was registered twice with different types.
    #[error("topic {topic} carries {existing}, not {requested}")]
    TypeConflict {
        /// The topic.
        topic: String,
        /// Its type.
        existing: String,
        /// The type asked for.
        requested: String,
    },
    /// A message was decoded as another type than the one recorded.
    #[error("topic {topic} holds {recorded}, not {requested}")]
    WrongType {
        /// The topic.
        topic: String,
        /// The recorded type.
        recorded: String,
        /// The type asked for.
        requested: &'static str,
    },
    /// A payload did not decode.
    #[error("topic {topic} at {log_time} ns: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// The message's log time.
        log_time: u64,
        /// The codec's error.
        #[source]
        source: crate::msg::CodecError,
    },
}

impl BagError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        BagError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
