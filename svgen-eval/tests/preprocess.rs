//! `ClipImageProcessor` vs transformers' `CLIPImageProcessor` (PIL backend) on real images.

use std::path::Path;

use svgen_core::compare::{assert_close, Tolerance};
use svgen_eval::{ClipImageProcessor, Weights};

#[test]
fn pixel_values_match_transformers_within_1e3() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess");
    let w = Weights::from_file(dir.join("pixel_values.safetensors")).unwrap();
    let mut keys: Vec<String> = w.keys().map(str::to_string).collect();
    keys.sort();
    assert!(keys.len() >= 4, "{keys:?}");
    for key in keys {
        // "<image>@<shortest_edge>/<crop>"
        let (name, sizes) = key.split_once('@').unwrap();
        let (size, crop) = sizes.split_once('/').unwrap();
        let p = ClipImageProcessor {
            shortest_edge: size.parse().unwrap(),
            crop_height: crop.parse().unwrap(),
            crop_width: crop.parse().unwrap(),
            ..Default::default()
        };
        let img = image::open(dir.join(format!("{name}.png")))
            .unwrap()
            .to_rgb8();
        let got = p.preprocess(&img).unwrap();
        let (exp, shape) = w.f32_any(&key).unwrap();
        assert_eq!(got.len(), exp.len(), "{key}: shape {shape:?}");
        assert_close(&key, &got, &exp, Tolerance::absolute(1e-3));
        // In fact the 8-bit resize is PIL-exact, so only float rounding remains.
        assert_close(
            &format!("{key} (resize no longer bit-exact?)"),
            &got,
            &exp,
            Tolerance::absolute(1e-5),
        );
    }
}

#[test]
fn sizes_and_bad_images() {
    let p = ClipImageProcessor::default();
    assert_eq!(p.resized_size(300, 199), (337, 224));
    assert_eq!(p.resized_size(181, 257), (224, 318));
    assert!(p.preprocess(&image::RgbImage::new(0, 5)).is_err());
    // extreme aspect ratios are refused instead of allocating gigabytes
    assert!(p.preprocess(&image::RgbImage::new(1, 200)).is_err());
    // tiny images are upscaled, not rejected
    assert_eq!(
        p.preprocess(&image::RgbImage::new(1, 1)).unwrap().len(),
        3 * 224 * 224
    );
}
