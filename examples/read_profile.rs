//! Breaks a bag read into its parts: iterate only, iterate + decode. `cargo run --release --example read_profile -- BAG`
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).expect("bag path");
    let reader = dreamplan::bag::BagReader::open(&path).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let n = reader
            .messages(&Default::default())
            .map(|r| r.unwrap().data.len())
            .sum::<usize>();
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut k = 0;
        for r in reader.messages(&Default::default()) {
            let js = r
                .unwrap()
                .decode::<dreamplan::msg::sensor_msgs::JointState>()
                .unwrap();
            k += js.name.len();
        }
        let b = t.elapsed().as_secs_f64();
        println!("iterate {a:.4} s ({n} bytes), iterate+decode {b:.4} s ({k})");
    }
}
