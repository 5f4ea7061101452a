//! The request checks every diffusion pipeline makes before it allocates anything: image size,
//! batch, steps and caller-supplied latents.

use crate::error::{Result, TrainError};

/// Largest image side accepted (memory guard).
pub const MAX_SIDE: usize = 4096;
/// Largest number of images in one call (memory guard).
pub const MAX_BATCH: usize = 64;

fn bad<T>(message: String) -> Result<T> {
    Err(TrainError::InvalidArgument(message))
}

/// Checks `width × height` (positive multiples of `multiple`, at most [`MAX_SIDE`]), `batch`
/// (1..=[`MAX_BATCH`]) and `steps` (at least 1).
pub(crate) fn check_size_batch_steps(
    width: usize,
    height: usize,
    multiple: usize,
    batch: usize,
    steps: usize,
) -> Result<()> {
    if width == 0
        || height == 0
        || !width.is_multiple_of(multiple)
        || !height.is_multiple_of(multiple)
    {
        return bad(format!(
            "width and height must be positive multiples of {multiple}, got {width}x{height}"
        ));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return bad(format!(
            "image sides above {MAX_SIDE} px are not supported, got {width}x{height}"
        ));
    }
    if batch == 0 || batch > MAX_BATCH {
        return bad(format!("batch must be in 1..={MAX_BATCH}, got {batch}"));
    }
    if steps == 0 {
        return bad("steps must be at least 1".into());
    }
    Ok(())
}

/// Checks caller-supplied initial latents: exactly `shape`'s element count, all finite.
pub(crate) fn check_latents(latents: Option<&[f32]>, shape: &[usize]) -> Result<()> {
    let Some(l) = latents else {
        return Ok(());
    };
    let n: usize = shape.iter().product();
    if l.len() != n {
        return Err(TrainError::ShapeMismatch {
            key: "latents".into(),
            expected: shape.to_vec(),
            found: vec![l.len()],
        });
    }
    if l.iter().any(|x| !x.is_finite()) {
        return bad("latents contain NaN or infinite values".into());
    }
    Ok(())
}
