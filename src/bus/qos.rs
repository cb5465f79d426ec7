//! Quality of service, with the ROS 2 meanings.

use serde::Deserialize;

/// Whether a message may be lost to keep up (best effort) or is retried (reliable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    /// Retransmit until delivered (ROS 2 default).
    Reliable,
    /// Drop rather than retry (sensor streams).
    BestEffort,
}

/// Whether late joiners receive messages published before they subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Only messages published after subscribing.
    Volatile,
    /// The publisher keeps its last `depth` messages for late subscribers ("latched").
    TransientLocal,
}

/// History depth, reliability and durability of a publisher or subscription.
///
/// History is always keep-last: a subscriber that falls behind loses its oldest
/// messages instead of growing memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qos {
    /// Keep-last depth (≥ 1).
    pub depth: usize,
    /// Delivery guarantee.
    pub reliability: Reliability,
    /// Late-joiner behaviour.
    pub durability: Durability,
}

impl Qos {
    /// Reliable, volatile, keep the last `depth` messages.
    pub const fn keep_last(depth: usize) -> Self {
        Self {
            depth: if depth == 0 { 1 } else { depth },
            reliability: Reliability::Reliable,
            durability: Durability::Volatile,
        }
    }

    /// Camera-style streams: best effort, depth 5 (ROS 2's `sensor_data` profile).
    pub const fn sensor_data() -> Self {
        Self {
            depth: 5,
            reliability: Reliability::BestEffort,
            durability: Durability::Volatile,
        }
    }

    /// rclcpp's `ClockQoS` for `/clock`: best effort, volatile, depth 1. A best-effort reader
    /// matches every writer (a reliable one too); a reliable reader does not match a
    /// best-effort writer such as `ros2 bag play --clock`'s.
    pub const fn clock() -> Self {
        Self {
            depth: 1,
            reliability: Reliability::BestEffort,
            durability: Durability::Volatile,
        }
    }

    /// Latched: reliable, transient-local, depth 1 (goal images, camera info, config).
    pub const fn latched() -> Self {
        Self {
            depth: 1,
            reliability: Reliability::Reliable,
            durability: Durability::TransientLocal,
        }
    }

    /// The profile a reader that wants every writer of a topic takes, from what they offer
    /// (as `ros2 bag record` adapts; the recorder and the monitor read so): transient-local
    /// when all of them are latched (or `latched` asks for it), so the message sent before
    /// the reader joined arrives too, while a volatile writer beside a latched one is still
    /// matched (over DDS a transient-local reader matches no volatile writer); best effort
    /// when one of them is, since a reliable reader matches no best-effort writer (a camera
    /// driver's `sensor_data` images would never arrive).
    pub fn reader_for(offered: &[Qos], depth: usize, latched: bool) -> Qos {
        let mut qos = Qos::keep_last(depth);
        if latched
            || (!offered.is_empty()
                && offered
                    .iter()
                    .all(|q| q.durability == Durability::TransientLocal))
        {
            qos = qos.transient_local();
        }
        if offered
            .iter()
            .any(|q| q.reliability == Reliability::BestEffort)
        {
            qos.reliability = Reliability::BestEffort;
        }
        qos
    }

    /// A reader of a camera-like stream: best effort, volatile, keep the last `depth`. A
    /// best-effort reader matches a writer of either reliability; a reliable one never
    /// matches a `sensor_data` writer (a camera driver's, or the camera node's), so the
    /// images would never arrive over DDS (before session 46 the planner, the executor's
    /// depth and the verifier read reliable).
    pub const fn stream(depth: usize) -> Self {
        Self {
            depth: if depth == 0 { 1 } else { depth },
            reliability: Reliability::BestEffort,
            durability: Durability::Volatile,
        }
    }

    /// The same profile with transient-local durability.
    pub const fn transient_local(mut self) -> Self {
        self.durability = Durability::TransientLocal;
        self
    }
}

impl Default for Qos {
    /// ROS 2's default profile: reliable, volatile, keep last 10.
    fn default() -> Self {
        Self::keep_last(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_takes_the_profile_its_writers_offer() {
        let reliable = Qos::keep_last(10);
        let sensor = Qos::sensor_data();
        let latched = Qos::latched();
        // Nothing known: reliable, volatile.
        let q = Qos::reader_for(&[], 100, false);
        assert_eq!(
            (q.reliability, q.durability, q.depth),
            (Reliability::Reliable, Durability::Volatile, 100)
        );
        // A best-effort camera, alone or beside a reliable writer: best effort.
        assert_eq!(
            Qos::reader_for(&[sensor], 100, false).reliability,
            Reliability::BestEffort
        );
        assert_eq!(
            Qos::reader_for(&[reliable, sensor], 100, false).reliability,
            Reliability::BestEffort
        );
        // Latched writers, or a topic the config names: transient local, still reliable.
        let q = Qos::reader_for(&[latched], 100, false);
        assert_eq!(
            (q.reliability, q.durability),
            (Reliability::Reliable, Durability::TransientLocal)
        );
        assert_eq!(
            Qos::reader_for(&[reliable], 100, true).durability,
            Durability::TransientLocal
        );
        // A volatile writer beside a latched one: volatile, so that both match.
        assert_eq!(
            Qos::reader_for(&[latched, reliable], 100, false).durability,
            Durability::Volatile
        );
    }
}
