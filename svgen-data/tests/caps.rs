//! One test per size cap of svgen-data's file readers (the HTTP body caps are tested in
//! `http.rs`, the image decode limits in `pipeline.rs`): a file one byte over the cap is a typed
//! error or a recorded failure, never read whole; one at the cap passes the size check.
//!
//! The large files are sparse (`File::set_len`), so the tests write almost nothing to disk.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use svgen_data::generate::{GenerationRequest, ImageFolder, ImageGenerator, MAX_IMAGE_FILE_BYTES};
use svgen_data::pairs::{IconMetadata, MAX_SVG_BYTES};
use svgen_data::source::{
    CaptionSource, TextLines, WebDatasetTar, MAX_LINE_BYTES, MAX_TAR_MEMBER_BYTES,
};
use svgen_data::store::{LocalDir, RunStore, MAX_STATE_OBJECT_BYTES};
use svgen_data::{DataError, FailureKind, PairDataset};

/// A file of `len` bytes starting with `head` (the rest is a hole).
fn sparse(path: &Path, head: &[u8], len: u64) {
    let mut f = File::create(path).unwrap();
    f.write_all(head).unwrap();
    f.set_len(len).unwrap();
}

fn request(id: &str) -> GenerationRequest<'_> {
    GenerationRequest {
        id,
        prompt: "p",
        negative_prompt: "",
        seed: 0,
        source_image: None,
    }
}

#[test]
fn image_files_over_the_cap_are_refused_by_the_folder_generator() {
    let dir = tempfile::tempdir().unwrap();
    sparse(
        &dir.path().join("big.png"),
        b"\x89PNG\r\n\x1a\n",
        MAX_IMAGE_FILE_BYTES + 1,
    );
    std::fs::write(dir.path().join("small.png"), b"\x89PNG\r\n\x1a\nsmall").unwrap();
    let gen = ImageFolder::new(dir.path()).unwrap();
    let err = gen.generate(&request("big")).unwrap_err();
    assert_eq!(err.kind, FailureKind::BadInput);
    assert!(
        err.message
            .contains(&format!("larger than {MAX_IMAGE_FILE_BYTES} bytes")),
        "{}",
        err.message
    );
    // Under the cap: the bytes come back as they are (decoding is the pipeline's bounded step).
    let ok = gen.generate(&request("small")).unwrap();
    assert_eq!(ok.bytes, b"\x89PNG\r\n\x1a\nsmall");
}

#[test]
fn svg_files_over_the_cap_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    sparse(&dir.path().join("a-big.svg"), b"<svg>", MAX_SVG_BYTES + 1);
    std::fs::write(
        dir.path().join("b-small.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><path d="M0 0h4v4z"/></svg>"#,
    )
    .unwrap();
    let ds = PairDataset::from_icon_folder(dir.path(), &IconMetadata::default(), None).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.skipped.len(), 1, "{:?}", ds.skipped);
    assert_eq!(ds.skipped[0].0, "a-big");
    assert!(
        ds.skipped[0]
            .1
            .contains(&format!("larger than {MAX_SVG_BYTES} bytes")),
        "{:?}",
        ds.skipped
    );
}

#[test]
fn text_lines_over_the_cap_are_failures_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("captions.txt");
    let mut text = b"first\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
    text.extend(b"\n");
    text.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES));
    text.extend(b"\nlast\n");
    std::fs::write(&p, text).unwrap();
    let mut src = TextLines::open(&p).unwrap();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    while let Some(r) = src.next_record() {
        match r {
            Ok(c) => ok.push((c.id, c.text.len())),
            Err(f) => bad.push((f.id, f.reason)),
        }
    }
    // A line of exactly MAX_LINE_BYTES is read; one byte more is a failure.
    assert_eq!(
        ok,
        vec![
            ("captions:1".to_string(), 5),
            ("captions:3".to_string(), MAX_LINE_BYTES),
            ("captions:4".to_string(), 4)
        ]
    );
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, "captions:2");
    assert!(bad[0].1.contains("line longer than"), "{}", bad[0].1);
}

/// A ustar header for a regular file (sizes above 8 GiB are not needed here).
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    *h.as_bytes()
}

#[test]
fn tar_members_over_the_cap_are_failures_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_000000.tar");
    let big = MAX_TAR_MEMBER_BYTES + 512; // tar data is padded to 512-byte blocks
    let mut f = File::create(&p).unwrap();
    f.write_all(&tar_header("000.txt", big)).unwrap();
    f.seek(SeekFrom::Current(big as i64)).unwrap(); // a hole, never written
    let caption = b"a cat asleep on a sofa";
    f.write_all(&tar_header("001.txt", caption.len() as u64))
        .unwrap();
    let mut block = [0u8; 512];
    block[..caption.len()].copy_from_slice(caption);
    f.write_all(&block).unwrap();
    f.write_all(&[0u8; 1024]).unwrap();
    drop(f);

    let mut src = WebDatasetTar::open_with(&p, true, vec!["txt".into()]).unwrap();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    while let Some(r) = src.next_record() {
        match r {
            Ok(c) => ok.push((c.id, c.text)),
            Err(f) => bad.push((f.id, f.reason)),
        }
    }
    assert_eq!(
        ok,
        vec![("001".to_string(), "a cat asleep on a sofa".to_string())]
    );
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, "000");
    assert!(
        bad[0].1.contains(&format!("limit {MAX_TAR_MEMBER_BYTES}")),
        "{}",
        bad[0].1
    );
}

#[test]
fn run_state_objects_over_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    sparse(
        &dir.path().join("manifest-00000-of-00001.jsonl"),
        b"{}\n",
        MAX_STATE_OBJECT_BYTES + 1,
    );
    std::fs::write(dir.path().join("run.json"), b"{}").unwrap();
    let store = LocalDir::new(dir.path());
    match store.get("manifest-00000-of-00001.jsonl") {
        Err(DataError::Parse { message, .. }) => {
            assert!(
                message.contains(&format!("larger than {MAX_STATE_OBJECT_BYTES} bytes")),
                "{message}"
            );
        }
        other => panic!(
            "expected a Parse error, got {:?}",
            other.map(|b| b.map(|b| b.len()))
        ),
    }
    assert_eq!(store.get("run.json").unwrap().as_deref(), Some(&b"{}"[..]));
}
