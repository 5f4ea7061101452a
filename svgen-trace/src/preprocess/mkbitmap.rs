//! The `mkbitmap` pipeline (invert, high-pass, blur, scale, threshold) with mkbitmap 1.16's
//! defaults.

use serde::{Deserialize, Serialize};

use super::check_finite;
use super::greymap::Greymap;
use super::scale::Interpolation;
use crate::{Bitmap, TraceError};

/// Parameters of the [`mkbitmap`] pipeline; the defaults are mkbitmap 1.16's
/// (`-f 4 -s 2 -3 -t 0.45`).
///
/// ```
/// use svgen_trace::preprocess::{Interpolation, MkbitmapParams};
/// let p = MkbitmapParams::default();
/// assert_eq!((p.filter, p.scale, p.interpolation, p.threshold), (Some(4.0), 2, Interpolation::Cubic, 0.45));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MkbitmapParams {
    /// Invert the input first (`-i`).
    pub invert: bool,
    /// High-pass filter radius (`-f`, default 4); `None` = `-n`.
    pub filter: Option<f64>,
    /// Low-pass (blur) radius (`-b`), applied after the high-pass filter; default none.
    pub blur: Option<f64>,
    /// Integer scale factor (`-s`, default 2).
    pub scale: u32,
    /// Interpolation for scaling (`-1` / `-3`, default cubic).
    pub interpolation: Interpolation,
    /// Threshold (`-t`, default 0.45): black where brightness < threshold.
    pub threshold: f64,
}

impl Default for MkbitmapParams {
    fn default() -> Self {
        MkbitmapParams {
            invert: false,
            filter: Some(4.0),
            blur: None,
            scale: 2,
            interpolation: Interpolation::Cubic,
            threshold: 0.45,
        }
    }
}

/// The mkbitmap pipeline on a greymap: invert, high-pass, blur, scale, threshold (in that
/// order), refusing outputs over `max_pixels`.
pub fn mkbitmap(
    grey: &Greymap,
    params: &MkbitmapParams,
    max_pixels: u64,
) -> Result<Bitmap, TraceError> {
    mkbitmap_grey(grey, params, max_pixels)?.threshold_with_limit(params.threshold, max_pixels)
}

/// The mkbitmap pipeline without its final threshold (mkbitmap `-g`).
pub fn mkbitmap_grey(
    grey: &Greymap,
    params: &MkbitmapParams,
    max_pixels: u64,
) -> Result<Greymap, TraceError> {
    check_finite("threshold", params.threshold)?;
    // Check the final size before any work.
    let nw = u64::from(grey.width) * u64::from(params.scale);
    let nh = u64::from(grey.height) * u64::from(params.scale);
    if nw.saturating_mul(nh) > max_pixels {
        return Err(TraceError::TooLarge {
            width: nw,
            height: nh,
            limit: max_pixels,
        });
    }
    let mut g = grey.clone();
    if params.invert {
        g.invert();
    }
    if let Some(r) = params.filter {
        g = g.highpass(r)?;
    }
    if let Some(r) = params.blur {
        g = g.blur(r)?;
    }
    g.scale_with_limit(params.scale, params.interpolation, max_pixels)
}
