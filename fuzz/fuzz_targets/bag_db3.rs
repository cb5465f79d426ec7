//! Fuzzes the rosbag2 sqlite3 (`.db3`) reader: any bytes written as a `.db3` file must open
//! or fail cleanly, and reading, decoding and pairing into transitions whatever opens must
//! never panic. The same bytes, as a bag folder's `metadata.yaml`, must parse or fail.
//!
//! `cargo fuzz run bag_db3 fuzz/corpus/bag_db3` (seeds: `fuzz/seed.sh`).
#![no_main]

#[path = "read_bag.rs"]
mod read_bag;

use std::path::PathBuf;
use std::sync::OnceLock;

use dreamplan::bag::BagReader;
use libfuzzer_sys::fuzz_target;

/// This process's scratch folder (sqlite reads files, not buffers).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dreamplan-fuzz-db3-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("folder")).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let file = dir.join("bag.db3");
    std::fs::write(&file, data).unwrap();
    if let Ok(reader) = BagReader::open(&file) {
        read_bag::read_all(&reader);
    }
    if std::str::from_utf8(data).is_ok() {
        let folder = dir.join("folder");
        std::fs::write(folder.join("metadata.yaml"), data).unwrap();
        if let Ok(reader) = BagReader::open(&folder) {
            read_bag::read_all(&reader);
        }
    }
});
