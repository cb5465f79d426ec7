//! Decoding untrusted bytes: any input gives a value or an error, never a panic, and the
//! memory a decode allocates is bounded by what the input could describe (a hostile
//! sequence length cannot make it reserve gigabytes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use dreamplan::msg::{visit_type, Message, TypeVisitor, ALL_TYPE_NAMES};
use proptest::prelude::*;

/// Counts live bytes and the peak per thread, so parallel tests do not disturb each other.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}
fn sub(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        sub(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated (above what was live before) while decoding `bytes` as `name`.
struct Decode<'a>(&'a [u8]);
impl TypeVisitor for Decode<'_> {
    type Output = (bool, usize);
    fn visit<M: Message>(self) -> (bool, usize) {
        let before = LIVE.with(|l| l.get());
        PEAK.with(|p| p.set(before));
        let ok = M::from_cdr(self.0).is_ok();
        let peak = PEAK.with(|p| p.get()) - before;
        (ok, peak)
    }
}

/// Allowed allocation for an input of `len` bytes: in-memory structs are larger than
/// their wire form (an empty string is 8 wire bytes but a 24-byte `String`) and vectors
/// grow by doubling; 32× plus a small constant covers that with margin.
fn budget(len: usize) -> usize {
    32 * len + 4096
}

fn check(type_name: &str, bytes: &[u8]) -> Result<bool, TestCaseError> {
    let (ok, peak) = visit_type(type_name, Decode(bytes)).expect("known type");
    prop_assert!(
        peak <= budget(bytes.len()),
        "{type_name}: {peak} bytes allocated for a {}-byte input",
        bytes.len()
    );
    Ok(ok)
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdr");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    cases
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] != "image_1280x720_rgb8")
        .map(|c| {
            let name = c["name"].as_str().unwrap();
            (
                c["type"].as_str().unwrap().to_string(),
                std::fs::read(dir.join(format!("{name}.cdr"))).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_truncation_of_every_fixture_is_an_error_not_a_panic() {
    for (type_name, bytes) in fixtures() {
        assert!(
            check(&type_name, &bytes).unwrap(),
            "{type_name}: the intact fixture must decode"
        );
        for cut in 0..bytes.len().saturating_sub(3) {
            // Up to 3 trailing bytes may be padding, so only cuts that remove more are errors.
            let ok = check(&type_name, &bytes[..cut]).unwrap();
            assert!(
                !ok,
                "{type_name}: truncated to {cut} of {} bytes still decoded",
                bytes.len()
            );
        }
    }
}

#[test]
fn a_huge_sequence_length_allocates_nothing_big() {
    // JointState whose first sequence claims 2^32-1 names, followed by nothing.
    let mut bytes = vec![0, 1, 0, 0];
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // stamp
    bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // frame_id "" (len 1 = NUL) + pad
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let ok = check("sensor_msgs/msg/JointState", &bytes).unwrap();
    assert!(!ok);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(type_idx in 0..ALL_TYPE_NAMES.len(), body in proptest::collection::vec(any::<u8>(), 0..2048), le in any::<bool>()) {
        let mut bytes = vec![0, le as u8, 0, 0];
        bytes.extend_from_slice(&body);
        check(ALL_TYPE_NAMES[type_idx], &bytes)?;
        check(ALL_TYPE_NAMES[type_idx], &body)?;
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let all = fixtures();
        let (type_name, mut bytes) = all[idx.index(all.len())].clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        check(&type_name, &bytes)?;
    }
}
