//! `CLIPImageProcessor`, reproduced bit for bit.
//!
//! transformers (PIL backend, the one it uses without torchvision) converts to RGB, resizes the shortest
//! side with PIL's `BICUBIC` (a = -0.5, support widened by the scale factor when downscaling — i.e.
//! antialiased — separable, horizontal pass first, 22-bit fixed-point coefficients, each pass rounded to
//! 8 bits), centre-crops, rescales by 1/255 (in f64, cast to f32) and normalises with OpenAI's mean and
//! std in f32. This module implements that same arithmetic (our own code, written from the algorithm's
//! description), so the resized 8-bit image is identical to PIL's and `pixel_values` agree to float
//! rounding (~1e-7). transformers' torchvision backend (when torchvision is installed) resamples in
//! float without the 8-bit rounding and differs from PIL by up to one 8-bit level (≈0.015 after
//! normalisation); we match the PIL backend.

use std::path::Path;

use burn::prelude::*;
use image::RgbImage;

use crate::error::{EvalError, Result};
use crate::hf_config::{ConfigError, HfConfig, OneOrMany};

/// OpenAI CLIP's per-channel mean.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel std.
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Longest side the shortest-side resize may produce (bounds memory for extreme aspect ratios).
pub const MAX_RESIZED_SIDE: u32 = 1 << 15;

/// Configuration of the preprocessing (`preprocessor_config.json`).
///
/// ```
/// use svgen_eval::ClipImageProcessor;
/// let p = ClipImageProcessor::default();
/// let img = image::RgbImage::from_pixel(300, 200, image::Rgb([255, 255, 255]));
/// let px = p.preprocess(&img).unwrap();
/// assert_eq!(px.len(), 3 * 224 * 224);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// Target of the shortest side (`size.shortest_edge`, 224).
    pub shortest_edge: u32,
    /// Crop height (`crop_size.height`, 224).
    pub crop_height: u32,
    /// Crop width (`crop_size.width`, 224).
    pub crop_width: u32,
    /// `do_resize`.
    pub do_resize: bool,
    /// `do_center_crop`.
    pub do_center_crop: bool,
    /// `do_rescale`.
    pub do_rescale: bool,
    /// `rescale_factor` (1/255).
    pub rescale_factor: f64,
    /// `do_normalize`.
    pub do_normalize: bool,
    /// `image_mean`.
    pub image_mean: [f32; 3],
    /// `image_std`.
    pub image_std: [f32; 3],
}

