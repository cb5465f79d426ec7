//! Shared by the integration tests: the JSON message cases of `tests/fixtures/cdr`, and the
//! python of the HF reference venv.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dreamplan::msg::{Message, TypeVisitor};
use serde_json::Value;

/// The python of the HF reference venv (`DREAMPLAN_PYTHON_HF`, scripts/requirements-hf.txt),
/// or `None` with a message saying what was skipped. With `DREAMPLAN_REQUIRE_INTEROP` set (CI)
/// a missing interpreter fails the test instead: `what` would otherwise rest on no run.
pub fn hf_python(what: &str) -> Option<String> {
    match std::env::var("DREAMPLAN_PYTHON_HF") {
        Ok(python) => Some(python),
        Err(_) => {
            assert!(
                std::env::var_os("DREAMPLAN_REQUIRE_INTEROP").is_none(),
                "DREAMPLAN_REQUIRE_INTEROP is set but DREAMPLAN_PYTHON_HF is not: {what} cannot \
                 run (python3 -m venv ~/.cache/dreamplan-hf-venv && \
                 ~/.cache/dreamplan-hf-venv/bin/pip install -r scripts/requirements-hf.txt)"
            );
            eprintln!(
                "skipped {what}: set DREAMPLAN_PYTHON_HF to the python of the HF venv \
                 (scripts/requirements-hf.txt)"
            );
            None
        }
    }
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn cdr_fixtures() -> PathBuf {
    root().join("tests/fixtures/cdr")
}

/// `(name, type, value)` of every case, `$pattern` byte arrays expanded.
pub fn cases() -> Vec<(String, String, Value)> {
    let text = std::fs::read_to_string(cdr_fixtures().join("cases.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    cases
        .into_iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
                expand(c["value"].clone()),
            )
        })
        .collect()
}

/// Expands `{"$pattern": {"len", "mul", "add"}}` into the byte array it stands for.
pub fn expand(v: Value) -> Value {
    match v {
        Value::Object(map) if map.contains_key("$pattern") => {
            let p = &map["$pattern"];
            let (len, mul, add) = (
                p["len"].as_u64().unwrap(),
                p["mul"].as_u64().unwrap(),
                p["add"].as_u64().unwrap(),
            );
            Value::Array(
                (0..len)
                    .map(|i| Value::from((i * mul + add) % 256))
                    .collect(),
            )
        }
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, expand(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(expand).collect()),
        other => other,
    }
}

/// The CDR bytes of a JSON case value for the type it is visited with.
pub struct ToCdr(pub Value);
impl TypeVisitor for ToCdr {
    type Output = Vec<u8>;
    fn visit<M: Message>(self) -> Vec<u8> {
        let m: M = serde_json::from_value(self.0).expect("case value fits its type");
        m.to_cdr()
    }
}

/// Whether `bytes` decode to exactly the JSON case value.
pub struct DecodesTo<'a>(pub Value, pub &'a [u8]);
impl TypeVisitor for DecodesTo<'_> {
    type Output = Result<(), String>;
    fn visit<M: Message>(self) -> Result<(), String> {
        let want: M = serde_json::from_value(self.0).map_err(|e| e.to_string())?;
        let got = M::from_cdr(self.1).map_err(|e| e.to_string())?;
        if got == want {
            Ok(())
        } else {
            Err(format!("decoded {got:?}, expected {want:?}"))
        }
    }
}

/// Log time the interop bags use for case `i`.
pub fn case_time(i: usize) -> u64 {
    1_700_000_000_000_000_000 + i as u64 * 1_000_000
}

/// The largest absolute difference between two tensors of one shape, as f32.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
