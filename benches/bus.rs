//! In-process bus: publish→receive latency and throughput for 640×480 rgb8 images, and
//! the CDR encode/decode cost of the same image (what the ROS 2 path pays per message).
//!
//! `cargo bench --bench bus` (figures in README.md → Benchmarks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dreamplan::bus::{Bus, LocalBus, Qos};
use dreamplan::msg::prelude::*;

fn vga() -> Image {
    Image {
        header: Header {
            stamp: Time { sec: 1, nanosec: 2 },
            frame_id: "camera_color_optical_frame".into(),
        },
        height: 480,
        width: 640,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 640 * 3,
        data: (0..640 * 480 * 3).map(|i| (i % 251) as u8).collect(),
    }
}

const IMAGE_BYTES: u64 = 640 * 480 * 3;

fn latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_bus_640x480_rgb8");
    g.throughput(Throughput::Bytes(IMAGE_BYTES));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Same task: publish a shared image and receive it (the bus's own overhead).
    g.bench_function("publish_recv_same_task", |b| {
        let bus = LocalBus::default();
        let publisher = bus.publisher::<Image>("/img", Qos::sensor_data()).unwrap();
        let mut sub = bus.subscribe::<Image>("/img", Qos::sensor_data()).unwrap();
        let img = Arc::new(vga());
        b.iter(|| {
            publisher.publish_shared(img.clone()).unwrap();
            rt.block_on(sub.recv()).unwrap()
        });
    });

    // Fresh image each time (allocate + fill 921,600 bytes), as a camera node does.
    g.bench_function("publish_new_image_recv", |b| {
        let bus = LocalBus::default();
        let publisher = bus.publisher::<Image>("/img", Qos::sensor_data()).unwrap();
        let mut sub = bus.subscribe::<Image>("/img", Qos::sensor_data()).unwrap();
        let template = vga();
        b.iter(|| {
            publisher.publish(template.clone()).unwrap();
            rt.block_on(sub.recv()).unwrap()
        });
    });

    // Across tasks on the multi-threaded runtime: one-way latency = round trip / 2
    // (ping on one topic, the echo node answers on another).
    g.bench_function("one_way_latency_across_tasks", |b| {
        let bus = LocalBus::default();
        let ping = bus.publisher::<Image>("/ping", Qos::keep_last(1)).unwrap();
        let mut pong = bus.subscribe::<Image>("/pong", Qos::keep_last(1)).unwrap();
        let echo_pub = bus.publisher::<Image>("/pong", Qos::keep_last(1)).unwrap();
        let mut echo_sub = bus.subscribe::<Image>("/ping", Qos::keep_last(1)).unwrap();
        rt.spawn(async move {
            while let Some(m) = echo_sub.recv().await {
                if echo_pub.publish_shared(m).is_err() {
                    break;
                }
            }
        });
        let img = Arc::new(vga());
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    ping.publish_shared(img.clone()).unwrap();
                    pong.recv().await.unwrap();
                }
                t0.elapsed() / 2
            })
        });
        bus.shutdown();
    });

    // Throughput: a producer task publishes fresh images as fast as it can, a consumer
    // task receives them (depth 64, so nothing is dropped at this rate); time per image.
    g.bench_function("throughput_across_tasks", |b| {
        b.iter_custom(|iters| {
            let bus = LocalBus::default();
            let publisher = bus.publisher::<Image>("/img", Qos::keep_last(64)).unwrap();
            let mut sub = bus.subscribe::<Image>("/img", Qos::keep_last(64)).unwrap();
            let template = vga();
            rt.block_on(async move {
                let consumer = tokio::spawn(async move {
                    let mut n = 0u64;
                    let mut bytes = 0u64;
                    while n < iters {
                        match sub.recv().await {
                            Some(m) => {
                                n += 1;
                                bytes += m.data.len() as u64;
                            }
                            None => break,
                        }
                    }
                    (n + sub.dropped(), bytes)
                });
                let t0 = Instant::now();
                for _ in 0..iters {
                    publisher.publish(template.clone()).unwrap();
                    tokio::task::yield_now().await;
                }
                let (n, _) = consumer.await.unwrap();
                assert_eq!(n, iters);
                t0.elapsed()
            })
        });
    });
    g.finish();
}

fn cdr(c: &mut Criterion) {
    let mut g = c.benchmark_group("cdr_640x480_rgb8");
    g.throughput(Throughput::Bytes(IMAGE_BYTES));
    let img = vga();
    let bytes = img.to_cdr();
    g.bench_function("encode", |b| b.iter(|| img.to_cdr()));
    g.bench_function("decode", |b| b.iter(|| Image::from_cdr(&bytes).unwrap()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = latency, cdr
}
criterion_main!(benches);
