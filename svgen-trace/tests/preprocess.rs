//! Preprocessing: potrace's reading conventions, the mkbitmap pipeline against the real
//! `mkbitmap` binary (Debian package `potrace`, installed by `.ci/run`), despeckling, Otsu and
//! background normalisation.

use std::io::Write;
use std::process::{Command, Stdio};

use image::{DynamicImage, GrayImage, ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
use svgen_trace::preprocess::{
    decode_image, despeckle, mkbitmap, normalise_background, BackgroundOptions, DecodeLimits,
    Greymap, Interpolation, MkbitmapParams, Threshold,
};
use svgen_trace::{Bitmap, DEFAULT_PIXEL_LIMIT};

const SCAN: &[u8] = include_bytes!("fixtures/preprocess/scan_text.pgm");
const SHAPES: &[u8] = include_bytes!("fixtures/preprocess/color_shapes.ppm");

fn black_level(img: &DynamicImage, k: f64) -> Bitmap {
    Bitmap::from_image(img, &Threshold::BlackLevel(k)).unwrap()
}

#[test]
fn blacklevel_is_inclusive_like_potrace() {
    // potrace -k 0.4 on a maxval-10 PGM: 4 is black (4 <= 0.4 * 10), 5 is white.
    let pgm = b"P2\n3 1\n10\n3 4 5\n";
    let img = decode_image(pgm, &DecodeLimits::default()).unwrap();
    let img16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(3, 1, |x, _| {
        // 0.4 * 65535 = 26214: inclusive.
        Luma([[19659u16, 26214, 26215][x as usize]])
    }));
    for img in [img, img16] {
        let bm = black_level(&img, 0.4);
        assert!(bm.get(0, 0) && bm.get(1, 0) && !bm.get(2, 0), "{img:?}");
    }
    // Colour: the channel sum is compared with 3 * k * maxval (no luma weights):
    // 128+127+127 = 382 <= 382.5 is black, 127+128+128 = 383 is white, pure green is black.
    let px = [[128, 127, 127], [127, 128, 128], [0, 255, 0], [0, 255, 255]];
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(4, 1, |x, _| Rgb(px[x as usize])));
    let bm = black_level(&img, 0.5);
    let got: Vec<bool> = (0..4).map(|x| bm.get(x, 0)).collect();
    assert_eq!(got, [true, false, true, false]);
}

#[test]
fn alpha_is_composited_over_white() {
    let px = [
        [0, 0, 0, 0],
        [0, 0, 0, 255],
        [0, 0, 0, 128],
        [0, 0, 0, 127],
        [255, 255, 255, 0],
    ];
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(5, 1, |x, _| Rgba(px[x as usize])));
    let bm = black_level(&img, 0.5);
    // transparent black = white; opaque black = black; alpha 128 -> 127 (black); 127 -> 128 (white)
    let got: Vec<bool> = (0..5).map(|x| bm.get(x, 0)).collect();
    assert_eq!(got, [false, true, true, false, false]);
    let la = DynamicImage::ImageLumaA8(ImageBuffer::from_fn(2, 1, |x, _| {
        LumaA([0, [0, 255][x as usize]])
    }));
    let bm = black_level(&la, 0.5);
    assert!(!bm.get(0, 0) && bm.get(1, 0));
    let g = Greymap::from_image(&la).unwrap();
    assert_eq!(g.pixels(), &[1.0, 0.0]);
}

#[test]
fn pbm_through_image_matches_native_reader() {
    let bm = Bitmap::from_fn(21, 9, |x, y| (x * x + 3 * y) % 7 < 3).unwrap();
    let pbm = bm.to_pbm();
    let img = decode_image(&pbm, &DecodeLimits::default()).unwrap();
    assert_eq!(black_level(&img, 0.5), bm);
    let mut inv = bm.clone();
    inv.invert();
    let mut got = black_level(&img, 0.5);
    got.invert();
    assert_eq!(got, inv);
}

