//! Zero-copy, log-time-ordered reading of MCAP files.
//!
//! Why not the `mcap` crate's readers: its streaming readers copy every record through a
//! sans-io buffer and allocate per message, which caps reading at a fraction of the disk
//! speed (see README → Benchmarks). MCAP's record framing is simple (opcode, u64 length,
//! body), so this module frames records over the memory map itself, borrows message
//! payloads straight from uncompressed chunks, decompresses zstd/lz4 chunks once, checks
//! chunk CRCs, and merges chunks whose time ranges overlap so messages come out in
//! log-time order, like `ros2 bag play`. It still uses the crate's `parse_record` for
//! schema, channel and chunk headers, and `Summary::read` for indexed files.
//!
//! Damage (truncation, bad CRC, undecompressable chunk) ends the stream with one error
//! after every message from the intact chunks before it.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use super::BagError;

pub(crate) const MAGIC: &[u8; 8] = b"\x89MCAP0\r\n";
const OP_SCHEMA: u8 = 0x03;
const OP_CHANNEL: u8 = 0x04;
const OP_MESSAGE: u8 = 0x05;
const OP_CHUNK: u8 = 0x06;
const OP_FOOTER: u8 = 0x02;
const OP_DATA_END: u8 = 0x0F;
/// Largest chunk we agree to decompress (a hostile header cannot make us reserve more).
const MAX_CHUNK: u64 = 1 << 32;

/// A channel as declared in the file.
#[derive(Debug, Clone)]
pub(crate) struct ChannelDecl {
    pub topic: String,
    pub schema_name: String,
    pub schema_encoding: String,
    pub schema_data: Vec<u8>,
    pub message_encoding: String,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Where a chunk (or a lone top-level message) sits in the file.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Offset of the record body.
    body: usize,
    len: usize,
    start_time: u64,
    is_chunk: bool,
}

/// The layout of one MCAP file, found when opening it.
pub(crate) struct McapIndex {
    pub channels: HashMap<u16, ChannelDecl>,
    /// Per-channel message counts from the summary, when the file has one.
    pub counts: Option<HashMap<u16, u64>>,
    blocks: Vec<Block>,
    /// Damage found while scanning a file without a summary.
    damage: Option<String>,
}

impl McapIndex {
    /// Whether the file was opened from its summary (written whole) rather than scanned
    /// (cut off, or written by a recorder that stopped before its footer).
    pub fn has_summary(&self) -> bool {
        self.counts.is_some()
    }

    /// The earliest log time a block of the file may hold (`u64::MAX`: no blocks).
    pub fn start_time(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| b.start_time)
            .min()
            .unwrap_or(u64::MAX)
    }
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u64le(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// Splits `buf` into (opcode, body offset, body length) records.
struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Iterator for Frames<'_> {
    type Item = Result<(u8, usize, usize), String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let Some(len) = u64le(self.buf, self.pos + 1) else {
            self.pos = self.buf.len();
            return Some(Err(format!(
                "truncated record header at byte {}",
                self.pos_start()
            )));
        };
        let op = self.buf[self.pos];
        let body = self.pos + 9;
        if len > (self.buf.len() - body.min(self.buf.len())) as u64 {
            let at = self.pos;
            self.pos = self.buf.len();
            return Some(Err(format!(
                "record at byte {at} is cut off ({len} bytes declared)"
            )));
        }
        self.pos = body + len as usize;
        Some(Ok((op, body, len as usize)))
    }
}

impl Frames<'_> {
    fn pos_start(&self) -> usize {
        self.pos
    }
}

fn note_decl(
    op: u8,
    body: &[u8],
    schemas: &mut HashMap<u16, (String, String, Vec<u8>)>,
    channels: &mut HashMap<u16, ChannelDecl>,
) {
    match mcap::read::parse_record(op, body) {
        Ok(mcap::records::Record::Schema { header, data }) => {
            schemas.insert(header.id, (header.name, header.encoding, data.into_owned()));
        }
        Ok(mcap::records::Record::Channel(c)) => {
            let (schema_name, schema_encoding, schema_data) =
                schemas.get(&c.schema_id).cloned().unwrap_or_default();
            channels.insert(
                c.id,
                ChannelDecl {
                    topic: c.topic,
                    schema_name,
                    schema_encoding,
                    schema_data,
                    message_encoding: c.message_encoding,
                    metadata: c.metadata,
                },
            );
        }
        _ => {}
    }
}

