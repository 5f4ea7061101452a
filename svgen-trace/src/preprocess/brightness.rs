//! Exact per-pixel brightness under potrace's and mkbitmap's reading conventions (unweighted
//! channel mean, alpha composited over white; see the [module docs](super)).

use image::DynamicImage;

/// Channel sum of one pixel, composited over white, plus the number of summed channels and the
/// channel maximum: brightness = `sum / (channels × max)`.
pub(super) struct PixelSource<'a> {
    image: &'a DynamicImage,
    /// Fallback for exotic layouts (f32 images): an RGBA f32 copy.
    float: Option<image::Rgba32FImage>,
}

impl<'a> PixelSource<'a> {
    pub(super) fn new(image: &'a DynamicImage) -> Self {
        let float = match image {
            DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgba8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_) => None,
            other => Some(other.to_rgba32f()),
        };
        PixelSource { image, float }
    }

    /// `(channel sum over white, channels, max)` of pixel `(x, y)`.
    #[inline]
    fn sum(&self, x: u32, y: u32) -> (f64, u32, f64) {
        #[inline]
        fn over_white(c: f64, a: f64, max: f64) -> f64 {
            if a >= max {
                c
            } else {
                (c * a + max * (max - a)) / max
            }
        }
        if let Some(f) = &self.float {
            let p = f.get_pixel(x, y).0;
            let a = f64::from(p[3]).clamp(0.0, 1.0);
            let s: f64 = p[..3]
                .iter()
                .map(|&c| over_white(f64::from(c).clamp(0.0, 1.0), a, 1.0))
                .sum();
            return (s, 3, 1.0);
        }
        match self.image {
            DynamicImage::ImageLuma8(i) => (f64::from(i.get_pixel(x, y).0[0]), 1, 255.0),
            DynamicImage::ImageLumaA8(i) => {
                let p = i.get_pixel(x, y).0;
                (over_white(p[0].into(), p[1].into(), 255.0), 1, 255.0)
            }
            DynamicImage::ImageRgb8(i) => {
                let p = i.get_pixel(x, y).0;
                (
                    f64::from(u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])),
                    3,
                    255.0,
                )
            }
            DynamicImage::ImageRgba8(i) => {
                let p = i.get_pixel(x, y).0;
                let a = f64::from(p[3]);
                let s = p[..3].iter().map(|&c| over_white(c.into(), a, 255.0)).sum();
                (s, 3, 255.0)
            }
            DynamicImage::ImageLuma16(i) => (f64::from(i.get_pixel(x, y).0[0]), 1, 65535.0),
            DynamicImage::ImageLumaA16(i) => {
                let p = i.get_pixel(x, y).0;
                (over_white(p[0].into(), p[1].into(), 65535.0), 1, 65535.0)
            }
            DynamicImage::ImageRgb16(i) => {
                let p = i.get_pixel(x, y).0;
                (
                    f64::from(u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])),
                    3,
                    65535.0,
                )
            }
            DynamicImage::ImageRgba16(i) => {
                let p = i.get_pixel(x, y).0;
                let a = f64::from(p[3]);
                let s = p[..3]
                    .iter()
                    .map(|&c| over_white(c.into(), a, 65535.0))
                    .sum();
                (s, 3, 65535.0)
            }
            // Every other layout was converted to `float` in `new`.
            _ => (3.0, 3, 1.0),
        }
    }

    /// Brightness in `[0, 1]` (0 = black).
    #[inline]
    pub(super) fn brightness(&self, x: u32, y: u32) -> f64 {
        let (s, n, max) = self.sum(x, y);
        s / (f64::from(n) * max)
    }

    /// mkbitmap's reader: like [`Self::brightness`], but a colour pixel's mean is truncated to
    /// an integer sample first (`(r + g + b) / 3` in integer arithmetic).
    #[inline]
    pub(super) fn mkbitmap_brightness(&self, x: u32, y: u32) -> f64 {
        let (s, n, max) = self.sum(x, y);
        if n == 3 && max > 1.0 {
            (s / 3.0).floor() / max
        } else {
            s / (f64::from(n) * max)
        }
    }

    /// potrace's reader: black when the value is at most `blacklevel × maxval`.
    #[inline]
    pub(super) fn potrace_black(&self, x: u32, y: u32, blacklevel: f64) -> bool {
        let (s, n, max) = self.sum(x, y);
        potrace_black(s, n, max, blacklevel)
    }
}

/// potrace's black test on a channel sum `s` of `n` channels with maximum `max`: the one
/// comparison behind [`PixelSource::potrace_black`] and the tables of its fast paths.
#[inline]
pub(super) fn potrace_black(s: f64, n: u32, max: f64, blacklevel: f64) -> bool {
    s <= f64::from(n) * blacklevel * max
}