impl Default for ClipImageProcessor {
    fn default() -> Self {
        ClipImageProcessor {
            shortest_edge: 224,
            crop_height: 224,
            crop_width: 224,
            do_resize: true,
            do_center_crop: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point bicubic weights of every output position: `(first input index, weights)`.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates towards zero; the clamp makes that equal to flooring here.
            let xmin = ((center - support + 0.5).trunc().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).trunc() as usize).min(in_size);
            let n = xmax.saturating_sub(xmin);
            let mut w: Vec<f64> = (0..n)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            let fixed = w
                .iter()
                .map(|&v| {
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    if v < 0.0 {
                        (s - 0.5).trunc() as i32
                    } else {
                        (s + 0.5).trunc() as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL-exact bicubic resize of an RGB image.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    if (w0, h0) == (w1, h1) || w1 == 0 || h1 == 0 || w0 == 0 || h0 == 0 {
        return if (w0, h0) == (w1, h1) {
            img.clone()
        } else {
            RgbImage::new(width, height)
        };
    }
    let src = img.as_raw();
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass over the rows the vertical pass needs.
    let vert = coefficients(h0, h1);
    let (y_first, y_last) = if h1 != h0 {
        let last = vert.iter().map(|(s, k)| s + k.len()).max().unwrap_or(h0);
        (vert.first().map(|c| c.0).unwrap_or(0), last)
    } else {
        (0, h0)
    };
    let rows = y_last - y_first;
    let tmp: Vec<u8> = if w1 != w0 {
        let horiz = coefficients(w0, w1);
        let mut out = vec![0u8; rows * w1 * 3];
        for y in 0..rows {
            let row = &src[(y + y_first) * w0 * 3..(y + y_first + 1) * w0 * 3];
            for (x, (xmin, k)) in horiz.iter().enumerate() {
                let mut acc = [half; 3];
                for (i, &kv) in k.iter().enumerate() {
                    let p = (xmin + i) * 3;
                    for c in 0..3 {
                        acc[c] += i64::from(row[p + c]) * i64::from(kv);
                    }
                }
                for c in 0..3 {
                    out[(y * w1 + x) * 3 + c] = clip8(acc[c]);
                }
            }
        }
        out
    } else {
        src[y_first * w0 * 3..y_last * w0 * 3].to_vec()
    };
    let out: Vec<u8> = if h1 != h0 {
        let mut out = vec![0u8; h1 * w1 * 3];
        for (y, (ymin, k)) in vert.iter().enumerate() {
            let base = ymin - y_first;
            for x in 0..w1 {
                let mut acc = [half; 3];
                for (i, &kv) in k.iter().enumerate() {
                    let p = ((base + i) * w1 + x) * 3;
                    for c in 0..3 {
                        acc[c] += i64::from(tmp[p + c]) * i64::from(kv);
                    }
                }
                for c in 0..3 {
                    out[(y * w1 + x) * 3 + c] = clip8(acc[c]);
                }
            }
        }
        out
    } else {
        tmp
    };
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

impl ClipImageProcessor {
    /// Square processor of side `size` (resize shortest side to `size`, crop `size`×`size`).
    pub fn square(size: u32) -> Self {
        ClipImageProcessor {
            shortest_edge: size,
            crop_height: size,
            crop_width: size,
            ..Default::default()
        }
    }

    /// Reads an HF `preprocessor_config.json`; absent keys keep the CLIP defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::from_config(&HfConfig::read(path)?)?)
    }

    /// Reads the keys of a `preprocessor_config.json` (`size`, `crop_size`, `do_*`,
    /// `rescale_factor`, `image_mean`, `image_std`); absent keys keep the CLIP defaults. Resampling
    /// filters other than PIL's bicubic (`resample: 3`) are refused.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn from_config(c: &HfConfig) -> Result<Self, ConfigError> {
        let d = ClipImageProcessor::default();
        // A side in pixels: `default` when absent (`None`: required).
        let side = |c: &HfConfig, key: &str, default: Option<u32>| -> Result<u32, ConfigError> {
            let n: u32 = match default {
                Some(v) => c.get_or(key, v)?,
                None => c.require(key)?,
            };
            if n == 0 || n >= 1 << 16 {
                return Err(c.invalid(key, "must be in 1..65536"));
            }
            Ok(n)
        };
        let shortest_edge = if c.raw("size").is_some_and(|v| v.is_object()) {
            let size = c.section("size")?;
            if !size.contains("shortest_edge") {
                return Err(c.unsupported("size", "only size.shortest_edge is supported"));
            }
            side(&size, "shortest_edge", None)?
        } else {
            side(c, "size", Some(d.shortest_edge))?
        };
        let (crop_height, crop_width) = if c.raw("crop_size").is_some_and(|v| v.is_object()) {
            let crop = c.section("crop_size")?;
            (side(&crop, "height", None)?, side(&crop, "width", None)?)
        } else if c.contains("crop_size") {
            let n = side(c, "crop_size", None)?;
            (n, n)
        } else {
            (d.crop_height, d.crop_width)
        };
        if c.get_or::<u32>("resample", 3)? != 3 {
            return Err(c.unsupported("resample", "only 3 (PIL bicubic) is implemented"));
        }
        let channels = |key: &str, default: [f32; 3]| -> Result<[f32; 3], ConfigError> {
            match c.get::<OneOrMany<f32>>(key)?.map(|v| v.0).as_deref() {
                None => Ok(default),
                Some(&[x]) => Ok([x; 3]),
                Some(&[r, g, b]) => Ok([r, g, b]),
                Some(_) => Err(c.invalid(key, "must hold 1 or 3 numbers")),
            }
        };
        Ok(ClipImageProcessor {
            shortest_edge,
            crop_height,
            crop_width,
            do_resize: c.get_or("do_resize", d.do_resize)?,
            do_center_crop: c.get_or("do_center_crop", d.do_center_crop)?,
            do_rescale: c.get_or("do_rescale", d.do_rescale)?,
            rescale_factor: c.get_or("rescale_factor", d.rescale_factor)?,
            do_normalize: c.get_or("do_normalize", d.do_normalize)?,
            image_mean: channels("image_mean", d.image_mean)?,
            image_std: channels("image_std", d.image_std)?,
        })
    }

    /// Output size `(width, height)` of the shortest-side resize, as transformers computes it.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let s = self.shortest_edge as f64;
        if width <= height {
            (
                self.shortest_edge,
                (s * height as f64 / width as f64) as u32,
            )
        } else {
            (
                (s * width as f64 / height as f64) as u32,
                self.shortest_edge,
            )
        }
    }

    /// Resize + crop, the 8-bit image the model will see.
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        if img.width() == 0 || img.height() == 0 {
            return Err(EvalError::InvalidInput {
                name: "image".into(),
                expected: "a non-empty image".into(),
                found: format!("{}x{}", img.width(), img.height()),
            });
        }
        let img = if self.do_resize {
            let (w, h) = self.resized_size(img.width(), img.height());
            if w.max(h) > MAX_RESIZED_SIDE {
                return Err(EvalError::InvalidInput {
                    name: "image".into(),
                    expected: format!(
                        "an aspect ratio whose resized long side is at most {MAX_RESIZED_SIDE} px"
                    ),
                    found: format!("{}x{} -> {w}x{h}", img.width(), img.height()),
                });
            }
            resize_bicubic(img, w.max(1), h.max(1))
        } else {
            img.clone()
        };
        if !self.do_center_crop {
            return Ok(img);
        }
        let (cw, ch) = (self.crop_width, self.crop_height);
        if cw > img.width() || ch > img.height() {
            return Err(EvalError::InvalidInput {
                name: "image".into(),
                expected: format!("at least {cw}x{ch} after resizing for the centre crop"),
                found: format!("{}x{}", img.width(), img.height()),
            });
        }
        let left = (img.width() - cw) / 2;
        let top = (img.height() - ch) / 2;
        Ok(image::imageops::crop_imm(&img, left, top, cw, ch).to_image())
    }

    /// `pixel_values` of one image, channel-first `[3, H, W]` flattened.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let img = self.resize_and_crop(img)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut out = vec![0f32; 3 * w * h];
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let mut v = f32::from(px.0[c]);
                if self.do_rescale {
                    v = (f64::from(px.0[c]) * self.rescale_factor) as f32;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[c * w * h + i] = v;
            }
        }
        Ok(out)
    }

    /// `pixel_values` of a batch as a `[B, 3, H, W]` tensor.
    pub fn preprocess_batch<B: Backend>(
        &self,
        images: &[RgbImage],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        use rayon::prelude::*;
        let per: Vec<Vec<f32>> = images
            .par_iter()
            .map(|im| self.preprocess(im))
            .collect::<Result<_>>()?;
        let (h, w) = if self.do_center_crop {
            (self.crop_height as usize, self.crop_width as usize)
        } else {
            match images.first() {
                Some(first) => {
                    let (w, h) = self.resized_size(first.width(), first.height());
                    (h as usize, w as usize)
                }
                None => (0, 0),
            }
        };
        let mut flat = Vec::with_capacity(per.len() * 3 * h * w);
        for p in per {
            if p.len() != 3 * h * w {
                return Err(EvalError::InvalidInput {
                    name: "images".into(),
                    expected: "images of one size when do_center_crop is off".into(),
                    found: "images of different sizes".into(),
                });
            }
            flat.extend(p);
        }
        Ok(Tensor::from_data(
            TensorData::new(flat, [images.len(), 3, h, w]),
            device,
        ))
    }
}
