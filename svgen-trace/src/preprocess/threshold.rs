//! From a grey or colour image to a [`Bitmap`]: potrace's `-k` black level, Otsu's method and
//! the mkbitmap pipeline, chosen by [`Threshold`].

use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::brightness::{potrace_black, PixelSource};
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
        match threshold {
            Threshold::BlackLevel(k) => {
                check_finite("blacklevel", *k)?;
                black_level(image, *k, max_pixels)
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

/// [`Threshold::BlackLevel`]. For opaque 8-bit pixels — the common case — the black test is
/// a comparison of the integer channel sum with the largest sum that potrace's test calls black
/// (the test is monotone in the sum, and that largest sum is found by running the very
/// comparison the per-pixel path makes on every possible sum), so the result is the same bit
/// for bit; other pixels take the per-pixel path.
fn black_level(image: &DynamicImage, k: f64, max_pixels: u64) -> Result<Bitmap, TraceError> {
    let (w, h) = (image.width(), image.height());
    let src = PixelSource::new(image);
    // The largest black channel sum of n 8-bit channels, or -1 when none is black.
    let lightest_black = |n: u32| -> i32 {
        (0..=255 * n)
            .rev()
            .find(|&s| potrace_black(f64::from(s), n, 255.0, k))
            .map_or(-1, |s| s as i32)
    };
    let sum3 = |p: &[u8]| i32::from(p[0]) + i32::from(p[1]) + i32::from(p[2]);
    match image {
        DynamicImage::ImageLuma8(img) => {
            let m = lightest_black(1);
            Bitmap::from_pixels(w, h, max_pixels, img.as_raw(), |_, _, &[v]| {
                i32::from(v) <= m
            })
        }
        DynamicImage::ImageLumaA8(img) => {
            let m = lightest_black(1);
            Bitmap::from_pixels(w, h, max_pixels, img.as_raw(), |x, y, &[v, a]| {
                if a == 255 {
                    i32::from(v) <= m
                } else {
                    src.potrace_black(x, y, k)
                }
            })
        }
        DynamicImage::ImageRgb8(img) => {
            let m = lightest_black(3);
            Bitmap::from_pixels(w, h, max_pixels, img.as_raw(), |_, _, p: &[u8; 3]| {
                sum3(p) <= m
            })
        }
        DynamicImage::ImageRgba8(img) => {
            let m = lightest_black(3);
            Bitmap::from_pixels(w, h, max_pixels, img.as_raw(), |x, y, p: &[u8; 4]| {
                if p[3] == 255 {
                    sum3(p) <= m
                } else {
                    src.potrace_black(x, y, k)
                }
            })
        }
        _ => Bitmap::from_fn_with_limit(w, h, max_pixels, |x, y| src.potrace_black(x, y, k)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, GrayImage, RgbImage, RgbaImage};

    #[test]
    fn black_level_fast_paths_match_the_per_pixel_test() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        // Alpha is opaque, transparent or anything, a third of the time each.
        let mut alpha = {
            let mut b = byte;
            move || match b() % 3 {
                0 => 255,
                1 => 0,
                _ => b(),
            }
        };
        let (w, h) = (131, 7); // two full words and a partial one per row
        let mut px = Vec::new();
        for _ in 0..w * h {
            px.push([byte(), byte(), byte(), alpha()]);
        }
        let at = |x: u32, y: u32| px[(y * w + x) as usize];
        let images = [
            DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| [at(x, y)[0]].into())),
            DynamicImage::ImageLumaA8(GrayAlphaImage::from_fn(w, h, |x, y| {
                let p = at(x, y);
                [p[0], p[3]].into()
            })),
            DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
                let p = at(x, y);
                [p[0], p[1], p[2]].into()
            })),
            DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| at(x, y).into())),
        ];
        for image in &images {
            let src = PixelSource::new(image);
            for k in [-0.1, 0.0, 0.1, 0.4, 0.5, 0.5019607843137255, 0.7, 1.0, 1.2] {
                let fast = Bitmap::from_image(image, &Threshold::BlackLevel(k)).unwrap();
                let slow = Bitmap::from_fn(w, h, |x, y| src.potrace_black(x, y, k)).unwrap();
                assert_eq!(fast, slow, "{:?} at k = {k}", image.color());
            }
        }
        // Exact boundaries: with -k 0.4 and maxval 255, grey 102 is black and 103 white.
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(2, 1, |x, _| [102 + x as u8].into()));
        let bm = Bitmap::from_image(&img, &Threshold::BlackLevel(0.4)).unwrap();
        assert!(bm.get(0, 0) && !bm.get(1, 0));
    }
}
