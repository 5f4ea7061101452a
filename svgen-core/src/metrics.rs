//! Raster comparison of two renderings: ink-mask IoU, mean absolute error and SSIM.
//!
//! All three metrics first composite each pixel over opaque white (what a viewer sees on a white
//! page), so a transparent and a white background compare equal.
//!
//! * [`ink_iou`]: intersection over union of the *ink masks*. A pixel is ink when its darkness
//!   over white, `255 − min(R, G, B)`, is at least [`INK_THRESHOLD`]. Two blank images have
//!   IoU 1.
//! * [`mean_abs_error`]: mean of `|a − b| / 255` over all pixels and the R, G, B channels, in
//!   `[0, 1]`.
//! * [`channel_mean_abs_error`]: the same mean taken per channel (R, G, B), so that a change of
//!   colour that touches one channel is not diluted by the two others; the colour check of a
//!   lossless rewrite is the largest of the three ([`RasterDiff::colour_mae`]).
//! * [`ssim`]: the structural similarity index of Wang et al. (2004) on luma (ITU-R BT.601),
//!   with an 11 × 11 Gaussian window (σ = 1.5), `K1 = 0.01`, `K2 = 0.03`, `L = 255`, averaged over
//!   every window that lies inside the image. This equals scikit-image's
//!   `structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//!   data_range=255)`, which the tests check against.
//!
//! ```
//! use svgen_core::metrics::compare_svgs;
//! use svgen_core::Svg;
//!
//! let a = Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8">
//!     <rect width="8" height="4"/></svg>"#).unwrap();
//! let b = Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8">
//!     <path d="M0 0h8v4H0z"/></svg>"#).unwrap();
//! let diff = compare_svgs(&a, &b, 64);
//! assert_eq!(diff.ink_iou, 1.0);
//! assert_eq!(diff.mean_abs_error, 0.0);
//! assert!((diff.ssim - 1.0).abs() < 1e-9);
//! ```

use image::RgbaImage;

use crate::render::{render, RenderOptions};
use crate::svg::Svg;

/// Minimum darkness over white (`255 − min(R, G, B)`) of an ink pixel, about 12.5 %.
pub const INK_THRESHOLD: u8 = 32;

/// Side of the SSIM window.
pub const SSIM_WINDOW: u32 = 11;

/// An error comparing two images.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricError {
    /// The images have different sizes.
    #[error("image sizes differ: {a:?} vs {b:?}")]
    SizeMismatch {
        /// Size of the first image.
        a: (u32, u32),
        /// Size of the second image.
        b: (u32, u32),
    },
    /// An image is smaller than the SSIM window in some direction.
    #[error("images of {width}x{height} are smaller than the {window}x{window} SSIM window")]
    TooSmall {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Window side.
        window: u32,
    },
}

/// All three metrics for one pair of renderings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RasterDiff {
    /// Ink-mask intersection over union, in `[0, 1]` (1 = identical masks).
    pub ink_iou: f64,
    /// Mean absolute error of RGB over white, in `[0, 1]` (0 = identical).
    pub mean_abs_error: f64,
    /// Mean absolute error over white of each channel (R, G, B), in `[0, 1]`; their mean is
    /// `mean_abs_error`.
    pub channel_mae: [f64; 3],
    /// Mean SSIM of luma, in `[-1, 1]` (1 = identical).
    pub ssim: f64,
}

impl RasterDiff {
    /// The largest per-channel mean absolute error, in `[0, 1]`: the colour difference of the
    /// two renderings. NaN if any channel's error is NaN.
    pub fn colour_mae(&self) -> f64 {
        let [r, g, b] = self.channel_mae;
        if r.is_nan() || g.is_nan() || b.is_nan() {
            return f64::NAN;
        }
        r.max(g).max(b)
    }
}

/// Renders both documents into a `size` × `size` white canvas (drawing contained and centred)
/// and compares the renderings. `size` is raised to at least [`SSIM_WINDOW`].
pub fn compare_svgs(a: &Svg, b: &Svg, size: u32) -> RasterDiff {
    let opts = RenderOptions::square(size.max(SSIM_WINDOW));
    let (ia, ib) = (render(a, &opts), render(b, &opts));
    compare_images(&ia, &ib).unwrap_or(RasterDiff {
        // Unreachable: both images have the same size, at least the SSIM window.
        ink_iou: 0.0,
        mean_abs_error: 1.0,
        channel_mae: [1.0; 3],
        ssim: -1.0,
    })
}

/// Computes all three metrics for two images of the same size.
pub fn compare_images(a: &RgbaImage, b: &RgbaImage) -> Result<RasterDiff, MetricError> {
    let channel_mae = channel_mean_abs_error(a, b)?;
    Ok(RasterDiff {
        ink_iou: ink_iou(a, b)?,
        mean_abs_error: mean_abs_error(a, b)?,
        channel_mae,
        ssim: ssim(a, b)?,
    })
}

fn same_size(a: &RgbaImage, b: &RgbaImage) -> Result<(), MetricError> {
    if a.dimensions() == b.dimensions() {
        Ok(())
    } else {
        Err(MetricError::SizeMismatch {
            a: a.dimensions(),
            b: b.dimensions(),
        })
    }
}

