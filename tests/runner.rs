//! The node runner: a graph runs, nodes exchange real messages, and stopping leaves no
//! task behind — also when a node fails or ignores the stop request.

use std::time::Duration;

use dreamplan::bus::LocalBus;
use dreamplan::config::GraphConfig;
use dreamplan::nodes::{NodeContext, ReadyNode};
use dreamplan::runner::{run_graph, run_nodes};
use tokio_util::sync::CancellationToken;

/// Tasks still alive on this runtime, after giving tokio up to 1 s to release finished
/// ones (its count drops when a task is deallocated, a moment after it is joined).
async fn alive_tasks() -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..100 {
        if metrics.num_alive_tasks() == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metrics.num_alive_tasks()
}

const GRAPH: &str = r#"
duration_s: 1.0
nodes:
  - name: cam
    kind: camera
    params: { rate_hz: 20.0, width: 64, height: 48, image_topic: /cam/image, info_topic: /cam/info }
  - name: mon
    kind: monitor
    params: { topics: [/cam/image, /cam/info], latched_topics: [/cam/info], report_every_s: 0.5 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_images_reach_the_monitor_and_everything_stops() {
    let graph = GraphConfig::from_yaml(GRAPH, "test graph").unwrap();
    let bus = LocalBus::default();
    let report = run_graph(bus, &graph, CancellationToken::new())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut stopped = report.stopped.clone();
    stopped.sort();
    assert_eq!(stopped, vec!["cam".to_string(), "mon".to_string()]);
    assert_eq!(
        alive_tasks().await,
        0,
        "tasks left running after the graph stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_counts_what_the_camera_sends() {
    use dreamplan::nodes::monitor::{MonitorConfig, MonitorNode};
    use dreamplan::nodes::Node;
    let bus = LocalBus::default();
    let cam: dreamplan::nodes::camera::CameraConfig = dreamplan::config::node_config(
        &serde_yaml::from_str("{rate_hz: 50.0, width: 32, height: 16}").unwrap(),
        "t",
    )
    .unwrap();
    let camera = dreamplan::nodes::camera::CameraNode::new(cam).unwrap();
    let monitor = MonitorNode::new(MonitorConfig {
        topics: vec!["/camera/image_raw".into(), "/camera/camera_info".into()],
        latched_topics: vec!["/camera/camera_info".into()],
        report_every_s: 10.0,
        ..Default::default()
    })
    .unwrap();
    let stats = monitor.stats();
    let nodes: Vec<(String, ReadyNode<LocalBus>)> = vec![
        (
            "camera".into(),
            Box::new(move |ctx| Box::pin(camera.run(ctx))),
        ),
        (
            "monitor".into(),
            Box::new(move |ctx| Box::pin(monitor.run(ctx))),
        ),
    ];
    let report = run_nodes(
        bus,
        nodes,
        Some(Duration::from_millis(1500)),
        Duration::from_secs(2),
        CancellationToken::new(),
    )
    .await;
    assert!(report.is_clean(), "{report:?}");
    let stats = stats.lock().unwrap().clone();
    let images = &stats["/camera/image_raw"];
    let info = &stats["/camera/camera_info"];
    assert_eq!(images.type_name, "sensor_msgs/msg/Image");
    // 50 Hz for 1.5 s, minus the monitor's discovery delay (≤ 200 ms) and scheduling slack.
    assert!(
        (30..=80).contains(&images.messages),
        "{} images",
        images.messages
    );
    // Each 32×16 rgb8 image: 4 + header(8 + 4 + 27 + pad) + 5 fields + 4 + 1536 bytes.
    let one = images.bytes / images.messages;
    assert!(
        (1536 + 60..1536 + 120).contains(&one),
        "{one} bytes per image"
    );
    assert_eq!(info.messages, 1, "the latched camera info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_ignores_shutdown_is_aborted_and_reported() {
    let stubborn: ReadyNode<LocalBus> = Box::new(|_ctx: NodeContext<LocalBus>| {
        Box::pin(async {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        })
    });
    let polite: ReadyNode<LocalBus> = Box::new(|ctx: NodeContext<LocalBus>| {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    });
    let report = run_nodes(
        LocalBus::default(),
        vec![("stubborn".into(), stubborn), ("polite".into(), polite)],
        Some(Duration::from_millis(50)),
        Duration::from_millis(200),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.aborted, vec!["stubborn".to_string()]);
    assert_eq!(report.stopped, vec!["polite".to_string()]);
    assert!(!report.is_clean());
    assert_eq!(alive_tasks().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_stops_the_graph_and_an_external_stop_works() {
    let failing: ReadyNode<LocalBus> =
        Box::new(|_ctx| Box::pin(async { anyhow::bail!("sensor unplugged") }));
    let waiting: ReadyNode<LocalBus> = Box::new(|ctx: NodeContext<LocalBus>| {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    });
    let report = run_nodes(
        LocalBus::default(),
        vec![("bad".into(), failing), ("ok".into(), waiting)],
        None,
        Duration::from_secs(1),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].1.contains("sensor unplugged"));
    assert_eq!(report.stopped, vec!["ok".to_string()]);

    let stop = CancellationToken::new();
    let waiting: ReadyNode<LocalBus> = Box::new(|ctx: NodeContext<LocalBus>| {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    });
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.cancel();
    });
    let t0 = std::time::Instant::now();
    let report = run_nodes(
        LocalBus::default(),
        vec![("w".into(), waiting)],
        None,
        Duration::from_secs(1),
        stop,
    )
    .await;
    assert!(report.is_clean());
    assert!(t0.elapsed() < Duration::from_secs(1));
}

/// A node still starting when a very short run ends meets a closed bus: that is a stop,
/// not a failure (`dreamplan run --duration 0.0001` exited 1 about half the time). The
/// same error before the graph was told to stop is still a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_meets_the_closed_bus_while_the_graph_stops_has_stopped() {
    use dreamplan::bus::{Bus, Qos};
    use dreamplan::msg::prelude::Image;
    let late: ReadyNode<LocalBus> = Box::new(|ctx: NodeContext<LocalBus>| {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            // Subscribes only after the stop: the runner has closed the bus by then.
            tokio::time::sleep(Duration::from_millis(20)).await;
            ctx.bus.subscribe::<Image>("/late", Qos::keep_last(1))?;
            Ok(())
        })
    });
    let report = run_nodes(
        LocalBus::default(),
        vec![("late".into(), late)],
        Some(Duration::from_millis(10)),
        Duration::from_secs(1),
        CancellationToken::new(),
    )
    .await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.stopped, vec!["late".to_string()]);

    // Closed before any stop: a failure.
    let bus = LocalBus::default();
    bus.shutdown();
    let early: ReadyNode<LocalBus> = Box::new(|ctx: NodeContext<LocalBus>| {
        Box::pin(async move {
            ctx.bus.subscribe::<Image>("/early", Qos::keep_last(1))?;
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    });
    let report = run_nodes(
        bus,
        vec![("early".into(), early)],
        None,
        Duration::from_secs(1),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        report.failed[0].1.contains("bus is shut down"),
        "{report:?}"
    );
}
