//! In-process bus behaviour a node author relies on: keep-last queues bound memory,
//! latched messages reach late joiners, shutdown wakes every reader, names and types
//! are checked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use dreamplan::bus::{Bus, BusError, LocalBus, Qos};
use dreamplan::msg::prelude::*;

struct Counting;
thread_local! { static LIVE: Cell<usize> = const { Cell::new(0) }; }
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + l.size()));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get().saturating_sub(l.size())));
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

fn image(width: u32, height: u32, fill: u8) -> Image {
    Image {
        header: Header {
            stamp: Time::from_nanos(fill as i64),
            frame_id: "cam".into(),
        },
        width,
        height,
        encoding: "rgb8".into(),
        step: width * 3,
        data: vec![fill; (width * height * 3) as usize],
        ..Default::default()
    }
}

#[test]
fn a_subscriber_that_never_reads_keeps_only_depth_messages() {
    let bus = LocalBus::default();
    let publisher = bus
        .publisher::<Image>("/camera/image_raw", Qos::sensor_data())
        .unwrap();
    let sub = bus
        .subscribe::<Image>("/camera/image_raw", Qos::keep_last(4))
        .unwrap();
    let one_image = 160 * 120 * 3;
    let live_before = LIVE.with(|c| c.get());
    for i in 0..2000u32 {
        publisher.publish(image(160, 120, i as u8)).unwrap();
    }
    let growth = LIVE.with(|c| c.get()).saturating_sub(live_before);
    // 2000 images were published (115 MB); only the 4 queued ones may remain alive.
    assert!(growth < 5 * one_image, "memory grew by {growth} bytes");
    assert_eq!(sub.queued(), 4);
    assert_eq!(sub.dropped(), 1996);
    assert_eq!(sub.received(), 2000);
}

#[tokio::test]
async fn a_slow_subscriber_gets_the_newest_messages_in_order() {
    let bus = LocalBus::default();
    let publisher = bus.publisher::<Time>("/t", Qos::default()).unwrap();
    let mut sub = bus.subscribe::<Time>("/t", Qos::keep_last(3)).unwrap();
    for i in 0..10 {
        publisher.publish(Time { sec: i, nanosec: 0 }).unwrap();
    }
    let got: Vec<i32> = [sub.recv().await, sub.recv().await, sub.recv().await]
        .into_iter()
        .map(|m| m.unwrap().sec)
        .collect();
    assert_eq!(got, vec![7, 8, 9]);
    assert!(sub.try_recv().is_none());
}

#[tokio::test]
async fn a_latched_goal_image_reaches_a_subscriber_that_joins_late() {
    let bus = LocalBus::default();
    let goal_pub = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    goal_pub.publish(image(8, 8, 1)).unwrap();
    goal_pub.publish(image(8, 8, 2)).unwrap();
    // Joins after both were published: gets the last one (latched depth 1), at once.
    let mut late = bus
        .subscribe::<Image>("/goal/image", Qos::latched())
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), late.recv())
        .await
        .expect("latched message")
        .unwrap();
    assert_eq!(got.data[0], 2);
    assert!(late.try_recv().is_none());
    // A volatile subscriber does not get history.
    let mut volatile = bus
        .subscribe::<Image>("/goal/image", Qos::keep_last(1))
        .unwrap();
    assert!(volatile.try_recv().is_none());
    goal_pub.publish(image(8, 8, 3)).unwrap();
    assert_eq!(volatile.recv().await.unwrap().data[0], 3);
    assert_eq!(late.recv().await.unwrap().data[0], 3);
}

/// Each latched publisher keeps its own last `depth` messages, as a ROS 2 writer does: a
/// second publisher of depth 1 on the topic trimmed the first one's history to one
/// message before session 43.
#[test]
fn each_latched_publisher_keeps_its_own_history() {
    let bus = LocalBus::default();
    let deep = bus
        .publisher::<Image>("/goal/image", Qos::keep_last(3).transient_local())
        .unwrap();
    let shallow = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    for fill in [1, 2, 3] {
        deep.publish(image(2, 2, fill)).unwrap();
    }
    shallow.publish(image(2, 2, 10)).unwrap();
    deep.publish(image(2, 2, 4)).unwrap();
    shallow.publish(image(2, 2, 11)).unwrap();
    let mut late = bus
        .subscribe::<Image>("/goal/image", Qos::keep_last(10).transient_local())
        .unwrap();
    let got: Vec<u8> = std::iter::from_fn(|| late.try_recv().map(|m| m.data[0])).collect();
    // The deep publisher's last three and the shallow one's last, in the order sent.
    assert_eq!(got, vec![2, 3, 4, 11]);
}

/// A transient-local subscriber that joins while a latched publisher sends gets every
/// message from the one latched at its joining on, each exactly once. Before session 43
/// the history was read and the subscriber registered under two locks, so a message
/// sent between the two was lost to it (or came twice).
#[test]
fn a_subscriber_joining_during_sends_misses_nothing_and_gets_nothing_twice() {
    let bus = LocalBus::default();
    let publisher = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    publisher.publish(image(1, 1, 0)).unwrap();
    let n: i64 = 200_000;
    let sender = std::thread::spawn(move || {
        for i in 1..=n {
            let mut m = image(1, 1, 0);
            m.header.stamp = Time::from_nanos(i);
            publisher.publish(m).unwrap();
        }
    });
    let mut subs = Vec::new();
    while !sender.is_finished() {
        subs.push(
            bus.subscribe::<Image>(
                "/goal/image",
                Qos::keep_last(n as usize + 1).transient_local(),
            )
            .unwrap(),
        );
        if subs.len() > 16 {
            // Check the oldest as we go, so memory stays small.
            check_consecutive(&mut subs.remove(0));
        }
        std::thread::yield_now();
    }
    sender.join().unwrap();
    assert!(!subs.is_empty());
    for mut sub in subs {
        check_consecutive(&mut sub);
    }
}

