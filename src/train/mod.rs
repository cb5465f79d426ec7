//! Training: the tiny zero-shot planner ([`zero_shot`]), preference data from a planner and
//! a verifier ([`preferences`]), the ORPO trainer ([`orpo`]), and what every trainer
//! shares: an AdamW whose state is saved with the weights ([`adamw`]) and atomic
//! single-file checkpoints ([`checkpoint`]).

pub mod adamw;
pub mod checkpoint;
pub mod orpo;
pub mod preferences;
pub mod zero_shot;
