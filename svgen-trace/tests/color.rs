//! Colour tracing: quantisation, layer modes, background handling, and the rendered SVG
//! compared with the input pixels.

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use svgen_core::render::{render, RenderOptions};
use svgen_core::Svg;
use svgen_trace::color::{
    quantize, trace_color, BackgroundPaint, ColorParams, ColorSvgOptions, LayerMode, Palette,
    Quantized,
};
use svgen_trace::TraceError;

const RED: [u8; 3] = [220, 30, 40];
const BLUE: [u8; 3] = [20, 60, 200];
const YELLOW: [u8; 3] = [250, 210, 0];
const WHITE: [u8; 3] = [255, 255, 255];

/// A flat-colour "icon": a red disc touching a blue ring, a yellow bar across both, on white.
fn icon() -> RgbImage {
    RgbImage::from_fn(120, 100, |x, y| {
        let (fx, fy) = (x as f64, y as f64);
        let d1 = (fx - 45.0).hypot(fy - 50.0);
        let d2 = (fx - 80.0).hypot(fy - 45.0);
        if (40..48).contains(&y) && (15..110).contains(&x) {
            Rgb(YELLOW)
        } else if d1 < 30.0 {
            Rgb(RED)
        } else if (14.0..24.0).contains(&d2) {
            Rgb(BLUE)
        } else {
            Rgb(WHITE)
        }
    })
}

fn rendered(svg: &str) -> RgbaImage {
    let svg = Svg::parse(svg.as_bytes()).expect("our SVG parses");
    render(&svg, &RenderOptions::default())
}

/// Fraction of pixels whose rendered colour is more than `tol` (per channel) from the input.
fn mismatch(input: &RgbImage, out: &RgbaImage, tol: u8) -> f64 {
    assert_eq!(input.dimensions(), out.dimensions());
    let bad = input
        .pixels()
        .zip(out.pixels())
        .filter(|(a, b)| (0..3).any(|c| a.0[c].abs_diff(b.0[c]) > tol))
        .count();
    bad as f64 / (input.width() * input.height()) as f64
}

fn params(mode: LayerMode) -> ColorParams {
    ColorParams {
        palette: Palette::KMeans { k: 4, seed: 7 },
        mode,
        ..Default::default()
    }
}

#[test]
fn stacked_layers_reproduce_the_icon() {
    let img = icon();
    let traced = trace_color(
        &DynamicImage::ImageRgb8(img.clone()),
        &params(LayerMode::Stacked),
    )
    .unwrap();
    assert_eq!(traced.background, Some(WHITE));
    let colors: Vec<[u8; 3]> = traced.layers.iter().map(|l| l.color).collect();
    // Back to front by decreasing area (the bar is larger than the ring).
    assert_eq!(colors, [RED, YELLOW, BLUE]);
    let svg = traced.to_svg(&ColorSvgOptions::default());
    assert_eq!(svg.matches("<path").count(), 3);
    assert!(!svg.contains("<rect"), "a white background is dropped");
    let out = rendered(&svg);
    let m = mismatch(&img, &out, 60);
    assert!(m < 0.03, "mismatch {m}");
    // Deterministic.
    let again = trace_color(&DynamicImage::ImageRgb8(img), &params(LayerMode::Stacked)).unwrap();
    assert_eq!(again.to_svg(&ColorSvgOptions::default()), svg);
}

#[test]
fn stacked_leaves_no_gaps_cut_out_may() {
    let img = icon();
    let dynimg = DynamicImage::ImageRgb8(img.clone());
    let count_gaps = |mode| {
        let svg = trace_color(&dynimg, &params(mode))
            .unwrap()
            .to_svg(&ColorSvgOptions::default());
        let out = rendered(&svg);
        // Pixels inside the drawing (not white in the input) that render as white-ish.
        img.pixels()
            .zip(out.pixels())
            .filter(|(a, b)| a.0 != WHITE && b.0[..3].iter().all(|&c| c > 235))
            .count()
    };
    let stacked = count_gaps(LayerMode::Stacked);
    let cut = count_gaps(LayerMode::CutOut);
    assert!(stacked <= cut, "stacked {stacked} vs cut-out {cut}");
    assert!(stacked < 10, "stacked mode leaves {stacked} gap pixels");
}

