//! The planner's side of a decision, model-agnostic: the prompt it is given, the answer
//! grammar it must follow, and the baseline planners every result is compared with.
//! The VLM itself lives in [`crate::vlm`]; the node that wires them to topics comes later.

pub mod adapters;
pub mod baselines;
pub mod eval;
pub mod grammar;
pub mod prompt;
pub mod vlm_planner;

pub use grammar::{format_answer, parse_answer, KeypointChoice, ParseError};
