//! [`Greymap`], the floating-point grey image the mkbitmap-style filters work on: construction
//! from images, access, inversion and the final threshold. Filtering and scaling live in
//! [`filter`](super::filter) and [`scale`](super::scale).

use image::DynamicImage;

use super::brightness::PixelSource;
use super::check_finite;
use crate::bitmap::{check_size, DEFAULT_PIXEL_LIMIT};
use crate::{Bitmap, TraceError};

/// A grey image with `f32` brightness per pixel (0 = black, 1 = white; row 0 = top), the working
/// format of the mkbitmap-style filters. Values may leave `[0, 1]` between filter steps.
///
/// ```
/// use svgen_trace::preprocess::{Greymap, Interpolation};
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// let g = Greymap::from_fn(2, 1, |x, _| x as f32)?; // black, white
/// let s = g.scale(2, Interpolation::Linear)?;
/// assert_eq!((s.width(), s.height()), (4, 2));
/// assert_eq!(s.get(1, 0), 0.5); // halfway between the two source pixels
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Greymap {
    pub(super) width: u32,
    pub(super) height: u32,
    /// Row-major, row 0 = top.
    pub(super) data: Vec<f32>,
}

impl Greymap {
    /// A greymap whose pixel `(x, y)` is `f(x, y)`, limited to [`DEFAULT_PIXEL_LIMIT`] pixels.
    pub fn from_fn(
        width: u32,
        height: u32,
        f: impl FnMut(u32, u32) -> f32,
    ) -> Result<Greymap, TraceError> {
        Greymap::from_fn_with_limit(width, height, DEFAULT_PIXEL_LIMIT, f)
    }

    /// Like [`Greymap::from_fn`] with an explicit pixel limit, checked before allocating.
    pub fn from_fn_with_limit(
        width: u32,
        height: u32,
        max_pixels: u64,
        mut f: impl FnMut(u32, u32) -> f32,
    ) -> Result<Greymap, TraceError> {
        check_size(width, height, max_pixels)?;
        let mut data = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        Ok(Greymap {
            width,
            height,
            data,
        })
    }

    /// The brightness of an image: unweighted mean of the colour channels, composited over white.
    pub fn from_image(image: &DynamicImage) -> Result<Greymap, TraceError> {
        Greymap::from_image_with_limit(image, DEFAULT_PIXEL_LIMIT)
    }

    /// Like [`Greymap::from_image`] with an explicit pixel limit.
    pub fn from_image_with_limit(
        image: &DynamicImage,
        max_pixels: u64,
    ) -> Result<Greymap, TraceError> {
        let src = PixelSource::new(image);
        Greymap::from_fn_with_limit(image.width(), image.height(), max_pixels, |x, y| {
            src.brightness(x, y) as f32
        })
    }

    /// The greymap mkbitmap reads from an image: as [`Greymap::from_image`], except that the
    /// mean of an integer colour pixel is truncated to an integer sample (`(r + g + b) / 3`), as
    /// mkbitmap 1.16 does (a pixel summing to 383 reads as 127/255, below 0.5).
    pub fn from_image_like_mkbitmap(
        image: &DynamicImage,
        max_pixels: u64,
    ) -> Result<Greymap, TraceError> {
        let src = PixelSource::new(image);
        Greymap::from_fn_with_limit(image.width(), image.height(), max_pixels, |x, y| {
            src.mkbitmap_brightness(x, y) as f32
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Brightness of pixel `(x, y)`. Panics when out of range, like slice indexing.
    pub fn get(&self, x: u32, y: u32) -> f32 {
        assert!(x < self.width && y < self.height, "pixel out of range");
        self.data[y as usize * self.width as usize + x as usize]
    }

    /// All pixels, row by row from the top.
    pub fn pixels(&self) -> &[f32] {
        &self.data
    }

    /// `v ↦ 1 - v` (mkbitmap `-i`).
    pub fn invert(&mut self) {
        for v in &mut self.data {
            *v = 1.0 - *v;
        }
    }

    /// Black where brightness is strictly below `level` (mkbitmap `-t`).
    pub fn threshold(&self, level: f64) -> Result<Bitmap, TraceError> {
        self.threshold_with_limit(level, DEFAULT_PIXEL_LIMIT)
    }

    pub(super) fn threshold_with_limit(
        &self,
        level: f64,
        max_pixels: u64,
    ) -> Result<Bitmap, TraceError> {
        check_finite("threshold", level)?;
        let w = self.width as usize;
        Bitmap::from_fn_with_limit(self.width, self.height, max_pixels, |x, y| {
            f64::from(self.data[y as usize * w + x as usize]) < level
        })
    }
}
