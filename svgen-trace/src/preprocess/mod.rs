//! From raster images to [`Bitmap`](crate::Bitmap)s: bounded decoding, grayscale, thresholds,
//! an `mkbitmap` equivalent, despeckling and dark-background normalisation.
//!
//! # Conventions (checked against the Debian `potrace` 1.16 binaries)
//!
//! * **Brightness** is the *unweighted mean* of the colour channels, as potrace's and mkbitmap's
//!   PPM/BMP readers compute it (pure green `#00ff00` is as dark as pure blue), not Rec. 601 luma.
//!   Neither binary reads PNG, so alpha follows the PNM convention of "paper": a pixel is
//!   composited over white, and a fully transparent pixel is white.
//! * **`potrace -k blacklevel`** makes a pixel black when its value is *at most*
//!   `blacklevel × maxval` (for colour: the channel sum at most `3 × blacklevel × maxval`). The
//!   comparison is inclusive: with `-k 0.4` and `maxval` 10, the grey value 4 is black.
//! * **`mkbitmap -t threshold`** makes a pixel black when its brightness is *strictly below* the
//!   threshold.
//! * mkbitmap works on its images bottom-up, so when scaling by `s` the output row `j` counted
//!   **from the bottom** samples the input at `j / s` rows from the bottom; columns are sampled
//!   left to right at `i / s`. [`Greymap::scale`] reproduces this exactly (verified bit for bit
//!   for linear and cubic interpolation).
//!
//! mkbitmap's high-pass and blur filters are described only as "approximately Gaussian". We use
//! a separable two-sided exponential (first-order recursive) filter whose variance equals the
//! requested radius squared; its step response matches mkbitmap's closely, and the final
//! bitmaps of the default pipeline (`-f 4 -s 2 -3 -t 0.45`) differ from mkbitmap's in well
//! under 1% of the pixels (the `mkbitmap_agrees_with_the_real_binary` test in
//! `tests/preprocess.rs` runs the real binary).
//! mkbitmap's own filter also loses a little brightness on flat areas (a flat grey comes out at
//! about 0.51 instead of 0.5); ours is exactly mean-preserving.
//!
//! # Layout
//!
//! One private module per concern, everything re-exported here:
//!
//! * `decode`: bounded decoding of untrusted files ([`decode_image`], [`open_image`]);
//! * `brightness`: the per-pixel reading conventions above;
//! * `threshold`: image → [`Bitmap`](crate::Bitmap) ([`Threshold`], Otsu);
//! * `greymap`: the grey working image ([`Greymap`]);
//! * `filter` and `scale`: mkbitmap's blur/high-pass and its up-scaling ([`Greymap::scale`]);
//! * `mkbitmap`: the whole pipeline ([`mkbitmap`](fn@mkbitmap));
//! * `despeckle`: removing small components ([`despeckle`](fn@despeckle));
//! * `background`: dark-background normalisation ([`normalise_background`]).

mod background;
mod brightness;
mod decode;
mod despeckle;
mod filter;
mod greymap;
mod mkbitmap;
mod scale;
mod threshold;

pub use background::{
    detect_background, normalise_background, BackgroundDecision, BackgroundOptions,
};
pub use decode::{decode_image, open_image, DecodeLimits};
pub use despeckle::despeckle;
pub use greymap::Greymap;
pub use mkbitmap::{mkbitmap, mkbitmap_grey, MkbitmapParams};
pub use scale::Interpolation;
pub use threshold::Threshold;

use crate::TraceError;

/// Refuses NaN and infinite parameters by name.
fn check_finite(name: &'static str, v: f64) -> Result<(), TraceError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(TraceError::InvalidParam {
            name,
            reason: format!("must be a finite number, got {v}"),
        })
    }
}

/// Refuses filter radii outside `0..=10000` pixels (and NaN) by name.
fn check_radius(name: &'static str, v: f64) -> Result<(), TraceError> {
    if (0.0..=1e4).contains(&v) {
        Ok(())
    } else {
        Err(TraceError::InvalidParam {
            name,
            reason: format!("must be a radius between 0 and 10000 pixels, got {v}"),
        })
    }
}
