//! Caption sources: COCO JSON, webdataset tar, TXT, JSONL, CSV, including bad records.

use std::io::Write;

use svgen_data::source::{
    open_source, CaptionSource, CocoCaptions, CsvCaptions, JsonLines, TextLines, WebDatasetTar,
};

/// `(id, text)` of the captions and `(id, reason)` of the failures.
type Drained = (Vec<(String, String)>, Vec<(String, String)>);

fn drain(src: &mut dyn CaptionSource) -> Drained {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    while let Some(r) = src.next_record() {
        match r {
            Ok(c) => ok.push((c.id, c.text)),
            Err(f) => bad.push((f.id, f.reason)),
        }
    }
    (ok, bad)
}

#[test]
fn coco_captions_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("captions_val2017.json");
    std::fs::write(
        &p,
        r#"{"info": {"description": "COCO 2017 Dataset"}, "licenses": [],
            "images": [{"id": 179765, "file_name": "000000179765.jpg", "height": 480, "width": 640}],
            "annotations": [
              {"image_id": 179765, "id": 38, "caption": "A black Honda motorcycle parked in front of a garage."},
              {"image_id": 179765, "id": 182, "caption": " A Honda Motorcycle with a dome light. "}
            ]}"#,
    )
    .unwrap();
    let mut src = CocoCaptions::open(&p).unwrap();
    assert_eq!(src.name(), "coco");
    let (ok, bad) = drain(&mut src);
    assert!(bad.is_empty());
    assert_eq!(
        ok[0],
        (
            "coco:38".into(),
            "A black Honda motorcycle parked in front of a garage.".into()
        )
    );
    assert_eq!(ok[1].1, "A Honda Motorcycle with a dome light.");
    // Not COCO at all: a clear error.
    std::fs::write(&p, b"[1, 2, 3]").unwrap();
    assert!(matches!(
        CocoCaptions::open(&p),
        Err(svgen_data::DataError::Parse { .. })
    ));
}

fn tar_with(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn webdataset_tar_like_text_to_image_2m() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_000000.tar");
    let tar = tar_with(&[
        ("000000000.jpg", b"\xff\xd8\xff\xe0fakejpeg"),
        (
            "000000000.json",
            br#"{"prompt": "a watercolor painting of a fox in the snow", "width": 512}"#,
        ),
        ("000000001.jpg", b"\xff\xd8\xff\xe0fakejpeg2"),
        ("000000001.json", br#"{"prompt": "a red bus"}"#),
        ("000000002.json", b"{not json"),
        ("000000003.txt", b"a cat asleep on a sofa\n"),
        ("000000004.json", br#"{"width": 3}"#),
    ]);
    std::fs::write(&p, tar).unwrap();
    let mut src = WebDatasetTar::open(&p).unwrap();
    let (ok, bad) = drain(&mut src);
    assert_eq!(
        ok,
        vec![
            (
                "000000000".into(),
                "a watercolor painting of a fox in the snow".into()
            ),
            ("000000001".into(), "a red bus".into()),
            ("000000003".into(), "a cat asleep on a sofa".into()),
        ]
    );
    assert_eq!(bad.len(), 2);
    assert!(bad[0].1.contains("invalid JSON"));
    assert!(bad[1].1.contains("no caption"));
    // With images kept, the image bytes travel with the caption.
    let mut src = open_source(&p).unwrap();
    let first = src.next_record().unwrap().unwrap();
    assert_eq!(
        first.image.as_deref(),
        Some(&b"\xff\xd8\xff\xe0fakejpeg"[..])
    );
    // A file that is not a tar is reported, not a panic.
    std::fs::write(&p, vec![7u8; 1500]).unwrap();
    let (ok, bad) = drain(&mut WebDatasetTar::open(&p).unwrap());
    assert!(ok.is_empty());
    assert_eq!(bad.len(), 1);
}

#[test]
fn text_jsonl_csv_with_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("list.txt");
    std::fs::write(&txt, b"first\r\n\n  second  \nbad \xc3\x28 bytes\nlast").unwrap();
    let (ok, bad) = drain(&mut TextLines::open(&txt).unwrap());
    assert_eq!(
        ok,
        vec![
            ("list:1".into(), "first".into()),
            ("list:3".into(), "second".into()),
            ("list:5".into(), "last".into())
        ]
    );
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, "list:4");
    assert!(bad[0].1.contains("invalid UTF-8"));

    let jsonl = dir.path().join("caps.jsonl");
    let mut f = std::fs::File::create(&jsonl).unwrap();
    writeln!(f, r#"{{"id": "x1", "caption": "a kite"}}"#).unwrap();
    writeln!(f, r#"{{"id": 17, "prompt": "a boat"}}"#).unwrap();
    writeln!(f, r#"{{"caption": "no id here"}}"#).unwrap();
    writeln!(f, r#"{{"id": "x4"}}"#).unwrap();
    writeln!(f, "not json").unwrap();
    f.write_all(b"{\"id\": \"x6\", \"caption\": \"\xff\"}\n")
        .unwrap();
    drop(f);
    let (ok, bad) = drain(&mut JsonLines::open(&jsonl).unwrap());
    assert_eq!(
        ok,
        vec![
            ("x1".into(), "a kite".into()),
            ("17".into(), "a boat".into()),
            ("caps:3".into(), "no id here".into())
        ]
    );
    assert_eq!(
        bad.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        ["x4", "caps:5", "caps:6"]
    );

    let csv = dir.path().join("caps.csv");
    std::fs::write(
        &csv,
        b"id,caption,extra\n1,\"a tree, tall\",x\n2,,y\n3,\"bad \xff\",z\n4,a dog\n",
    )
    .unwrap();
    let (ok, bad) = drain(&mut CsvCaptions::open(&csv).unwrap());
    assert_eq!(
        ok,
        vec![
            ("1".into(), "a tree, tall".into()),
            ("4".into(), "a dog".into())
        ]
    );
    assert_eq!(bad.len(), 2);
    assert!(bad[1].1.contains("invalid UTF-8"));
    assert!(CsvCaptions::open_with(&csv, "text", None).is_err());
}

#[test]
fn over_long_lines_are_failures_not_memory() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("long.txt");
    let mut data = vec![b'a'; svgen_data::source::MAX_LINE_BYTES + 10];
    data.extend_from_slice(b"\nshort\n");
    std::fs::write(&txt, data).unwrap();
    let (ok, bad) = drain(&mut TextLines::open(&txt).unwrap());
    assert_eq!(ok, vec![("long:2".into(), "short".into())]);
    assert_eq!(bad.len(), 1);
    assert!(bad[0].1.contains("longer than"));
}
