//! Dark-background normalisation: detect a dark background from the border ring and invert.

use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::brightness::PixelSource;
use crate::TraceError;

/// Options of [`normalise_background`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackgroundOptions {
    /// Width of the border ring that is sampled, as a fraction of the smaller image side
    /// (at least one pixel). Default 0.02.
    pub border_fraction: f64,
    /// A border pixel counts as dark when its brightness is below this. Default 0.5.
    pub dark_level: f64,
    /// The image is inverted only when the median border brightness is dark **and** at least
    /// this fraction of the border pixels is dark, so that a dark frame around a light page or
    /// a few dark objects touching the edge do not trigger it. Default 0.6.
    pub min_dark_fraction: f64,
}

impl Default for BackgroundOptions {
    fn default() -> Self {
        BackgroundOptions {
            border_fraction: 0.02,
            dark_level: 0.5,
            min_dark_fraction: 0.6,
        }
    }
}

/// What [`normalise_background`] measured and decided.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackgroundDecision {
    /// Whether the image was inverted.
    pub inverted: bool,
    /// Median brightness of the border ring (1 = white; 1 for an empty image).
    pub border_median: f64,
    /// Fraction of border pixels darker than [`BackgroundOptions::dark_level`].
    pub dark_fraction: f64,
}

/// Detects a dark background from the border ring and, if found, inverts the colours (alpha
/// kept) so that the background becomes light and the drawing dark, ready for tracing. This is
/// the step the thesis did with OpenCV for Stable Diffusion outputs on black backgrounds.
///
/// ```
/// use image::{DynamicImage, Rgb, RgbImage};
/// use svgen_trace::preprocess::{normalise_background, BackgroundOptions};
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// // A white disc on a near-black background.
/// let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
///     let d = (x as i32 - 32).pow(2) + (y as i32 - 32).pow(2);
///     if d < 400 { Rgb([250, 250, 250]) } else { Rgb([10, 12, 20]) }
/// }));
/// let (out, decision) = normalise_background(&img, &BackgroundOptions::default())?;
/// assert!(decision.inverted);
/// assert_eq!(out.to_rgb8().get_pixel(0, 0).0, [245, 243, 235]);
/// # Ok(()) }
/// ```
pub fn normalise_background(
    image: &DynamicImage,
    options: &BackgroundOptions,
) -> Result<(DynamicImage, BackgroundDecision), TraceError> {
    for (name, v) in [
        ("border_fraction", options.border_fraction),
        ("dark_level", options.dark_level),
        ("min_dark_fraction", options.min_dark_fraction),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(TraceError::InvalidParam {
                name,
                reason: format!("must be between 0 and 1, got {v}"),
            });
        }
    }
    let decision = detect_background(image, options);
    let mut out = image.clone();
    if decision.inverted {
        out.invert();
    }
    Ok((out, decision))
}

/// The measurement half of [`normalise_background`], without copying the image.
pub fn detect_background(image: &DynamicImage, options: &BackgroundOptions) -> BackgroundDecision {
    let (w, h) = (image.width(), image.height());
    if w == 0 || h == 0 {
        return BackgroundDecision {
            inverted: false,
            border_median: 1.0,
            dark_fraction: 0.0,
        };
    }
    let side = f64::from(w.min(h));
    let ring = ((side * options.border_fraction).round() as u32).clamp(1, w.min(h).div_ceil(2));
    let src = PixelSource::new(image);
    let mut values: Vec<f64> = Vec::new();
    for y in 0..h {
        let full_row = y < ring || y >= h - ring;
        if full_row {
            values.extend((0..w).map(|x| src.brightness(x, y)));
        } else {
            values.extend((0..ring.min(w)).map(|x| src.brightness(x, y)));
            values.extend((w.saturating_sub(ring).max(ring)..w).map(|x| src.brightness(x, y)));
        }
    }
    let dark = values.iter().filter(|&&v| v < options.dark_level).count();
    let dark_fraction = dark as f64 / values.len() as f64;
    let mid = values.len() / 2;
    let (_, median, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let border_median = *median;
    BackgroundDecision {
        inverted: border_median < options.dark_level && dark_fraction >= options.min_dark_fraction,
        border_median,
        dark_fraction,
    }
}
