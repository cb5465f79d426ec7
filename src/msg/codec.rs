//! CDR encoding with the ROS 2 encapsulation header (RTPS serialized payload header).

use byteorder::{BigEndian, LittleEndian};
use serde::{de::DeserializeOwned, Serialize};

/// Encapsulation header of little-endian plain CDR (what ROS 2 publishes on x86/ARM).
pub const ENCAPSULATION_CDR_LE: [u8; 4] = [0x00, 0x01, 0x00, 0x00];
/// Encapsulation header of big-endian plain CDR.
pub const ENCAPSULATION_CDR_BE: [u8; 4] = [0x00, 0x00, 0x00, 0x00];

/// Why bytes could not be decoded into a message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer than the 4 bytes of the encapsulation header.
    #[error("CDR payload of {0} bytes is shorter than the 4-byte encapsulation header")]
    TooShort(usize),
    /// An encapsulation kind other than plain CDR (e.g. XCDR2 or parameter lists).
    #[error(
        "unsupported CDR encapsulation kind {0:#06x} (expected 0x0001 CDR_LE or 0x0000 CDR_BE)"
    )]
    Encapsulation(u16),
    /// The CDR body does not match the type (truncated, bad UTF-8, bad bool, ...).
    #[error("CDR body does not decode as {type_name}: {source}")]
    Body {
        /// The Rust type that was expected.
        type_name: &'static str,
        /// What the CDR decoder reported.
        #[source]
        source: cdr_encoding::Error,
    },
    /// The body decoded but bytes were left over: almost always the wrong message type.
    #[error("{extra} bytes left over after decoding {type_name} from {total} bytes (wrong message type?)")]
    TrailingBytes {
        /// The Rust type that was decoded.
        type_name: &'static str,
        /// Bytes not consumed.
        extra: usize,
        /// Size of the body.
        total: usize,
    },
    /// Serialisation failed (only for values serde cannot express in CDR).
    #[error("CDR encoding failed: {0}")]
    Encode(cdr_encoding::Error),
}

/// Appends the encapsulation header and little-endian CDR of `value` to `out`.
///
/// Reusing `out` across messages avoids an allocation per message on hot paths.
/// CDR alignment counts from the start of the body, not of `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.extend_from_slice(&ENCAPSULATION_CDR_LE);
    cdr_encoding::to_writer::<T, LittleEndian, _>(&mut *out, value).map_err(CodecError::Encode)
}

/// The encapsulation header plus little-endian CDR of `value`.
///
/// Panics only if `value` holds something CDR cannot express, which no generated
/// message type does (they contain only primitives, strings, arrays and structs).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out).expect("generated message types always serialise to CDR");
    out
}

/// Decodes encapsulated CDR (either endianness) into `T`.
///
/// Up to 3 trailing bytes are accepted: DDS pads payloads to a multiple of 4.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() < 4 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
    let body = &bytes[4..];
    let type_name = std::any::type_name::<T>();
    let (value, used) = match kind {
        0x0001 => cdr_encoding::from_bytes::<T, LittleEndian>(body),
        0x0000 => cdr_encoding::from_bytes::<T, BigEndian>(body),
        other => return Err(CodecError::Encapsulation(other)),
    }
    .map_err(|source| CodecError::Body { type_name, source })?;
    let extra = body.len() - used;
    if extra > 3 {
        return Err(CodecError::TrailingBytes {
            type_name,
            extra,
            total: body.len(),
        });
    }
    Ok(value)
}

/// Size in bytes of `value`'s encapsulated CDR, computed without building the buffer.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(ENCAPSULATION_CDR_LE.len());
    match cdr_encoding::to_writer::<T, LittleEndian, _>(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}