#[test]
fn otsu_separates_two_modes() {
    // Left half around 0.2, right half around 0.8, with a little deterministic jitter.
    let img = DynamicImage::ImageLuma8(GrayImage::from_fn(64, 16, |x, y| {
        let j = ((x * 7 + y * 13) % 11) as u8;
        Luma([if x < 32 { 45 + j } else { 200 + j }])
    }));
    let level = Greymap::from_image(&img).unwrap().otsu_level();
    assert!(level > 55.0 / 255.0 && level <= 200.0 / 255.0, "{level}");
    let bm = Bitmap::from_image(&img, &Threshold::Otsu).unwrap();
    assert_eq!(bm.count_black(), 32 * 16);
    assert!(bm.get(0, 0) && !bm.get(63, 15));
    // A flat image thresholds like potrace's default.
    let flat = DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, Luma([100])));
    assert_eq!(
        Bitmap::from_image(&flat, &Threshold::Otsu)
            .unwrap()
            .count_black(),
        16
    );
}

// ----- mkbitmap -----

fn to_pgm(g: &GrayImage) -> Vec<u8> {
    let mut out = format!("P5\n{} {}\n255\n", g.width(), g.height()).into_bytes();
    out.extend_from_slice(g.as_raw());
    out
}

/// Runs the real `mkbitmap` as a filter (stdin → stdout) and reads its PBM output.
fn real_mkbitmap(input: &[u8], args: &[&str]) -> Bitmap {
    let mut child = Command::new("mkbitmap")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the `mkbitmap` binary (Debian package `potrace`) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "mkbitmap {args:?} failed");
    Bitmap::from_pbm(&out.stdout, DEFAULT_PIXEL_LIMIT).unwrap()
}

fn xor_fraction(a: &Bitmap, b: &Bitmap) -> f64 {
    assert_eq!((a.width(), a.height()), (b.width(), b.height()));
    let mut diff = 0u64;
    for y in 0..a.height() as i64 {
        for x in 0..a.width() as i64 {
            diff += u64::from(a.get(x, y) != b.get(x, y));
        }
    }
    diff as f64 / (f64::from(a.width()) * f64::from(a.height()))
}

/// A synthetic "photo of a drawing": dark strokes and blobs under a strong lighting gradient.
fn synthetic_scan() -> GrayImage {
    GrayImage::from_fn(180, 130, |x, y| {
        let (fx, fy) = (x as f64, y as f64);
        let light = 110.0 + 0.6 * fx + 0.3 * fy;
        let ring = ((fx - 60.0).hypot(fy - 60.0) - 35.0).abs() < 3.0;
        let bar = (120..170).contains(&x) && (y / 6) % 3 == 0;
        let dot = (fx - 140.0).hypot(fy - 100.0) < 9.0;
        let noise = f64::from((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) % 13) - 6.0;
        let v = if ring || bar || dot {
            light * 0.35
        } else {
            light
        };
        Luma([(v + noise).clamp(0.0, 255.0) as u8])
    })
}

struct Case {
    args: &'static [&'static str],
    params: MkbitmapParams,
    max_xor: f64,
}

