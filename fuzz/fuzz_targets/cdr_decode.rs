//! Fuzzes the CDR decoder of every message type: the first byte picks the type, the rest
//! is the payload. Decoding must fail cleanly or succeed, and what decodes must encode and
//! decode again to the same bytes.
//!
//! `cargo fuzz run cdr_decode fuzz/corpus/cdr_decode` (seeds: `fuzz/seed.sh`).
#![no_main]

use dreamplan::msg::{visit_type, Message, TypeVisitor, ALL_TYPE_NAMES};
use libfuzzer_sys::fuzz_target;

struct RoundTrip<'a>(&'a [u8]);
impl TypeVisitor for RoundTrip<'_> {
    type Output = ();
    fn visit<M: Message>(self) {
        let Ok(m) = M::from_cdr(self.0) else { return };
        let bytes = m.to_cdr();
        let again = M::from_cdr(&bytes).expect("our own encoding decodes");
        assert_eq!(again.to_cdr(), bytes, "encode ∘ decode is not stable");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    let name = ALL_TYPE_NAMES[which as usize % ALL_TYPE_NAMES.len()];
    visit_type(name, RoundTrip(payload)).expect("a known type");
});
