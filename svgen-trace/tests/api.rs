//! API behaviour: bad input, limits, edge cases, progress reporting, serde.

use svgen_trace::{
    trace, trace_with_progress, Bitmap, PathList, Segment, Sign, SvgOptions, TraceError,
    TraceParams, TurnPolicy,
};

fn disc(side: u32, r: f64) -> Bitmap {
    let c = f64::from(side) / 2.0;
    Bitmap::from_fn(side, side, |x, y| {
        (f64::from(x) + 0.5 - c).hypot(f64::from(y) + 0.5 - c) < r
    })
    .unwrap()
}

#[test]
fn pixel_limit_rejects_huge_headers_before_allocating() {
    let err =
        Bitmap::from_pbm(b"P4\n100000 100000\n\x00", svgen_trace::DEFAULT_PIXEL_LIMIT).unwrap_err();
    assert!(matches!(
        err,
        TraceError::TooLarge {
            width: 100_000,
            height: 100_000,
            ..
        }
    ));
    // The limit is configurable.
    assert!(Bitmap::from_pbm(b"P4\n16 16\n", 255).is_err());
    assert!(Bitmap::with_limit(16, 16, 256).is_ok());
}

#[test]
fn truncated_and_corrupt_pbm_are_errors() {
    let good = disc(20, 7.0).to_pbm();
    for cut in [0, 1, 2, 5, 8, good.len() - 1] {
        assert!(
            Bitmap::from_pbm(&good[..cut], 1 << 20).is_err(),
            "cut at {cut}"
        );
    }
    let mut corrupt = good.clone();
    corrupt[1] = b'9';
    assert!(matches!(
        Bitmap::from_pbm(&corrupt, 1 << 20),
        Err(TraceError::Decode(_))
    ));
    assert!(Bitmap::from_pbm(b"P4\n-3 2\n", 1 << 20).is_err());
}

#[test]
fn degenerate_images_trace_cleanly() {
    let p = TraceParams::default();
    for (w, h) in [(0, 0), (0, 7), (7, 0), (1, 1)] {
        let list = trace(&Bitmap::new(w, h).unwrap(), &p).unwrap();
        assert!(list.is_empty());
        assert!(list.to_svg(&SvgOptions::default()).ends_with("</svg>\n"));
    }
    // All black: one path enclosing everything, at any size; a large rectangle has 4 corners.
    for (w, h) in [(1, 1), (3, 1), (1, 300), (130, 70)] {
        let full = Bitmap::from_fn(w, h, |_, _| true).unwrap();
        let list = trace(&full, &TraceParams { turdsize: 0, ..p }).unwrap();
        assert_eq!(list.path_count(), 1, "{w}x{h}");
        assert_eq!(list.paths()[0].area, u64::from(w) * u64::from(h));
    }
    let big = Bitmap::from_fn(130, 70, |_, _| true).unwrap();
    let list = trace(&big, &p).unwrap();
    let segs: Vec<_> = list.paths()[0].segments().collect();
    assert_eq!(segs.len(), 4);
    assert!(segs.iter().all(|s| matches!(s, Segment::Corner { .. })));
}

#[test]
fn curves_are_in_image_coordinates() {
    // A disc in the top-left quadrant of a tall image.
    let bm = Bitmap::from_fn(40, 80, |x, y| {
        (f64::from(x) - 10.0).hypot(f64::from(y) - 10.0) < 6.0
    })
    .unwrap();
    let list = trace(&bm, &TraceParams::default()).unwrap();
    let path = &list.paths()[0];
    assert_eq!(path.sign, Sign::Plus);
    for s in path.segments() {
        let e = s.end();
        assert!(
            (3.0..18.0).contains(&e.x) && (3.0..18.0).contains(&e.y),
            "{e:?}"
        );
    }
    // ...and y-up (potrace) coordinates are the mirror image.
    let up = path.segments_y_up();
    let down: Vec<_> = path.segments().collect();
    assert_eq!(up.len(), down.len());
    assert!((up[0].end().y - (80.0 - down[0].end().y)).abs() < 1e-9);
}