fn cases() -> Vec<Case> {
    let d = MkbitmapParams::default();
    vec![
        // Default pipeline: only the high-pass filter differs (see the module docs).
        Case {
            args: &[],
            params: d.clone(),
            max_xor: 0.01,
        },
        Case {
            args: &["-1"],
            params: MkbitmapParams {
                interpolation: Interpolation::Linear,
                ..d.clone()
            },
            max_xor: 0.01,
        },
        Case {
            args: &["-f", "2", "-s", "3", "-t", "0.4"],
            params: MkbitmapParams {
                filter: Some(2.0),
                scale: 3,
                threshold: 0.4,
                ..d.clone()
            },
            max_xor: 0.015,
        },
        Case {
            args: &["-i", "-t", "0.4"],
            params: MkbitmapParams {
                invert: true,
                threshold: 0.4,
                ..d.clone()
            },
            max_xor: 0.01,
        },
        // Without filters the pipeline is exact up to float rounding.
        Case {
            args: &["-n", "-s", "2", "-3", "-t", "0.45"],
            params: MkbitmapParams {
                filter: None,
                ..d.clone()
            },
            max_xor: 1e-4,
        },
        Case {
            args: &["-n", "-s", "4", "-1", "-t", "0.6"],
            params: MkbitmapParams {
                filter: None,
                scale: 4,
                interpolation: Interpolation::Linear,
                threshold: 0.6,
                ..d.clone()
            },
            max_xor: 1e-4,
        },
        Case {
            args: &["-n", "-s", "1", "-t", "0.5"],
            params: MkbitmapParams {
                filter: None,
                scale: 1,
                threshold: 0.5,
                ..d.clone()
            },
            max_xor: 0.0,
        },
        // Blur: mkbitmap's radius-to-sigma ratio is undocumented; only a loose agreement.
        Case {
            args: &["-b", "1"],
            params: MkbitmapParams {
                blur: Some(1.0),
                ..d.clone()
            },
            max_xor: 0.03,
        },
    ]
}

