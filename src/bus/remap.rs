//! Topic remapping (`--ros-args -r FROM:=TO`) in front of any bus: every node of the
//! process publishes and subscribes `TO` where its config says `FROM`, as rcl does for a
//! ROS node. Topics are compared after [`super::resolve_topic`], so `FROM` must be the
//! absolute name the node uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    resolve_topic, AnyDurability, Bus, BusError, Publisher, Qos, Subscriber, TrajectoryClient,
};
use crate::clock::Clock;
use crate::msg::Message;

/// `inner` with its topic names remapped.
#[derive(Clone)]
pub struct Remapped<B> {
    inner: B,
    remaps: Arc<BTreeMap<String, String>>,
}

impl<B: Bus> Remapped<B> {
    /// Wraps `inner`; each `(from, to)` must be a valid topic name.
    pub fn new(inner: B, remaps: &[(String, String)]) -> Result<Self, BusError> {
        let mut map = BTreeMap::new();
        for (from, to) in remaps {
            map.insert(resolve_topic(from)?, resolve_topic(to)?);
        }
        Ok(Self {
            inner,
            remaps: Arc::new(map),
        })
    }

    fn name(&self, topic: &str) -> String {
        match resolve_topic(topic) {
            Ok(t) => self.remaps.get(&t).cloned().unwrap_or(t),
            // The inner bus reports the bad name.
            Err(_) => topic.to_string(),
        }
    }
}

impl<B: Bus> Bus for Remapped<B> {
    fn publisher<M: Message>(&self, topic: &str, qos: Qos) -> Result<Publisher<M>, BusError> {
        self.inner.publisher(&self.name(topic), qos)
    }

    fn subscribe<M: Message>(&self, topic: &str, qos: Qos) -> Result<Subscriber<M>, BusError> {
        self.inner.subscribe(&self.name(topic), qos)
    }

    // Every provided method of `Bus` is passed on, so the inner bus's own version runs
    // (the in-process bus reads any durability through one reader).
    fn subscribe_any_durability<M: Message>(
        &self,
        topic: &str,
        depth: usize,
    ) -> Result<AnyDurability<M>, BusError> {
        self.inner
            .subscribe_any_durability(&self.name(topic), depth)
    }

    fn topic_types(&self) -> BTreeMap<String, String> {
        self.inner.topic_types()
    }

    fn publisher_qos(&self, topic: &str) -> Vec<Qos> {
        self.inner.publisher_qos(&self.name(topic))
    }

    fn clock(&self) -> Clock {
        self.inner.clock()
    }

    fn shutdown(&self) {
        self.inner.shutdown()
    }

    fn settle(&self) -> std::time::Duration {
        self.inner.settle()
    }

    fn serve_parameters(
        &self,
        params: Arc<crate::nodes::params::LiveParams>,
    ) -> Result<(), BusError> {
        self.inner.serve_parameters(params)
    }

    fn trajectory_client(&self, action: &str) -> Result<Arc<dyn TrajectoryClient>, BusError> {
        self.inner.trajectory_client(&self.name(action))
    }

    fn gripper_client(
        &self,
        action: &str,
        kind: &super::GripperKind,
    ) -> Result<Arc<dyn super::GripperClient>, BusError> {
        self.inner.gripper_client(&self.name(action), kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;
    use crate::msg::std_msgs::Bool;

    #[tokio::test]
    async fn a_remapped_topic_reaches_subscribers_of_the_new_name_only() {
        let local = LocalBus::default();
        let bus = Remapped::new(
            local.clone(),
            &[("/camera/image_raw".into(), "/cam/image".into())],
        )
        .unwrap();
        let mut renamed = local
            .subscribe::<Bool>("/cam/image", Qos::keep_last(5))
            .unwrap();
        let mut old = local
            .subscribe::<Bool>("/camera/image_raw", Qos::keep_last(5))
            .unwrap();
        let mut through = bus
            .subscribe::<Bool>("/camera/image_raw", Qos::keep_last(5))
            .unwrap();
        bus.publisher::<Bool>("/camera/image_raw", Qos::keep_last(5))
            .unwrap()
            .publish(Bool { data: true })
            .unwrap();
        assert!(renamed.try_recv().is_some_and(|m| m.data));
        assert!(
            through.try_recv().is_some(),
            "the node's own subscription is remapped too"
        );
        assert!(old.try_recv().is_none());
        assert!(bus.topic_types().contains_key("/cam/image"));
        assert!(Remapped::new(local, &[("/a b".into(), "/c".into())]).is_err());
    }

    /// Through the remapping layer (as `dreamplan run` wraps every bus) the in-process
    /// bus still reads a state topic through one reader: each message once, one
    /// subscriber counted. Before the layer passed the method on, the trait's several-reader
    /// default ran (two readers then): every goal arrived twice and counted two subscribers.
    #[tokio::test]
    async fn any_durability_through_the_remapping_reads_each_message_once() {
        let local = LocalBus::default();
        let bus = Remapped::new(local.clone(), &[("/goal".into(), "/g".into())]).unwrap();
        let mut goal = bus.subscribe_any_durability::<Bool>("/goal", 1).unwrap();
        let p = local.publisher::<Bool>("/g", Qos::latched()).unwrap();
        assert_eq!(p.subscriber_count(), Some(1));
        p.publish(Bool { data: true }).unwrap();
        assert!(goal.try_recv().is_some_and(|m| m.data));
        assert!(goal.try_recv().is_none(), "the message came twice");
    }
}