/// A straight-alpha pixel composited over opaque white.
#[inline]
fn over_white(p: &image::Rgba<u8>) -> [f64; 3] {
    let [r, g, b, a] = p.0;
    let a = f64::from(a) / 255.0;
    let c = |v: u8| f64::from(v) * a + 255.0 * (1.0 - a);
    [c(r), c(g), c(b)]
}

/// Whether a pixel counts as ink (see the module docs).
#[inline]
pub fn is_ink(p: &image::Rgba<u8>) -> bool {
    let [r, g, b] = over_white(p);
    255.0 - r.min(g).min(b) >= f64::from(INK_THRESHOLD)
}

/// Ink-mask intersection over union; 1 when neither image has ink.
pub fn ink_iou(a: &RgbaImage, b: &RgbaImage) -> Result<f64, MetricError> {
    same_size(a, b)?;
    let (mut inter, mut union) = (0u64, 0u64);
    for (pa, pb) in a.pixels().zip(b.pixels()) {
        let (ia, ib) = (is_ink(pa), is_ink(pb));
        inter += u64::from(ia && ib);
        union += u64::from(ia || ib);
    }
    Ok(if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    })
}

/// Mean absolute error of R, G, B over white, scaled to `[0, 1]`.
pub fn mean_abs_error(a: &RgbaImage, b: &RgbaImage) -> Result<f64, MetricError> {
    same_size(a, b)?;
    let n = u64::from(a.width()) * u64::from(a.height()) * 3;
    if n == 0 {
        return Ok(0.0);
    }
    let sum: f64 = a
        .pixels()
        .zip(b.pixels())
        .map(|(pa, pb)| {
            let (ca, cb) = (over_white(pa), over_white(pb));
            (0..3).map(|i| (ca[i] - cb[i]).abs()).sum::<f64>()
        })
        .sum();
    Ok(sum / (n as f64 * 255.0))
}

/// Mean absolute error over white of each of R, G, B, scaled to `[0, 1]`.
pub fn channel_mean_abs_error(a: &RgbaImage, b: &RgbaImage) -> Result<[f64; 3], MetricError> {
    same_size(a, b)?;
    let n = u64::from(a.width()) * u64::from(a.height());
    if n == 0 {
        return Ok([0.0; 3]);
    }
    let mut sum = [0.0f64; 3];
    for (pa, pb) in a.pixels().zip(b.pixels()) {
        let (ca, cb) = (over_white(pa), over_white(pb));
        for i in 0..3 {
            sum[i] += (ca[i] - cb[i]).abs();
        }
    }
    Ok(sum.map(|s| s / (n as f64 * 255.0)))
}

/// Luma plane (BT.601) of an image over white.
fn luma(img: &RgbaImage) -> Vec<f64> {
    img.pixels()
        .map(|p| {
            let [r, g, b] = over_white(p);
            0.299 * r + 0.587 * g + 0.114 * b
        })
        .collect()
}

/// The normalised 1-D Gaussian of [`SSIM_WINDOW`] taps, σ = 1.5.
fn gaussian_kernel() -> [f64; SSIM_WINDOW as usize] {
    let mut k = [0.0; SSIM_WINDOW as usize];
    let r = (SSIM_WINDOW / 2) as f64;
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - r;
        *v = (-x * x / (2.0 * 1.5 * 1.5)).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Separable "valid" Gaussian filter: output is `(w − 10) × (h − 10)`.
fn filter_valid(src: &[f64], w: usize, h: usize, k: &[f64]) -> Vec<f64> {
    let n = k.len();
    let (ow, oh) = (w + 1 - n, h + 1 - n);
    let mut tmp = vec![0.0; ow * h];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        for x in 0..ow {
            tmp[y * ow + x] = k.iter().zip(&row[x..x + n]).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = k
                .iter()
                .enumerate()
                .map(|(i, kv)| kv * tmp[(y + i) * ow + x])
                .sum();
        }
    }
    out
}

/// Mean SSIM of the two images' luma (see the module docs for the exact definition).
pub fn ssim(a: &RgbaImage, b: &RgbaImage) -> Result<f64, MetricError> {
    same_size(a, b)?;
    let (w, h) = a.dimensions();
    if w < SSIM_WINDOW || h < SSIM_WINDOW {
        return Err(MetricError::TooSmall {
            width: w,
            height: h,
            window: SSIM_WINDOW,
        });
    }
    let (w, h) = (w as usize, h as usize);
    let (x, y) = (luma(a), luma(b));
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * b).collect();
    let k = gaussian_kernel();
    let [mx, my, mxx, myy, mxy] =
        [&x, &y, &xx, &yy, &xy].map(|plane| filter_valid(plane, w, h, &k));
    let c1 = (0.01f64 * 255.0).powi(2);
    let c2 = (0.03f64 * 255.0).powi(2);
    let mut sum = 0.0;
    for i in 0..mx.len() {
        let (ux, uy) = (mx[i], my[i]);
        let vx = mxx[i] - ux * ux;
        let vy = myy[i] - uy * uy;
        let cxy = mxy[i] - ux * uy;
        sum +=
            ((2.0 * ux * uy + c1) * (2.0 * cxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
    }
    Ok(sum / mx.len() as f64)
}
