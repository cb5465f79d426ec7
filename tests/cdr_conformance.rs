//! CDR conformance against PyPI `rosbags`: for every case in
//! `tests/fixtures/cdr/cases.json`, encoding the value here gives exactly the bytes
//! rosbags wrote (`scripts/gen_cdr_fixtures.py`), and decoding those bytes gives the value.
//! Also checks every mirrored type's definition against rosbags' own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;

use common::expand;
use dreamplan::msg::{visit_type, Message, TypeVisitor, ALL_TYPE_NAMES};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdr")
}

struct Check {
    name: String,
    value: Value,
    expected: Vec<u8>,
}

impl TypeVisitor for Check {
    type Output = Result<(), String>;
    fn visit<M: Message>(self) -> Result<(), String> {
        let value: M = serde_json::from_value(self.value)
            .map_err(|e| format!("{}: JSON → {}: {e}", self.name, M::TYPE_NAME))?;
        let ours = value.to_cdr();
        if ours != self.expected {
            let at = ours
                .iter()
                .zip(&self.expected)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(self.expected.len()));
            return Err(format!(
                "{}: encoding differs from rosbags at byte {at} (ours {} bytes, rosbags {} bytes)",
                self.name,
                ours.len(),
                self.expected.len()
            ));
        }
        let decoded =
            M::from_cdr(&self.expected).map_err(|e| format!("{}: decode: {e}", self.name))?;
        if decoded != value {
            return Err(format!(
                "{}: decoded value differs from the case's value",
                self.name
            ));
        }
        Ok(())
    }
}

#[test]
fn every_case_matches_rosbags_bytes_both_ways() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap())
            .unwrap();
    assert!(
        cases.len() >= 30,
        "expected the full case list, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut types = BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().unwrap().to_string();
        let type_name = case["type"].as_str().unwrap().to_string();
        let expected = std::fs::read(fixtures().join(format!("{name}.cdr"))).unwrap();
        let check = Check {
            name: name.clone(),
            value: expand(case["value"].clone()),
            expected,
        };
        match visit_type(&type_name, check) {
            Some(Ok(())) => {
                types.insert(type_name);
            }
            Some(Err(e)) => failures.push(e),
            None => failures.push(format!("{name}: type {type_name} unknown to dreamplan")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let untested: Vec<_> = ALL_TYPE_NAMES
        .iter()
        .filter(|t| !types.contains(**t))
        .collect();
    assert!(
        untested.is_empty(),
        "message types without a conformance case: {untested:?}"
    );
}

#[test]
fn big_image_case_is_1280x720_rgb8() {
    use dreamplan::msg::sensor_msgs::Image;
    let bytes = std::fs::read(fixtures().join("image_1280x720_rgb8.cdr")).unwrap();
    let img = Image::from_cdr(&bytes).unwrap();
    assert_eq!(
        (img.width, img.height, img.encoding.as_str(), img.step),
        (1280, 720, "rgb8", 3840)
    );
    assert_eq!(img.data.len(), 1280 * 720 * 3);
    assert_eq!(img.data[1000], ((1000 * 31 + 7) % 256) as u8);
}

/// A definition reduced to what defines the wire format and the type: constants (as a
/// set) and fields (in order), defaults and comments removed, per section.
fn normalize(def: &str) -> Vec<(String, BTreeSet<String>, Vec<String>)> {
    let sep = "=".repeat(80);
    let mut sections = Vec::new();
    for (i, section) in def.split(&format!("{sep}\n")).enumerate() {
        let mut lines = section.lines();
        let name = if i == 0 {
            String::from("<main>")
        } else {
            lines
                .next()
                .unwrap()
                .trim_start_matches("MSG: ")
                .to_string()
        };
        let (mut consts, mut fields) = (BTreeSet::new(), Vec::new());
        for line in lines {
            let code = line.split('#').next().unwrap().trim();
            if code.is_empty() {
                continue;
            }
            if code.contains('=') {
                consts.insert(code.replace(' ', ""));
            } else {
                let toks: Vec<&str> = code.split_whitespace().collect();
                fields.push(format!("{} {}", toks[0], toks[1]));
            }
        }
        sections.push((name, consts, fields));
    }
    sections[1..].sort();
    sections
}

#[test]
fn definitions_match_rosbags() {
    struct Def;
    impl TypeVisitor for Def {
        type Output = &'static str;
        fn visit<M: Message>(self) -> &'static str {
            M::DEFINITION
        }
    }
    for type_name in ALL_TYPE_NAMES {
        let (pkg, name) = type_name.split_once("/msg/").unwrap();
        let path = fixtures().join("msgdef").join(format!("{pkg}__{name}.msg"));
        let theirs =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ours = visit_type(type_name, Def).unwrap();
        assert_eq!(
            normalize(ours),
            normalize(&theirs),
            "definition of {type_name} differs from rosbags'"
        );
    }
}
