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

/// `parquet_shard`, 3 December 2026 (after the fix above): a byte-array page on which the
/// `parquet` crate's decoder divides by zero. The reader calls are guarded; the panic is a
/// typed error naming the file.
#[test]
fn parquet_decoder_panic_is_a_typed_error() {
    let path = fixture("parquet-byte-array-divide-by-zero.parquet");
    // Its `id` column is LargeUtf8: not a shard (a typed schema error before any page is read).
    assert!(matches!(read_shard(&path), Err(DataError::Schema { .. })));
    // Reading the string columns reaches the page the decoder panicked on.
    match read_string_columns(&path, &["id", "svg", "description"]) {
        Err(DataError::Parquet { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("parquet reader failed"), "{message}");
        }
        other => panic!("expected a Parquet error, got {other:?}"),
    }
}
