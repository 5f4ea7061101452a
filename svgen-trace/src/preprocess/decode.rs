//! Bounded decoding of untrusted image files: the pixel count is checked from the header before
//! any pixel buffer is allocated.

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use image::{DynamicImage, ImageError, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::bitmap::check_size;
use crate::TraceError;

/// Limits applied while decoding untrusted image files.
///
/// The pixel count is read from the header and checked **before** any pixel buffer is
/// allocated, so a 100-byte file claiming 100000 × 100000 pixels is rejected with
/// [`TraceError::TooLarge`].
///
/// ```
/// use svgen_trace::preprocess::{decode_image, DecodeLimits};
/// // A valid PGM header that claims 100000 x 100000 pixels, with no pixel data.
/// let data = b"P5\n100000 100000\n255\n";
/// let err = decode_image(data, &DecodeLimits::default()).unwrap_err();
/// assert!(matches!(err, svgen_trace::TraceError::TooLarge { .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeLimits {
    /// Largest accepted `width × height`. Default: 2²⁶ (for example 8192 × 8192).
    pub max_pixels: u64,
    /// Largest total allocation the decoder may make, in bytes. Default: 1 GiB.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 1 << 26,
            max_alloc: 1 << 30,
        }
    }
}

impl DecodeLimits {
    fn image_limits(&self) -> Limits {
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        let mut limits = Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }
}

/// Decodes an in-memory PNG, JPEG, BMP or PNM (PBM/PGM/PPM) file, guessing the format from its
/// content, under the given [`DecodeLimits`].
///
/// Truncated or corrupt data gives [`TraceError::Decode`]; a header over the pixel limit gives
/// [`TraceError::TooLarge`]. A 0 × 0 image decodes to an empty image (which traces to nothing).
pub fn decode_image(data: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, TraceError> {
    decode_with(|| Ok(Cursor::new(data)), limits)
}

/// Like [`decode_image`], reading the file at `path` (streamed, never read whole into memory).
pub fn open_image(
    path: impl AsRef<Path>,
    limits: &DecodeLimits,
) -> Result<DynamicImage, TraceError> {
    let path = path.as_ref();
    decode_with(
        || Ok(std::io::BufReader::new(std::fs::File::open(path)?)),
        limits,
    )
}

fn decode_with<R: BufRead + Seek>(
    open: impl Fn() -> Result<R, TraceError>,
    limits: &DecodeLimits,
) -> Result<DynamicImage, TraceError> {
    let reader = |r: R| -> Result<ImageReader<R>, TraceError> {
        let mut reader = ImageReader::new(r).with_guessed_format()?;
        if reader.format().is_none() {
            return Err(TraceError::Decode("unrecognised image format".into()));
        }
        reader.limits(limits.image_limits());
        Ok(reader)
    };
    // First pass: the header only.
    let (width, height) = reader(open()?)?.into_dimensions().map_err(decode_error)?;
    check_size(width, height, limits.max_pixels)?;
    let image = reader(open()?)?.decode().map_err(decode_error)?;
    // Some decoders only report their true size while decoding; check again.
    check_size(image.width(), image.height(), limits.max_pixels)?;
    Ok(image)
}

fn decode_error(e: ImageError) -> TraceError {
    match e {
        ImageError::IoError(io) => TraceError::Decode(io.to_string()),
        other => TraceError::Decode(other.to_string()),
    }
}
