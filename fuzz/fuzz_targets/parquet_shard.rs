//! Fuzz target: arbitrary bytes as a Parquet file → svgen-data's shard readers: the triplet
//! reader (`read_shard`, schema check and row conversion), the projected string-column reader and
//! the MMSVG pair reader.
//!
//! Every input must give a typed error or rows: no panic, no hang, no allocation sized by an
//! unchecked field of the footer or of a page header. Rows read back must convert to a record
//! batch again.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run parquet_shard -- -max_len=65536
//! ```
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use svgen_data::storage::{read_shard, read_string_columns, to_record_batch};
use svgen_data::PairDataset;

/// A per-process scratch file (the readers take paths).
fn scratch_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("svgen-fuzz-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir.join("shard-00000.parquet")
    })
}

/// svgen catches the panics the `parquet` crate raises on some corrupt inputs and returns a typed
/// error; libFuzzer's panic hook would abort on them before the catch. This hook only prints
/// the panic, so only a panic that escapes svgen (caught by libfuzzer-sys' own wrapper, which
/// aborts) counts as a crash, and its message is in the log.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}"))));
}

fuzz_target!(|data: &[u8]| {
    quiet_caught_panics();
    let path = scratch_file();
    std::fs::write(path, data).expect("write input");

    if let Ok(rows) = read_shard(path) {
        let batch = to_record_batch(&rows).expect("rows read back convert to a batch");
        assert_eq!(batch.num_rows(), rows.len());
    }
    if let Ok(cols) = read_string_columns(path, &["id", "svg", "description"]) {
        assert_eq!(cols.len(), 3);
    }
    let _ = PairDataset::from_mmsvg_parquet(path, None);
});
