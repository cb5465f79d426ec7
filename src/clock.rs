//! The time source nodes stamp messages with.
//!
//! Injected, never read from the wall inside an algorithm: a run on sim time (a bag
//! replay's `/clock`, the built-in simulator) is then reproducible.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::msg::builtin_interfaces::Time;

/// Wall-clock time, or a simulated time that someone advances.
#[derive(Clone, Debug)]
pub enum Clock {
    /// `SystemTime::now()`.
    System,
    /// Nanoseconds set by the simulation or a `/clock` topic.
    Sim(Arc<AtomicI64>),
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock::System
    }

    /// A simulated clock starting at `start`.
    pub fn sim(start: Time) -> Self {
        Clock::Sim(Arc::new(AtomicI64::new(start.as_nanos())))
    }

    /// The current time.
    pub fn now(&self) -> Time {
        match self {
            Clock::System => {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Time::from_nanos(d.as_nanos().min(i64::MAX as u128) as i64)
            }
            Clock::Sim(ns) => Time::from_nanos(ns.load(Ordering::Acquire)),
        }
    }

    /// Moves a simulated clock to `t` (ignored, with `false`, for the wall clock).
    pub fn set(&self, t: Time) -> bool {
        match self {
            Clock::System => false,
            Clock::Sim(ns) => {
                ns.store(t.as_nanos(), Ordering::Release);
                true
            }
        }
    }
}
