//! Batch tracing: results equal sequential tracing, in input order, one `Result` per item.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, Luma};
use svgen_trace::batch::{trace_batch, trace_batch_with, BatchOptions};
use svgen_trace::preprocess::Threshold;
use svgen_trace::{trace, Bitmap, SvgOptions, TraceError, TraceParams};

fn icons() -> Vec<Bitmap> {
    (0..24u32)
        .map(|i| {
            Bitmap::from_fn(40, 40, |x, y| {
                let (dx, dy) = (x as f64 - 20.0, y as f64 - 20.0);
                let r = 6.0 + f64::from(i % 12);
                (dx * dx + dy * dy < r * r) != ((x + i) % 9 == 0 && y > 30)
            })
            .unwrap()
        })
        .collect()
}

#[test]
fn batch_equals_sequential_for_any_thread_count() {
    let icons = icons();
    let params = TraceParams::default();
    let expected: Vec<_> = icons.iter().map(|b| trace(b, &params).unwrap()).collect();
    for threads in [1, 2, 0] {
        let opts = BatchOptions {
            threads,
            ..Default::default()
        };
        let got = trace_batch(&icons, &opts).unwrap();
        assert_eq!(got.len(), icons.len());
        for (g, e) in got.into_iter().zip(&expected) {
            assert_eq!(&g.unwrap(), e, "threads = {threads}");
        }
    }
}

#[test]
fn one_bad_item_does_not_stop_the_others() {
    let img = DynamicImage::ImageLuma8(GrayImage::from_fn(30, 30, |x, y| {
        Luma([if (10..20).contains(&x) && (5..25).contains(&y) {
            0
        } else {
            255
        }])
    }));
    let mut png = Cursor::new(Vec::new());
    img.write_to(&mut png, ImageFormat::Png).unwrap();
    let png = png.into_inner();
    let inputs: Vec<Vec<u8>> = vec![
        png.clone(),
        b"not an image".to_vec(),
        png[..40].to_vec(),
        png,
    ];
    let res = trace_batch(
        &inputs,
        &BatchOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(res[0].as_ref().unwrap().path_count(), 1);
    assert!(matches!(res[1], Err(TraceError::Decode(_))));
    assert!(matches!(res[2], Err(TraceError::Decode(_))));
    assert_eq!(res[3].as_ref().unwrap(), res[0].as_ref().unwrap());
    // Decoded images and inversion.
    let opts = BatchOptions {
        invert: true,
        threshold: Threshold::BlackLevel(0.5),
        ..Default::default()
    };
    let res = trace_batch(&[img], &opts).unwrap();
    // Inverted: a white frame with one hole.
    let pl = res[0].as_ref().unwrap();
    assert_eq!(pl.path_count(), 2);
}

#[test]
fn files_and_custom_work() {
    let dir = std::env::temp_dir().join(format!("svgen-trace-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<std::path::PathBuf> = icons()
        .iter()
        .take(4)
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(format!("{i}.pbm"));
            std::fs::write(&p, b.to_pbm()).unwrap();
            p
        })
        .chain([dir.join("missing.png")])
        .collect();
    let svgs = trace_batch_with(&paths, &BatchOptions::default(), |bm, params| {
        Ok(trace(bm, params)?.to_svg(&SvgOptions::default()))
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(svgs[..4]
        .iter()
        .all(|s| s.as_ref().unwrap().contains("<path")));
    assert!(svgs[4].is_err());
    // Invalid trace parameters fail the whole batch up front.
    let bad = BatchOptions {
        trace: TraceParams {
            alphamax: f64::NAN,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(trace_batch(&paths, &bad).is_err());
}