fn check_consecutive(sub: &mut dreamplan::bus::Subscriber<Image>) {
    let stamps: Vec<i64> =
        std::iter::from_fn(|| sub.try_recv().map(|m| m.header.stamp.as_nanos())).collect();
    assert!(
        !stamps.is_empty(),
        "a transient-local subscriber got no latched message"
    );
    for w in stamps.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "a message was lost or came twice: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// A publisher waiting for room in a full queue (`bag play --fast`) goes on once the
/// reader is dropped or the bus shuts down: it waited for ever before session 42.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_waiting_for_room_goes_on_when_the_reader_goes_or_the_bus_shuts_down() {
    for shut_down in [false, true] {
        let bus = LocalBus::default();
        let publisher = bus.publisher::<Time>("/t", Qos::keep_last(1)).unwrap();
        let reader = bus.subscribe::<Time>("/t", Qos::keep_last(1)).unwrap();
        publisher.publish(Time::default()).unwrap();
        let waiting = tokio::spawn(async move { publisher.wait_for_room().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "room in a full queue");
        if shut_down {
            bus.shutdown();
        } else {
            drop(reader);
        }
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("still waiting for room")
            .unwrap();
    }
}

#[tokio::test]
async fn shutdown_wakes_waiting_readers_after_draining() {
    let bus = LocalBus::default();
    let publisher = bus.publisher::<Time>("/t", Qos::default()).unwrap();
    let mut sub = bus.subscribe::<Time>("/t", Qos::default()).unwrap();
    publisher.publish(Time { sec: 1, nanosec: 0 }).unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while sub.recv().await.is_some() {
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    bus.shutdown();
    let n = tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .expect("reader woke up")
        .unwrap();
    assert_eq!(n, 1);
    assert!(matches!(
        publisher.publish(Time::default()),
        Err(BusError::Closed(_))
    ));
    assert!(matches!(
        bus.subscribe::<Time>("/t", Qos::default()),
        Err(BusError::Closed(_))
    ));
}

#[test]
fn topic_names_and_types_are_checked() {
    let bus = LocalBus::default();
    bus.publisher::<Time>("clock_like", Qos::default()).unwrap();
    assert_eq!(
        bus.topic_types().get("/clock_like").map(String::as_str),
        Some("builtin_interfaces/msg/Time")
    );
    let err = bus
        .subscribe::<Image>("/clock_like", Qos::default())
        .err()
        .unwrap();
    assert!(matches!(err, BusError::TypeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("builtin_interfaces/msg/Time"));
    for bad in ["", "/", "a//b", "a/", "2d/points", "a b", "é"] {
        assert!(
            matches!(
                bus.publisher::<Time>(bad, Qos::default()),
                Err(BusError::InvalidTopic { .. })
            ),
            "{bad:?} accepted"
        );
    }
}

#[tokio::test]
async fn a_dropped_subscriber_no_longer_receives_and_costs_nothing() {
    let bus = LocalBus::default();
    let publisher = bus.publisher::<Image>("/img", Qos::default()).unwrap();
    let sub = bus.subscribe::<Image>("/img", Qos::keep_last(100)).unwrap();
    drop(sub);
    let before = LIVE.with(|c| c.get());
    for i in 0..50 {
        publisher.publish(image(64, 64, i)).unwrap();
    }
    assert!(
        LIVE.with(|c| c.get()).saturating_sub(before) < 64 * 64 * 3,
        "messages were kept for a dropped subscriber"
    );
}

/// The monitor reads a topic as its publishers offer it (as the recorder does): a
/// latched goal sent before the monitor joined is counted without naming the topic in
/// `latched_topics` (before session 43 it read every unnamed topic volatile and reliable,
/// and over DDS a reliable reader saw nothing of a best-effort camera).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_reads_a_topic_as_its_publishers_offer_it() {
    use dreamplan::nodes::monitor::{MonitorConfig, MonitorNode};
    use dreamplan::nodes::{Node, NodeContext};
    let bus = LocalBus::default();
    let goal = bus
        .publisher::<Image>("/goal/image", Qos::latched())
        .unwrap();
    goal.publish(image(4, 4, 1)).unwrap();
    let node = MonitorNode::new(MonitorConfig {
        topics: vec!["/goal/image".into()],
        report_every_s: 0.1,
        ..Default::default()
    })
    .unwrap();
    let stats = node.stats();
    let stop = tokio_util::sync::CancellationToken::new();
    let ctx = NodeContext {
        name: "monitor".into(),
        bus: bus.clone(),
        shutdown: stop.clone(),
        params: dreamplan::nodes::params::LiveParams::fixed(),
    };
    let task = tokio::spawn(node.run(ctx));
    let t0 = std::time::Instant::now();
    let counted = loop {
        let n = stats
            .lock()
            .unwrap()
            .get("/goal/image")
            .map_or(0, |s| s.messages);
        if n > 0 || t0.elapsed() > Duration::from_secs(10) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(counted, 1, "the goal latched before the monitor joined");
}
