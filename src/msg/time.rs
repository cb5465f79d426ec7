//! Conversions between ROS time stamps and nanoseconds.

use super::builtin_interfaces::{Duration, Time};

impl Time {
    /// The stamp `nanos` nanoseconds after the epoch (negative values clamp to 0, far
    /// future values to the largest representable stamp).
    pub fn from_nanos(nanos: i64) -> Self {
        let nanos = nanos.max(0);
        let sec = (nanos / 1_000_000_000).min(i32::MAX as i64) as i32;
        Self {
            sec,
            nanosec: (nanos % 1_000_000_000) as u32,
        }
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(&self) -> i64 {
        self.sec as i64 * 1_000_000_000 + self.nanosec as i64
    }

    /// Seconds since the epoch as a float.
    pub fn as_secs_f64(&self) -> f64 {
        self.as_nanos() as f64 * 1e-9
    }
}

impl Duration {
    /// A span of `secs` seconds (rounded to the nanosecond).
    pub fn from_secs_f64(secs: f64) -> Self {
        let nanos = (secs * 1e9).round() as i64;
        Self {
            sec: nanos.div_euclid(1_000_000_000) as i32,
            nanosec: nanos.rem_euclid(1_000_000_000) as u32,
        }
    }

    /// The span in seconds.
    pub fn as_secs_f64(&self) -> f64 {
        self.sec as f64 + self.nanosec as f64 * 1e-9
    }
}
