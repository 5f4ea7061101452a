//! Raster metrics against an independent implementation (numpy + scikit-image; fixtures written
//! by `tools/fixtures/make_core_metric_fixtures.py`).

use image::{Rgba, RgbaImage};
use svgen_core::metrics::{
    channel_mean_abs_error, compare_images, compare_svgs, ink_iou, mean_abs_error, ssim,
    MetricError,
};
use svgen_core::Svg;

fn load(name: &str) -> RgbaImage {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    image::open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_rgba8()
}

#[test]
fn metrics_match_scikit_image() {
    let (a, b) = (load("metric_a.png"), load("metric_b.png"));
    let path = format!(
        "{}/tests/fixtures/metric_expected.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let d = compare_images(&a, &b).unwrap();
    let close = |got: f64, key: &str| {
        let want = expected[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{key}: got {got}, want {want}");
    };
    close(d.ink_iou, "ink_iou");
    close(d.mean_abs_error, "mean_abs_error");
    close(d.ssim, "ssim");
    close(ssim(&a, &a).unwrap(), "ssim_self");
    // Symmetric.
    assert!((ssim(&b, &a).unwrap() - d.ssim).abs() < 1e-12);
}

#[test]
fn identical_and_opposite_images() {
    let white = RgbaImage::from_pixel(20, 20, Rgba([255, 255, 255, 255]));
    let clear = RgbaImage::from_pixel(20, 20, Rgba([0, 0, 0, 0]));
    let black = RgbaImage::from_pixel(20, 20, Rgba([0, 0, 0, 255]));
    // Transparent composites to white.
    assert_eq!(mean_abs_error(&white, &clear).unwrap(), 0.0);
    assert_eq!(ink_iou(&white, &clear).unwrap(), 1.0);
    assert_eq!(mean_abs_error(&white, &black).unwrap(), 1.0);
    assert_eq!(ink_iou(&white, &black).unwrap(), 0.0);
    assert_eq!(ink_iou(&black, &black).unwrap(), 1.0);
    assert!(ssim(&white, &black).unwrap() < 0.01);
}

#[test]
fn size_errors_are_typed() {
    let a = RgbaImage::new(20, 20);
    let b = RgbaImage::new(20, 21);
    assert!(matches!(
        ink_iou(&a, &b),
        Err(MetricError::SizeMismatch { .. })
    ));
    assert!(matches!(
        ssim(&RgbaImage::new(10, 40), &RgbaImage::new(10, 40)),
        Err(MetricError::TooSmall { .. })
    ));
}

#[test]
fn compare_svgs_sees_small_and_large_changes() {
    let doc = |d: &str| {
        Svg::parse(
            format!(r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="{d}"/></svg>"#)
                .as_bytes(),
        )
        .unwrap()
    };
    let a = doc("M4 4h16v16H4z");
    let same = doc("M4,4 L20,4 L20,20 L4,20 Z");
    let nudged = doc("M4.02 4h16v16H4.02z");
    let moved = doc("M6 6h16v16H6z");
    let d = compare_svgs(&a, &same, 256);
    assert_eq!((d.ink_iou, d.mean_abs_error), (1.0, 0.0));
    let d = compare_svgs(&a, &nudged, 256);
    assert!(d.ink_iou > 0.99 && d.ssim > 0.99, "{d:?}");
    let d = compare_svgs(&a, &moved, 256);
    assert!(d.ink_iou < 0.9 && d.ssim < 0.95, "{d:?}");
}

#[test]
fn channel_errors_see_a_colour_change_the_ink_mask_does_not() {
    // Same shape, red vs blue: identical ink masks, a large error in two channels.
    let doc = |fill: &str| {
        Svg::parse(
            format!(r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><rect width="8" height="4" fill="{fill}"/></svg>"#)
                .as_bytes(),
        )
        .unwrap()
    };
    let d = compare_svgs(&doc("#ff0000"), &doc("#0000ff"), 64);
    assert_eq!(d.ink_iou, 1.0);
    let expected = [0.5, 0.0, 0.5];
    assert_eq!(d.channel_mae.len(), expected.len());
    for (c, (got, want)) in d.channel_mae.iter().zip(expected).enumerate() {
        assert!((got - want).abs() < 1e-9, "channel {c}: {got} vs {want}");
    }
    assert!((d.colour_mae() - 0.5).abs() < 1e-9, "{d:?}");
    // The channel errors average to the overall mean absolute error.
    assert!((d.mean_abs_error - 1.0 / 3.0).abs() < 1e-9, "{d:?}");
    let same = compare_svgs(&doc("#ff0000"), &doc("red"), 64);
    assert_eq!(same.channel_mae, [0.0; 3]);
    assert_eq!(same.colour_mae(), 0.0);
}

#[test]
fn channel_errors_average_to_the_mean_abs_error_and_fail_on_nan() {
    let (a, b) = (load("metric_a.png"), load("metric_b.png"));
    let ch = channel_mean_abs_error(&a, &b).unwrap();
    let mae = mean_abs_error(&a, &b).unwrap();
    assert!(
        ((ch[0] + ch[1] + ch[2]) / 3.0 - mae).abs() < 1e-12,
        "{ch:?} vs {mae}"
    );
    // One transparent corner over white: only the blue channel differs.
    let mut c = RgbaImage::from_pixel(20, 20, Rgba([255, 255, 255, 255]));
    c.put_pixel(0, 0, Rgba([255, 255, 0, 255]));
    let white = RgbaImage::from_pixel(20, 20, Rgba([0, 0, 0, 0]));
    let ch = channel_mean_abs_error(&c, &white).unwrap();
    assert_eq!(ch, [0.0, 0.0, 1.0 / 400.0]);
    assert!(matches!(
        channel_mean_abs_error(&RgbaImage::new(3, 3), &RgbaImage::new(3, 4)),
        Err(MetricError::SizeMismatch { .. })
    ));
    let d = compare_images(&a, &b).unwrap();
    let nan = svgen_core::RasterDiff {
        channel_mae: [0.0, f64::NAN, 0.0],
        ..d
    };
    assert!(nan.colour_mae().is_nan());
}
