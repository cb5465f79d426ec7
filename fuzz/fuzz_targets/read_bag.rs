//! What both bag targets do with a bag that opened: read every message, decode each with
//! its type's CDR decoder, and pair the episode events into transitions. Included by
//! `bag_reader.rs` and `bag_db3.rs` (`#[path]`); not a target of its own.

use dreamplan::bag::{BagReader, Filter};
use dreamplan::msg::{visit_type, Message, TypeVisitor};

struct Decode<'a>(&'a [u8]);
impl TypeVisitor for Decode<'_> {
    type Output = bool;
    fn visit<M: Message>(self) -> bool {
        M::from_cdr(self.0).is_ok()
    }
}

/// Reads, decodes and pairs everything in `reader`; must never panic.
pub fn read_all(reader: &BagReader) {
    for item in reader.messages(&Filter::default()) {
        let Ok(rec) = item else { break };
        let _ = visit_type(rec.type_name, Decode(&rec.data));
    }
    let _ = reader.transitions(Default::default()).count();
}
