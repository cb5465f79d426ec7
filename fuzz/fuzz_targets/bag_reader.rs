//! Fuzzes the MCAP bag reader: any bytes must open or fail cleanly, and iterating and
//! decoding whatever opens must never panic.
//!
//! `cargo fuzz run bag_reader fuzz/corpus/bag_reader` (seeds: `fuzz/seed.sh`).
#![no_main]

#[path = "read_bag.rs"]
mod read_bag;

use dreamplan::bag::BagReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = BagReader::from_mcap_bytes(data.to_vec()) else {
        return;
    };
    read_bag::read_all(&reader);
});
