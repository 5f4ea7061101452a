//! Inputs the fuzz targets found (RELIABILITY.md), each a typed error now.

use std::path::PathBuf;

use svgen_data::storage::{read_shard, read_string_columns};
use svgen_data::{DataError, PairDataset};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// `parquet_shard`, 3 December 2026: a column chunk whose footer offset or size is negative
/// made the `parquet` crate assert ("column start and length should not be negative") when the
/// reader reached it. Every reader now checks the byte ranges when it opens the file.
#[test]
fn parquet_footer_with_a_negative_column_range_is_a_typed_error() {
    let path = fixture("parquet-negative-column-offset.parquet");
    let err = read_shard(&path).unwrap_err();
    assert!(
        matches!(&err, DataError::Parquet { path: p, .. } if *p == path),
        "{err}"
    );
    let err = read_string_columns(&path, &["id", "svg", "description"]).unwrap_err();
    assert!(matches!(err, DataError::Parquet { .. }), "{err}");
    assert!(PairDataset::from_mmsvg_parquet(&path, None).is_err());
}