/// A chunk's records, decompressed if needed, CRC-checked.
fn chunk_records<'a>(map: &'a [u8], block: &Block) -> Result<(u64, Cow<'a, [u8]>), String> {
    let body = &map[block.body..block.body + block.len];
    let (header, data) = match mcap::read::parse_record(OP_CHUNK, body) {
        Ok(mcap::records::Record::Chunk { header, data }) => (header, data),
        Ok(_) => return Err("not a chunk".into()),
        Err(e) => return Err(format!("bad chunk header: {e}")),
    };
    // `parse_record` borrows the body; recover the borrowed slice's position.
    let data: &'a [u8] = match data {
        Cow::Borrowed(d) => {
            let offset = d.as_ptr() as usize - body.as_ptr() as usize;
            &body[offset..offset + d.len()]
        }
        Cow::Owned(_) => return Err("chunk data was copied".into()),
    };
    if header.uncompressed_size > MAX_CHUNK {
        return Err(format!(
            "chunk claims {} uncompressed bytes",
            header.uncompressed_size
        ));
    }
    let records: Cow<'a, [u8]> = match header.compression.as_str() {
        "" => Cow::Borrowed(data),
        "zstd" => Cow::Owned(
            zstd::bulk::decompress(data, header.uncompressed_size as usize)
                .map_err(|e| format!("zstd: {e}"))?,
        ),
        "lz4" => {
            use std::io::Read as _;
            let mut out = Vec::with_capacity(
                (header.uncompressed_size as usize).min(data.len().saturating_mul(255)),
            );
            lz4::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(|e| format!("lz4: {e}"))?;
            Cow::Owned(out)
        }
        other => return Err(format!("unsupported chunk compression `{other}`")),
    };
    if records.len() as u64 != header.uncompressed_size {
        return Err(format!(
            "chunk decompressed to {} bytes, header says {}",
            records.len(),
            header.uncompressed_size
        ));
    }
    if header.uncompressed_crc != 0 {
        let crc = crc32fast::hash(&records);
        if crc != header.uncompressed_crc {
            return Err(format!(
                "chunk CRC mismatch (stored {:#010x}, computed {crc:#010x})",
                header.uncompressed_crc
            ));
        }
    }
    Ok((header.message_start_time, records))
}

