//! Fuzzes the planner's answer parsing: the keypoint counts come from the first two bytes,
//! the answer is the rest (any UTF-8). Parsing must never panic, and an accepted answer
//! names keypoints that exist. The reasoning line's parser gets the same text.
//!
//! `cargo fuzz run answer_parser`
#![no_main]

use dreamplan::planner::grammar::{parse_answer, Lookup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [n, m, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (n, m) = (*n as usize % 17, *m as usize % 17);
    if let Ok(choice) = parse_answer(text, n, m) {
        assert!((1..=n as u32).contains(&choice.pick), "{text:?}");
        assert!((1..=m as u32).contains(&choice.place), "{text:?}");
    }
    for line in text.lines() {
        let _ = Lookup::parse(line);
    }
});