#[test]
fn kmeans_reduces_a_gradient_deterministically() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
        Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    }));
    let p = Palette::KMeans { k: 5, seed: 3 };
    let q1 = quantize(&img, &p, 128, u64::MAX).unwrap();
    let q2 = quantize(&img, &p, 128, u64::MAX).unwrap();
    assert_eq!(q1, q2);
    assert_eq!(q1.palette.len(), 5);
    assert!(q1.counts.iter().all(|&n| n > 0));
    assert_eq!(q1.counts.iter().sum::<u64>(), 64 * 64);
    // Every pixel's colour is reasonably close to its centroid.
    let rgb = img.to_rgb8();
    let mean_err: f64 = rgb
        .pixels()
        .zip(&q1.indices)
        .map(|(p, &i)| {
            let c = q1.palette[i as usize];
            (0..3)
                .map(|k| f64::from(p.0[k].abs_diff(c[k])))
                .sum::<f64>()
                / 3.0
        })
        .sum::<f64>()
        / (64.0 * 64.0);
    assert!(mean_err < 40.0, "{mean_err}");
    // A different seed may give a different but equally sized palette.
    let q3 = quantize(&img, &Palette::KMeans { k: 5, seed: 4 }, 128, u64::MAX).unwrap();
    assert_eq!(q3.palette.len(), 5);
}

#[test]
fn fixed_palette_takes_the_nearest_colour() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(3, 1, |x, _| {
        Rgb([[250, 10, 10], [10, 10, 240], [240, 240, 240]][x as usize])
    }));
    let q = quantize(
        &img,
        &Palette::Fixed(vec![WHITE, [255, 0, 0], [0, 0, 255]]),
        128,
        100,
    )
    .unwrap();
    assert_eq!(q.indices, [1, 2, 0]);
    assert_eq!(q.counts, [1, 1, 1]);
}

#[test]
fn transparent_background_keeps_every_colour() {
    let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(40, 40, |x, y| {
        if (5..20).contains(&x) && (5..35).contains(&y) {
            Rgba([255, 255, 255, 255])
        } else if (20..35).contains(&x) && (5..35).contains(&y) {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    }));
    let q = quantize(&img, &Palette::KMeans { k: 4, seed: 0 }, 128, u64::MAX).unwrap();
    assert_eq!(q.indices[0], Quantized::TRANSPARENT);
    let t = trace_color(&img, &ColorParams::default()).unwrap();
    assert_eq!(t.background, None);
    let mut colors: Vec<[u8; 3]> = t.layers.iter().map(|l| l.color).collect();
    colors.sort();
    assert_eq!(colors, [[0, 0, 0], WHITE]);
    let svg = t.to_svg(&ColorSvgOptions {
        background: BackgroundPaint::Rect,
        ..Default::default()
    });
    assert!(!svg.contains("<rect"));
}

#[test]
fn background_rect_and_precision_options() {
    let img = DynamicImage::ImageRgb8(icon());
    let t = trace_color(&img, &params(LayerMode::Stacked)).unwrap();
    let with_rect = t.to_svg(&ColorSvgOptions {
        background: BackgroundPaint::Rect,
        precision: 0,
    });
    assert!(with_rect.contains(r##"<rect width="120" height="100" fill="#ffffff"/>"##));
    let p0 = t.to_svg(&ColorSvgOptions {
        precision: 0,
        ..Default::default()
    });
    let p2 = t.to_svg(&ColorSvgOptions {
        precision: 2,
        ..Default::default()
    });
    assert!(p0.len() < p2.len());
    let data: String = p0
        .split(" d=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert!(!data.is_empty() && !data.contains('.'));
    // Integer coordinates still draw the icon.
    assert!(mismatch(&icon(), &rendered(&p0), 60) < 0.04);
}

#[test]
fn degenerate_inputs() {
    let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 0));
    let t = trace_color(&empty, &ColorParams::default()).unwrap();
    assert!(t.layers.is_empty() && t.background.is_none());
    let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(20, 10, Rgb(BLUE)));
    let t = trace_color(&flat, &ColorParams::default()).unwrap();
    assert_eq!(t.background, Some(BLUE));
    assert!(t.layers.is_empty());
    // A coloured full-bleed background is kept as one rectangle by default.
    let svg = t.to_svg(&ColorSvgOptions::default());
    assert!(svg.contains(r##"<rect width="20" height="10" fill="#143cc8"/>"##));
    assert_eq!(rendered(&svg).get_pixel(10, 5).0, [20, 60, 200, 255]);
    let omitted = t.to_svg(&ColorSvgOptions {
        background: BackgroundPaint::Omit,
        ..Default::default()
    });
    assert!(!omitted.contains("<rect"));
    for bad in [
        Palette::KMeans { k: 0, seed: 0 },
        Palette::KMeans { k: 257, seed: 0 },
        Palette::Fixed(vec![]),
    ] {
        let p = ColorParams {
            palette: bad,
            ..Default::default()
        };
        assert!(matches!(
            trace_color(&flat, &p),
            Err(TraceError::InvalidParam { .. })
        ));
    }
    let p = ColorParams {
        max_pixels: 199,
        ..Default::default()
    };
    assert!(matches!(
        trace_color(&flat, &p),
        Err(TraceError::TooLarge { .. })
    ));
}