#[test]
fn progress_is_monotone_and_can_cancel() {
    let bm = Bitmap::from_fn(300, 300, |x, y| {
        (x / 3 + y / 5) % 3 == 0 && (x * y) % 7 != 1
    })
    .unwrap();
    let mut seen = Vec::new();
    let list = trace_with_progress(&bm, &TraceParams::default(), |f| {
        seen.push(f);
        true
    })
    .unwrap();
    assert!(!list.is_empty());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&1.0));
    assert!(seen.iter().all(|f| (0.0..=1.0).contains(f)));
    let err = trace_with_progress(&bm, &TraceParams::default(), |f| f < 0.5).unwrap_err();
    assert!(matches!(err, TraceError::Cancelled));
}

#[test]
fn invalid_params_are_errors() {
    let bm = disc(10, 3.0);
    for p in [
        TraceParams {
            alphamax: f64::NAN,
            ..TraceParams::default()
        },
        TraceParams {
            alphamax: -1.0,
            ..TraceParams::default()
        },
        TraceParams {
            opttolerance: f64::INFINITY,
            ..TraceParams::default()
        },
    ] {
        assert!(matches!(
            trace(&bm, &p),
            Err(TraceError::InvalidParam { .. })
        ));
    }
    assert_eq!("bl".parse::<TurnPolicy>().unwrap(), TurnPolicy::Black);
    assert_eq!("ma".parse::<TurnPolicy>().unwrap(), TurnPolicy::Majority);
    assert!("m".parse::<TurnPolicy>().is_err()); // majority or minority
    assert!("sideways".parse::<TurnPolicy>().is_err());
}

#[test]
fn params_and_paths_serialise() {
    let p = TraceParams {
        turnpolicy: TurnPolicy::Random,
        alphamax: 0.5,
        ..TraceParams::default()
    };
    let json = serde_json::to_string(&p).unwrap();
    let back: TraceParams = serde_json::from_str(&json).unwrap();
    assert_eq!(p, back);
    // Missing fields take potrace's defaults.
    let partial: TraceParams = serde_json::from_str(r#"{"turdsize": 5}"#).unwrap();
    assert_eq!(
        partial,
        TraceParams {
            turdsize: 5,
            ..TraceParams::default()
        }
    );
    let list = trace(&disc(24, 8.0), &TraceParams::default()).unwrap();
    let json = serde_json::to_string(&list).unwrap();
    let back: PathList = serde_json::from_str(&json).unwrap();
    // (JSON may round the last bit of a float; the drawing is the same.)
    assert_eq!(list.path_count(), back.path_count());
    assert_eq!(
        list.to_svg(&SvgOptions::default()),
        back.to_svg(&SvgOptions::default())
    );
}

#[test]
fn parallel_fitting_is_deterministic() {
    // Many independent paths: fitted in parallel, the result must not depend on scheduling.
    let bm = Bitmap::from_fn(400, 300, |x, y| x % 6 < 3 + (y / 6) % 2 && y % 6 < 3).unwrap();
    let p = TraceParams::default();
    let a = trace(&bm, &p).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = pool.install(|| trace(&bm, &p).unwrap());
    assert_eq!(a, b);
    assert!(a.path_count() > 100);
}

/// A small in-test version of the `decode_trace` fuzz target: mutated and truncated image files
/// go through decode → threshold → trace → SVG without panicking.
#[test]
fn corrupt_files_never_panic() {
    use svgen_trace::preprocess::{decode_image, DecodeLimits, Threshold};
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(23, 17, |x, y| {
        image::Luma([if (x * y) % 5 < 2 { 0 } else { 255 }])
    }))
    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
    .unwrap();
    let pbm = disc(31, 12.0).to_pbm();
    let limits = DecodeLimits {
        max_pixels: 1 << 16,
        max_alloc: 16 << 20,
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut traced = 0;
    for round in 0..400 {
        let base = if round % 2 == 0 { &png } else { &pbm };
        let mut data = base.clone();
        for _ in 0..(1 + rnd() % 4) {
            let i = (rnd() % data.len() as u64) as usize;
            data[i] = rnd() as u8;
        }
        data.truncate(data.len() - (rnd() % 8) as usize);
        let bitmap = if round % 2 == 0 {
            decode_image(&data, &limits)
                .and_then(|img| Bitmap::from_image_with_limit(&img, &Threshold::default(), 1 << 16))
        } else {
            Bitmap::from_pbm(&data, 1 << 16)
        };
        if let Ok(bm) = bitmap {
            let list = trace(&bm, &TraceParams::default()).unwrap();
            assert!(list.to_svg(&SvgOptions::default()).ends_with("</svg>\n"));
            traced += 1;
        }
    }
    assert!(traced > 0, "some mutations should still decode");
}
