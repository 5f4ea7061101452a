//! Decoded images out of a pipeline: `[B, 3, H, W]` floats in `[0, 1]` to 8-bit RGB, as
//! diffusers' `numpy_to_pil`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;

use crate::error::{Result, TrainError};

/// Converts `[B, 3, H, W]` floats in `[0, 1]` to 8-bit RGB images (`round(255·x)`, as diffusers'
/// `numpy_to_pil`).
///
/// # Errors
/// [`TrainError::ShapeMismatch`] when the tensor does not have 3 channels.
pub fn to_rgb_images<B: Backend>(images: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = images.dims();
    if c != 3 {
        return Err(TrainError::ShapeMismatch {
            key: "image".into(),
            expected: vec![b, 3, h, w],
            found: vec![b, c, h, w],
        });
    }
    let data: Vec<f32> = images
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainError::InvalidArgument(format!("image tensor unreadable: {e:?}")))?;
    let plane = h * w;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let base = i * 3 * plane;
        let mut img = RgbImage::new(w as u32, h as u32);
        for (k, px) in img.pixels_mut().enumerate() {
            for ch in 0..3 {
                let v = data[base + ch * plane + k];
                px.0[ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        out.push(img);
    }
    Ok(out)
}
