//! From a grey or colour image to a [`Bitmap`]: potrace's `-k` black level, Otsu's method and
//! the mkbitmap pipeline, chosen by [`Threshold`].

use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::brightness::PixelSource;
use super::check_finite;
use super::greymap::Greymap;
use super::mkbitmap::{mkbitmap, MkbitmapParams};
use crate::bitmap::DEFAULT_PIXEL_LIMIT;
use crate::{Bitmap, TraceError};

/// How a grey or colour image becomes black and white.
///
/// ```
/// use image::{DynamicImage, GrayImage, Luma};
/// use svgen_trace::{preprocess::Threshold, Bitmap};
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// let img = DynamicImage::ImageLuma8(GrayImage::from_fn(4, 1, |x, _| Luma([x as u8 * 80])));
/// // potrace's default `-k 0.5`: values 0, 80 are black, 160 and 240 are white.
/// let bm = Bitmap::from_image(&img, &Threshold::default())?;
/// assert_eq!((bm.get(0, 0), bm.get(1, 0), bm.get(2, 0), bm.get(3, 0)), (true, true, false, false));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Threshold {
    /// potrace's `-k blacklevel` (default 0.5): black when brightness ≤ `blacklevel`.
    BlackLevel(f64),
    /// Otsu's method: the level that best separates the brightness histogram into two classes.
    Otsu,
    /// The `mkbitmap` pipeline (invert, high-pass, blur, scale, threshold). Note that it scales
    /// the bitmap by [`MkbitmapParams::scale`].
    Mkbitmap(MkbitmapParams),
}

impl Default for Threshold {
    /// potrace's default, `BlackLevel(0.5)`.
    fn default() -> Self {
        Threshold::BlackLevel(0.5)
    }
}

impl Bitmap {
    /// Thresholds an image into a bitmap, limited to [`DEFAULT_PIXEL_LIMIT`] output pixels.
    ///
    /// Brightness and alpha follow potrace's conventions (see the [module docs](crate::preprocess)).
    /// A 0 × 0 image gives an empty bitmap.
    pub fn from_image(image: &DynamicImage, threshold: &Threshold) -> Result<Bitmap, TraceError> {
        Bitmap::from_image_with_limit(image, threshold, DEFAULT_PIXEL_LIMIT)
    }

    /// Like [`Bitmap::from_image`] with an explicit limit on the output pixel count (which
    /// matters for [`Threshold::Mkbitmap`], whose scaling multiplies it by `scale²`).
    pub fn from_image_with_limit(
        image: &DynamicImage,
        threshold: &Threshold,
        max_pixels: u64,
    ) -> Result<Bitmap, TraceError> {
        let (w, h) = (image.width(), image.height());
        match threshold {
            Threshold::BlackLevel(k) => {
                check_finite("blacklevel", *k)?;
                let src = PixelSource::new(image);
                Bitmap::from_fn_with_limit(w, h, max_pixels, |x, y| src.potrace_black(x, y, *k))
            }
            Threshold::Otsu => {
                let g = Greymap::from_image_with_limit(image, max_pixels)?;
                let level = g.otsu_level();
                g.threshold_with_limit(level, max_pixels)
            }
            Threshold::Mkbitmap(p) => {
                let g = Greymap::from_image_like_mkbitmap(image, max_pixels)?;
                mkbitmap(&g, p, max_pixels)
            }
        }
    }
}

impl Greymap {
    /// Otsu's threshold over a 256-bin histogram of the clamped brightness: a level for
    /// [`Greymap::threshold`] that separates the two classes best. An image with a single
    /// brightness gets 0.5, so that it thresholds like potrace's default.
    pub fn otsu_level(&self) -> f64 {
        let mut hist = [0u64; 256];
        for &v in &self.data {
            hist[bin(v)] += 1;
        }
        let total: u64 = hist.iter().sum();
        let sum_all: f64 = hist
            .iter()
            .enumerate()
            .map(|(i, &c)| i as f64 * c as f64)
            .sum();
        let (mut w0, mut sum0) = (0u64, 0f64);
        let (mut best, mut best_t) = (-1f64, None);
        for (t, &c) in hist.iter().enumerate() {
            w0 += c;
            sum0 += t as f64 * c as f64;
            let w1 = total - w0;
            if w0 == 0 || w1 == 0 {
                continue;
            }
            let m0 = sum0 / w0 as f64;
            let m1 = (sum_all - sum0) / w1 as f64;
            let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
            if between > best {
                best = between;
                best_t = Some(t);
            }
        }
        // Black = bins 0..=t, i.e. brightness < (t + 1) / 256.
        best_t.map_or(0.5, |t| (t as f64 + 1.0) / 256.0)
    }
}

#[inline]
fn bin(v: f32) -> usize {
    ((v.clamp(0.0, 1.0) * 256.0) as usize).min(255)
}