impl McapIndex {
    /// Finds channels and chunks: from the summary when the file is complete, else by
    /// scanning (which also finds where a crashed recording ends).
    pub fn build(map: &[u8], path: &Path) -> Result<Self, BagError> {
        if map.len() < MAGIC.len() || &map[..8] != MAGIC {
            return Err(BagError::NotABag(path.to_path_buf()));
        }
        if let Ok(Some(summary)) = mcap::Summary::read(map) {
            // A damaged summary can name chunks that are not there, or offsets whose sum
            // overflows (found by the bag_reader fuzz target): then the summary is not
            // trusted and the data section is scanned, so no intact chunk is lost.
            let fits = |ci: &mcap::records::ChunkIndex| {
                ci.chunk_start_offset
                    .checked_add(ci.chunk_length)
                    .is_some_and(|end| end <= map.len() as u64)
                    && ci.chunk_length >= 9
                    && map[ci.chunk_start_offset as usize] == OP_CHUNK
            };
            if (!summary.chunk_indexes.is_empty()
                || summary.stats.as_ref().is_some_and(|s| s.message_count == 0))
                && summary.chunk_indexes.iter().all(fits)
            {
                let channels = summary
                    .channels
                    .values()
                    .map(|c| {
                        let (n, e, d) = c
                            .schema
                            .as_ref()
                            .map(|s| (s.name.clone(), s.encoding.clone(), s.data.to_vec()))
                            .unwrap_or_default();
                        (
                            c.id,
                            ChannelDecl {
                                topic: c.topic.clone(),
                                schema_name: n,
                                schema_encoding: e,
                                schema_data: d,
                                message_encoding: c.message_encoding.clone(),
                                metadata: c.metadata.clone(),
                            },
                        )
                    })
                    .collect();
                let mut blocks: Vec<Block> = summary
                    .chunk_indexes
                    .iter()
                    .map(|ci| Block {
                        body: ci.chunk_start_offset as usize + 9,
                        len: ci.chunk_length as usize - 9,
                        start_time: ci.message_start_time,
                        is_chunk: true,
                    })
                    .collect();
                blocks.sort_by_key(|b| b.body);
                let counts = summary
                    .stats
                    .map(|s| s.channel_message_counts.into_iter().collect());
                return Ok(Self {
                    channels,
                    counts,
                    blocks,
                    damage: None,
                });
            }
        }
        // No usable summary: scan the data section.
        let mut schemas = HashMap::new();
        let mut channels = HashMap::new();
        let mut blocks = Vec::new();
        let mut damage = None;
        let frames = Frames { buf: map, pos: 8 };
        for f in frames {
            let (op, body, len) = match f {
                Ok(x) => x,
                Err(e) => {
                    damage = Some(e);
                    break;
                }
            };
            match op {
                OP_SCHEMA | OP_CHANNEL => {
                    note_decl(op, &map[body..body + len], &mut schemas, &mut channels)
                }
                OP_MESSAGE => blocks.push(Block {
                    body,
                    len,
                    start_time: u64le(map, body + 6).unwrap_or(0),
                    is_chunk: false,
                }),
                OP_CHUNK => {
                    let block = Block {
                        body,
                        len,
                        start_time: u64le(map, body).unwrap_or(0),
                        is_chunk: true,
                    };
                    match chunk_records(map, &block) {
                        Ok((_, records)) => {
                            for inner in (Frames {
                                buf: &records,
                                pos: 0,
                            }) {
                                let Ok((op, b, l)) = inner else { break };
                                if op == OP_SCHEMA || op == OP_CHANNEL {
                                    note_decl(op, &records[b..b + l], &mut schemas, &mut channels);
                                }
                            }
                            blocks.push(block);
                        }
                        Err(e) => {
                            damage = Some(e);
                            break;
                        }
                    }
                }
                OP_DATA_END | OP_FOOTER => break,
                _ => {}
            }
        }
        Ok(Self {
            channels,
            counts: None,
            blocks,
            damage,
        })
    }
}

/// Message record: channel u16, sequence u32, log_time u64, publish_time u64, then data
/// from byte 22.
fn message_header(body: &[u8]) -> Option<(u16, u64)> {
    if body.len() < 22 {
        return None;
    }
    Some((u16le(body, 0)?, u64le(body, 6)?))
}

/// A message ready to hand out: time, file order (tie-break), channel, payload.
struct Pending<'a> {
    time: u64,
    order: u64,
    channel: u16,
    data: Cow<'a, [u8]>,
}

impl PartialEq for Pending<'_> {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.order) == (o.time, o.order)
    }
}
impl Eq for Pending<'_> {}
impl PartialOrd for Pending<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending<'_> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.order).cmp(&(o.time, o.order))
    }
}

/// Messages of one MCAP file in log-time order: `(channel id, log time, payload)`.
pub(crate) struct McapMessages<'a> {
    map: &'a [u8],
    blocks: &'a [Block],
    /// `suffix_min[i]` = earliest start time of blocks `i..`.
    suffix_min: Vec<u64>,
    next_block: usize,
    heap: BinaryHeap<Reverse<Pending<'a>>>,
    /// Messages of the last loaded chunk, staged before going to `heap` or `in_order`.
    staged: Vec<Pending<'a>>,
    /// Fast path: a chunk that is sorted and ends before every unread chunk starts is
    /// handed out in order without the heap (the common case for recorded bags).
    in_order: std::collections::VecDeque<Pending<'a>>,
    order: u64,
    damage: Option<String>,
    time_range: (u64, u64),
    done: bool,
}

