//! Fuzzes the MCAP bag reader: any bytes must open or fail cleanly, and iterating and
//! decoding whatever opens must never panic.
//!
//! `cargo fuzz run bag_reader fuzz/corpus/bag_reader` (seeds: `fuzz/seed.sh`).
#![no_main]

use dreamplan::bag::{BagReader, Filter};
use dreamplan::msg::{visit_type, Message, TypeVisitor};
use libfuzzer_sys::fuzz_target;

struct Decode<'a>(&'a [u8]);
impl TypeVisitor for Decode<'_> {
    type Output = bool;
    fn visit<M: Message>(self) -> bool {
        M::from_cdr(self.0).is_ok()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = BagReader::from_mcap_bytes(data.to_vec()) else {
        return;
    };
    for item in reader.messages(&Filter::default()) {
        let Ok(rec) = item else { break };
        let _ = visit_type(rec.type_name, Decode(&rec.data));
    }
    let _ = reader.transitions(Default::default()).count();
});