#[test]
fn mkbitmap_agrees_with_the_real_binary() {
    let scan = decode_image(SCAN, &DecodeLimits::default()).unwrap();
    let shapes = decode_image(SHAPES, &DecodeLimits::default()).unwrap();
    let synth = synthetic_scan();
    let inputs: Vec<(&str, Vec<u8>, DynamicImage)> = vec![
        ("scan_text.pgm", SCAN.to_vec(), scan),
        ("color_shapes.ppm", SHAPES.to_vec(), shapes),
        ("synthetic", to_pgm(&synth), DynamicImage::ImageLuma8(synth)),
    ];
    let mut report = Vec::new();
    for (name, file, img) in &inputs {
        let grey = Greymap::from_image_like_mkbitmap(img, DEFAULT_PIXEL_LIMIT).unwrap();
        for case in cases() {
            let theirs = real_mkbitmap(file, case.args);
            let ours = mkbitmap(&grey, &case.params, DEFAULT_PIXEL_LIMIT).unwrap();
            let via_image =
                Bitmap::from_image(img, &Threshold::Mkbitmap(case.params.clone())).unwrap();
            assert_eq!(ours, via_image);
            let x = xor_fraction(&ours, &theirs);
            report.push(format!("{name} {:?}: xor {:.4}%", case.args, 100.0 * x));
            assert!(
                x <= case.max_xor,
                "{name} {:?}: xor {x} > {}\n{}",
                case.args,
                case.max_xor,
                report.join("\n")
            );
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn mkbitmap_grey_scaling_samples_like_mkbitmap() {
    // mkbitmap -x -s 2 -1 on [0, 200] gives 0 100 200 200 per row; rows from the bottom.
    let g = Greymap::from_fn(2, 2, |x, y| if y == 1 { x as f32 } else { 0.5 }).unwrap();
    let s = g.scale(2, Interpolation::Linear).unwrap();
    let rows: Vec<Vec<f32>> = (0..4)
        .map(|y| (0..4).map(|x| s.get(x, y)).collect())
        .collect();
    // Bottom row (3) = source row 1 exactly; row 2 = halfway to source row 0; rows 0,1 = row 0.
    assert_eq!(rows[3], [0.0, 0.5, 1.0, 1.0]);
    assert_eq!(rows[2], [0.25, 0.5, 0.75, 0.75]);
    assert_eq!(rows[1], [0.5; 4]);
    assert_eq!(rows[0], [0.5; 4]);
}

#[test]
fn highpass_flattens_uneven_lighting() {
    // A horizontal ramp from 0.2 to 0.9: a plain threshold at 0.45 blackens its left part,
    // the high-pass filter leaves a flat 0.5 (all white).
    let g = Greymap::from_fn(200, 50, |x, _| 0.2 + 0.7 * x as f32 / 199.0).unwrap();
    assert!(g.threshold(0.45).unwrap().count_black() > 0);
    let hp = g.highpass(4.0).unwrap();
    assert!(hp.pixels().iter().all(|v| (v - 0.5).abs() < 0.02));
    assert_eq!(hp.threshold(0.45).unwrap().count_black(), 0);
}

#[test]
fn mkbitmap_rejects_bad_parameters_and_huge_outputs() {
    let g = Greymap::from_fn(100, 100, |_, _| 0.3).unwrap();
    let p = MkbitmapParams {
        scale: 0,
        ..Default::default()
    };
    assert!(mkbitmap(&g, &p, DEFAULT_PIXEL_LIMIT).is_err());
    let p = MkbitmapParams {
        filter: Some(f64::NAN),
        ..Default::default()
    };
    assert!(mkbitmap(&g, &p, DEFAULT_PIXEL_LIMIT).is_err());
    let p = MkbitmapParams {
        blur: Some(-1.0),
        ..Default::default()
    };
    assert!(mkbitmap(&g, &p, DEFAULT_PIXEL_LIMIT).is_err());
    let p = MkbitmapParams {
        scale: u32::MAX,
        ..Default::default()
    };
    assert!(matches!(
        mkbitmap(&g, &p, DEFAULT_PIXEL_LIMIT),
        Err(svgen_trace::TraceError::TooLarge { .. })
    ));
    assert!(mkbitmap(&g, &MkbitmapParams::default(), 100 * 100 * 4).is_ok());
    assert!(mkbitmap(&g, &MkbitmapParams::default(), 100 * 100 * 4 - 1).is_err());
    let empty = Greymap::from_fn(0, 0, |_, _| 0.0).unwrap();
    let bm = mkbitmap(&empty, &MkbitmapParams::default(), DEFAULT_PIXEL_LIMIT).unwrap();
    assert_eq!((bm.width(), bm.height()), (0, 0));
}

// ----- despeckle -----

/// Sizes of all components of one colour (8-connected black, 4-connected white), and whether
/// each touches the border.
fn components(bm: &Bitmap, black: bool) -> Vec<(usize, bool)> {
    let (w, h) = (bm.width() as i64, bm.height() as i64);
    let mut seen = vec![false; (w * h) as usize];
    let mut out = Vec::new();
    for y0 in 0..h {
        for x0 in 0..w {
            if seen[(y0 * w + x0) as usize] || bm.get(x0, y0) != black {
                continue;
            }
            let mut stack = vec![(x0, y0)];
            seen[(y0 * w + x0) as usize] = true;
            let (mut n, mut border) = (0, false);
            while let Some((x, y)) = stack.pop() {
                n += 1;
                border |= x == 0 || y == 0 || x == w - 1 || y == h - 1;
                for dy in -1..=1i64 {
                    for dx in -1..=1i64 {
                        if (dx == 0 && dy == 0) || (!black && dx != 0 && dy != 0) {
                            continue;
                        }
                        let (nx, ny) = (x + dx, y + dy);
                        if nx >= 0 && ny >= 0 && nx < w && ny < h {
                            let i = (ny * w + nx) as usize;
                            if !seen[i] && bm.get(nx, ny) == black {
                                seen[i] = true;
                                stack.push((nx, ny));
                            }
                        }
                    }
                }
            }
            out.push((n, border));
        }
    }
    out
}

#[test]
fn despeckle_removes_small_components_of_both_colours() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut bm = Bitmap::from_fn(120, 90, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % 100 < 45
    })
    .unwrap();
    let before = bm.count_black();
    let flipped = despeckle(&mut bm, 5);
    assert!(flipped > 0);
    assert_ne!(bm.count_black(), before);
    for (n, _) in components(&bm, true) {
        assert!(n >= 5, "black component of {n} pixels left");
    }
    for (n, border) in components(&bm, false) {
        assert!(n >= 5 || border, "white hole of {n} pixels left");
    }
    // Idempotent, and a no-op for min_pixels <= 1.
    let again = bm.clone();
    assert_eq!(despeckle(&mut bm, 5), 0);
    assert_eq!(bm, again);
    assert_eq!(despeckle(&mut bm, 1), 0);
}

#[test]
fn despeckle_keeps_large_shapes_and_background() {
    let disc = |x: u32, y: u32| (x as f64 - 30.0).hypot(y as f64 - 30.0) < 20.0;
    let mut bm = Bitmap::from_fn(60, 60, |x, y| disc(x, y) || (x == 2 && y == 57)).unwrap();
    let reference = Bitmap::from_fn(60, 60, disc).unwrap();
    assert_eq!(despeckle(&mut bm, 3), 1);
    assert_eq!(bm, reference);
    // All-white and all-black stay as they are.
    let mut white = Bitmap::new(10, 10).unwrap();
    assert_eq!(despeckle(&mut white, 50), 0);
    let mut black = Bitmap::from_fn(10, 10, |_, _| true).unwrap();
    assert_eq!(despeckle(&mut black, 100), 0);
    assert_eq!(despeckle(&mut black, 101), 100);
    assert!(black.is_empty());
}

// ----- background normalisation -----

fn scene(bg: [u8; 3], fg: [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(80, 60, |x, y| {
        if (x as i32 - 40).pow(2) + (y as i32 - 30).pow(2) < 300 {
            Rgb(fg)
        } else {
            Rgb(bg)
        }
    }))
}

#[test]
fn dark_background_is_inverted_light_is_kept() {
    let opts = BackgroundOptions::default();
    let (out, d) = normalise_background(&scene([8, 8, 30], [240, 200, 90]), &opts).unwrap();
    assert!(d.inverted && d.border_median < 0.1 && d.dark_fraction == 1.0);
    // After inversion the usual threshold sees a dark disc on white.
    let bm = Bitmap::from_image(&out, &Threshold::default()).unwrap();
    assert!(bm.get(40, 30) && !bm.get(0, 0));

    let light = scene([250, 250, 240], [20, 20, 20]);
    let (out, d) = normalise_background(&light, &opts).unwrap();
    assert!(!d.inverted && d.border_median > 0.9);
    assert_eq!(out, light);
}

#[test]
fn dark_objects_touching_the_border_do_not_trigger_inversion() {
    // Light page with a thick dark bar along the left edge (about 30% of the border).
    let img = DynamicImage::ImageLuma8(GrayImage::from_fn(100, 100, |x, _| {
        Luma([if x < 40 { 10 } else { 230 }])
    }));
    let (_, d) = normalise_background(&img, &BackgroundOptions::default()).unwrap();
    assert!(!d.inverted, "{d:?}");
    // Transparent background = white paper.
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(30, 30, |x, y| {
        if x > 10 && x < 20 && y > 10 && y < 20 {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    }));
    let (_, d) = normalise_background(&img, &BackgroundOptions::default()).unwrap();
    assert!(!d.inverted && d.border_median == 1.0);
}

#[test]
fn background_options_are_validated_and_tiny_images_work() {
    let img = scene([0, 0, 0], [255, 255, 255]);
    let bad = BackgroundOptions {
        dark_level: 2.0,
        ..Default::default()
    };
    assert!(normalise_background(&img, &bad).is_err());
    for (w, h) in [(0, 0), (1, 1), (1, 7), (3, 2)] {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(w, h, Luma([0])));
        let (_, d) = normalise_background(&img, &BackgroundOptions::default()).unwrap();
        assert_eq!(d.inverted, w > 0, "{w}x{h}");
    }
}