impl<'a> McapMessages<'a> {
    pub fn new(map: &'a [u8], index: &'a McapIndex, time_range: (u64, u64)) -> Self {
        let mut suffix_min = vec![u64::MAX; index.blocks.len() + 1];
        for i in (0..index.blocks.len()).rev() {
            suffix_min[i] = suffix_min[i + 1].min(index.blocks[i].start_time);
        }
        Self {
            map,
            blocks: &index.blocks,
            suffix_min,
            next_block: 0,
            heap: BinaryHeap::new(),
            staged: Vec::new(),
            in_order: Default::default(),
            order: 0,
            damage: index.damage.clone(),
            time_range,
            done: false,
        }
    }

    fn load_block(&mut self, block: Block) -> Result<(), String> {
        if !block.is_chunk {
            let body = &self.map[block.body..block.body + block.len];
            if let Some((channel, time)) = message_header(body) {
                self.push(channel, time, Cow::Borrowed(&body[22..]));
            }
            return Ok(());
        }
        let (_, records) = chunk_records(self.map, &block)?;
        let borrowed: Option<&'a [u8]> = match &records {
            Cow::Borrowed(r) => Some(r),
            Cow::Owned(_) => None,
        };
        for f in (Frames {
            buf: &records,
            pos: 0,
        }) {
            let (op, b, l) = f?;
            if op != OP_MESSAGE {
                continue;
            }
            let body = &records[b..b + l];
            if let Some((channel, time)) = message_header(body) {
                let data = match borrowed {
                    Some(r) => Cow::Borrowed(&r[b + 22..b + l]),
                    None => Cow::Owned(body[22..].to_vec()),
                };
                self.push(channel, time, data);
            }
        }
        Ok(())
    }

    fn push(&mut self, channel: u16, time: u64, data: Cow<'a, [u8]>) {
        let (lo, hi) = self.time_range;
        if time >= lo && time < hi {
            self.order += 1;
            self.staged.push(Pending {
                time,
                order: self.order,
                channel,
                data,
            });
        }
    }
}

impl<'a> Iterator for McapMessages<'a> {
    type Item = Result<(u16, u64, Cow<'a, [u8]>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(p) = self.in_order.pop_front() {
                return Some(Ok((p.channel, p.time, p.data)));
            }
            // Everything at or before the next unread block's start time is final.
            let horizon = self.suffix_min[self.next_block];
            if let Some(Reverse(top)) = self.heap.peek() {
                if top.time < horizon || self.next_block == self.blocks.len() {
                    let Reverse(p) = self.heap.pop().expect("peeked");
                    return Some(Ok((p.channel, p.time, p.data)));
                }
            }
            if self.next_block < self.blocks.len() {
                let block = self.blocks[self.next_block];
                self.next_block += 1;
                let loaded = self.load_block(block);
                if let Err(e) = loaded {
                    // Hand out what came before the damage, then report it.
                    self.damage = Some(e);
                    self.blocks = &self.blocks[..self.next_block - 1];
                    self.suffix_min.truncate(self.blocks.len() + 1);
                    self.next_block = self.blocks.len();
                    *self.suffix_min.last_mut().expect("non-empty") = u64::MAX;
                }
                let horizon = self.suffix_min[self.next_block];
                let sorted = self.staged.windows(2).all(|w| w[0].time <= w[1].time);
                let ends_before = self.staged.last().is_none_or(|p| p.time < horizon);
                if self.heap.is_empty() && sorted && ends_before {
                    self.in_order.extend(self.staged.drain(..));
                } else {
                    self.heap.extend(self.staged.drain(..).map(Reverse));
                }
                continue;
            }
            if self.heap.is_empty() {
                self.done = true;
                return self.damage.take().map(Err);
            }
        }
    }
}
