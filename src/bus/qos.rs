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
