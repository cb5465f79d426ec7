//! Rust mirrors of every ROS 2 message the nodes exchange, and their CDR codec.
//!
//! The structs are generated at build time from `.msg` files (see `build.rs`): the
//! project's own interfaces in `msg/` (ROS package `dreamplan`) and the standard types in
//! `src/msg/defs/`. Each type knows its ROS type name and full definition text
//! ([`Message`]), which is what rosbag2 schemas and r2r's untyped API need.
//!
//! On the wire a message is the 4-byte encapsulation header followed by CDR (the
//! `cdr-encoding` crate does the bytes). Decoding is total: any input gives a value or a
//! [`CodecError`], never a panic, and allocation is bounded by what the input can
//! describe (sequence lengths are never trusted for pre-allocation).

mod codec;
pub mod schema;
mod time;

pub use codec::{
    decode, encode, encode_into, encoded_len, CodecError, ENCAPSULATION_CDR_BE,
    ENCAPSULATION_CDR_LE,
};

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/messages.rs"));
}
pub use generated::*;

/// A ROS 2 message type: serde-mirrored fields in CDR order plus its ROS identity.
pub trait Message:
    serde::Serialize
    + serde::de::DeserializeOwned
    + Clone
    + PartialEq
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Full ROS 2 type name, e.g. `sensor_msgs/msg/Image`.
    const TYPE_NAME: &'static str;
    /// The `.msg` text followed by every dependency, each after a line of 80 `=` and
    /// `MSG: pkg/Name` (rosbag2's `ros2msg` schema layout).
    const DEFINITION: &'static str;

    /// CDR bytes with the little-endian encapsulation header.
    fn to_cdr(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parses CDR bytes (either endianness) into this type.
    fn from_cdr(bytes: &[u8]) -> Result<Self, CodecError> {
        decode(bytes)
    }
}

/// Something to do with a message type chosen at run time by name (see [`visit_type`]).
pub trait TypeVisitor {
    /// What the visit produces.
    type Output;
    /// Called with the type the name resolved to.
    fn visit<M: Message>(self) -> Self::Output;
}

/// `pkg/Name` or `pkg/msg/Name` → `pkg/msg/Name`; `None` if the name is malformed.
pub fn normalize_type_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        [pkg, n] if !pkg.is_empty() && !n.is_empty() => Some(format!("{pkg}/msg/{n}")),
        [pkg, "msg", n] if !pkg.is_empty() && !n.is_empty() => Some(name.to_string()),
        _ => None,
    }
}

/// The most common message types under short names.
pub mod prelude {
    pub use super::builtin_interfaces::{Duration, Time};
    pub use super::dreamplan::{
        ActionCandidates, EpisodeEvent, Keypoint, KeypointAction, KeypointSet, KeypointSets,
        VerifierScores,
    };
    pub use super::geometry_msgs::{Point, Pose, Quaternion};
    pub use super::sensor_msgs::{CameraInfo, Image, JointState};
    pub use super::std_msgs::Header;
    pub use super::trajectory_msgs::{JointTrajectory, JointTrajectoryPoint};
    pub use super::Message;
}
