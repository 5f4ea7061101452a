//! Tracing many images in parallel with bounded parallelism.
//!
//! [`trace_batch`] runs on its own rayon pool of [`BatchOptions::threads`] threads, so at most
//! that many images are decoded and traced at once, whatever the size of the batch. Every item
//! gets its own `Result`: one corrupt file does not stop the others.
//!
//! ```
//! use svgen_trace::batch::{trace_batch, BatchOptions};
//! use svgen_trace::Bitmap;
//! # fn main() -> Result<(), svgen_trace::TraceError> {
//! let icons: Vec<Bitmap> = (1..=4u32)
//!     .map(|r| Bitmap::from_fn(32, 32, |x, y| x.abs_diff(16).pow(2) + y.abs_diff(16).pow(2) < r * r * 9))
//!     .collect::<Result<_, _>>()?;
//! let results = trace_batch(&icons, &BatchOptions { threads: 2, ..Default::default() })?;
//! assert_eq!(results.len(), 4);
//! assert!(results.iter().all(|r| r.as_ref().is_ok_and(|p| p.path_count() == 1)));
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use image::DynamicImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::preprocess::{decode_image, open_image, DecodeLimits, Threshold};
use crate::{trace, Bitmap, PathList, TraceError, TraceParams};

/// Options of [`trace_batch`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchOptions {
    /// Worker threads; 0 (the default) = one per available core.
    pub threads: usize,
    /// How decoded images are thresholded (ignored for [`Bitmap`] inputs).
    pub threshold: Threshold,
    /// Invert the bitmap after thresholding (potrace `-i`; ignored for [`Bitmap`] inputs).
    pub invert: bool,
    /// Tracing parameters.
    pub trace: TraceParams,
    /// Decoding limits for encoded inputs; `max_pixels` also bounds the bitmaps.
    pub limits: DecodeLimits,
}

/// Something [`trace_batch`] can turn into a bitmap: an already thresholded [`Bitmap`], a
/// decoded [`DynamicImage`], encoded file bytes (`Vec<u8>`, `&[u8]`) or a file path.
pub trait BatchInput: Sync {
    /// The bitmap to trace.
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError>;
}

impl BatchInput for Bitmap {
    fn to_bitmap(&self, _: &BatchOptions) -> Result<Bitmap, TraceError> {
        Ok(self.clone())
    }
}

fn threshold(image: &DynamicImage, options: &BatchOptions) -> Result<Bitmap, TraceError> {
    let mut bm =
        Bitmap::from_image_with_limit(image, &options.threshold, options.limits.max_pixels)?;
    if options.invert {
        bm.invert();
    }
    Ok(bm)
}

impl BatchInput for DynamicImage {
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError> {
        threshold(self, options)
    }
}

impl BatchInput for [u8] {
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError> {
        threshold(&decode_image(self, &options.limits)?, options)
    }
}

impl BatchInput for Vec<u8> {
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError> {
        self.as_slice().to_bitmap(options)
    }
}

impl BatchInput for Path {
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError> {
        threshold(&open_image(self, &options.limits)?, options)
    }
}

impl BatchInput for PathBuf {
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError> {
        self.as_path().to_bitmap(options)
    }
}

impl<T: BatchInput + ?Sized> BatchInput for &T {
    fn to_bitmap(&self, options: &BatchOptions) -> Result<Bitmap, TraceError> {
        (**self).to_bitmap(options)
    }
}

/// Traces every input on a pool of [`BatchOptions::threads`] threads; results are in input
/// order. The outer error is only for invalid options or a thread pool that cannot start.
pub fn trace_batch<T: BatchInput>(
    inputs: &[T],
    options: &BatchOptions,
) -> Result<Vec<Result<PathList, TraceError>>, TraceError> {
    trace_batch_with(inputs, options, trace)
}

/// Like [`trace_batch`], running `f` (for example tracing and writing SVG) on every bitmap.
pub fn trace_batch_with<T, R, F>(
    inputs: &[T],
    options: &BatchOptions,
    f: F,
) -> Result<Vec<Result<R, TraceError>>, TraceError>
where
    T: BatchInput,
    R: Send,
    F: Fn(&Bitmap, &TraceParams) -> Result<R, TraceError> + Sync,
{
    options.trace.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .map_err(|e| TraceError::InvalidParam {
            name: "threads",
            reason: format!("cannot start the thread pool: {e}"),
        })?;
    Ok(pool.install(|| {
        inputs
            .par_iter()
            .with_max_len(1)
            .map(|input| f(&input.to_bitmap(options)?, &options.trace))
            .collect()
    }))
}
