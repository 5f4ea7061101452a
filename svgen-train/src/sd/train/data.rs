//! Training data: images with captions, from a folder or `svgen-data` shards, and the image
//! preprocessing (resize, center crop, `[-1, 1]`).

use std::path::{Path, PathBuf};

use svgen_data::generate::MAX_IMAGE_FILE_BYTES;
use svgen_data::stages::{decode_image, DecodeLimits};

use crate::error::{Result, TrainError};

/// One training example. The image is held encoded (as read from the file or shard) and decoded
/// when it is used, so a dataset costs its size on disk in memory, not its pixel count.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageCaption {
    /// Where it came from (file stem or shard row id).
    pub id: String,
    /// The encoded image (PNG, JPEG, BMP or PNM bytes).
    pub encoded: Vec<u8>,
    /// Its caption (the prompt the model learns to associate with it).
    pub caption: String,
}

/// Files [`ImageCaption::from_folder`] treats as images. Formats the build cannot decode (WebP,
/// GIF) are listed so that they fail with a typed error instead of being skipped silently.
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "pnm", "ppm", "webp", "gif"];

/// Checks that `bytes` hold a decodable image header whose pixel count is within
/// [`DecodeLimits::default`] (so an oversized image fails when the data set is loaded, not
/// mid-training); the error names `what`. Reads the header only.
fn check_image(bytes: &[u8], what: &str) -> Result<()> {
    let bad = |m: String| TrainError::InvalidArgument(format!("image {what}: {m}"));
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    let max = DecodeLimits::default().max_pixels;
    if u64::from(w) * u64::from(h) > max {
        return Err(bad(format!("{w} × {h} pixels is over the limit of {max}")));
    }
    Ok(())
}

impl ImageCaption {
    /// Decodes the image to RGB through svgen-data's bounded decoder (at most
    /// [`DecodeLimits::default`] pixels and allocation, checked from the header before any pixel
    /// is decoded); a corrupt or oversized image is a typed error naming the example.
    pub fn image(&self) -> Result<image::RgbImage> {
        decode_image(&self.encoded, &DecodeLimits::default())
            .map(|i| i.to_rgb8())
            .map_err(|e| TrainError::InvalidArgument(format!("image {}: {e}", self.id)))
    }
}

impl ImageCaption {
    /// Every image in `dir` (png, jpg, bmp, pnm; sorted by name) with the caption in the
    /// same-named `.txt` file. An image without caption file, or one that cannot be decoded
    /// (WebP and GIF are not built in), is a typed error naming it. Files are read bounded:
    /// images up to svgen-data's `MAX_IMAGE_FILE_BYTES` (64 MiB), captions up to
    /// [`svgen_core::io::MAX_CAPTION_BYTES`]; a larger one is [`TrainError::FileTooLarge`].
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Vec<Self>> {
        let dir = dir.as_ref();
        let rd = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in rd {
            let p = entry.map_err(|e| TrainError::io(dir, e))?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if p.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                files.push(p);
            }
        }
        files.sort();
        let mut out = Vec::with_capacity(files.len());
        for p in files {
            let txt = p.with_extension("txt");
            let caption = TrainError::read_text_capped(&txt, svgen_core::io::MAX_CAPTION_BYTES)?;
            let bytes = TrainError::read_capped(&p, MAX_IMAGE_FILE_BYTES)?;
            check_image(&bytes, &p.display().to_string())?;
            out.push(Self {
                id: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                encoded: bytes,
                caption: caption.trim().to_string(),
            });
        }
        Ok(out)
    }

    /// The positive rows of every `svgen-data` shard in `dir`: the stored PNG and the caption
    /// (the simplified caption when the shard has one, as `svgen_data::pairs` does).
    pub fn from_shards(dir: impl AsRef<Path>) -> Result<Vec<Self>> {
        let dir = dir.as_ref();
        let data_err = |e: svgen_data::DataError| TrainError::InvalidArgument(e.to_string());
        let mut out = Vec::new();
        for shard in svgen_data::storage::list_shards(dir).map_err(data_err)? {
            let mut err = None;
            svgen_data::storage::for_each_triplet(&shard, |t| {
                if t.label != svgen_data::Label::Positive {
                    return Ok(());
                }
                match check_image(&t.image, &format!("{} in {}", t.id, shard.display())) {
                    Ok(()) => out.push(Self {
                        id: t.id,
                        encoded: t.image,
                        caption: t.simplified.unwrap_or(t.caption),
                    }),
                    Err(e) => {
                        if err.is_none() {
                            err = Some(e);
                        }
                    }
                }
                Ok(())
            })
            .map_err(data_err)?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Shards when `path` holds `*.parquet` shards, else a folder of images and captions.
    pub fn load(path: impl AsRef<Path>) -> Result<Vec<Self>> {
        let path = path.as_ref();
        let has_shards = svgen_data::storage::list_shards(path).is_ok_and(|s| !s.is_empty());
        if has_shards {
            Self::from_shards(path)
        } else {
            Self::from_folder(path)
        }
    }
}

/// Resizes `img` so its shorter side is `resolution` (bilinear, like torchvision's `Resize`),
/// center-crops it to `resolution²` and returns `[3, resolution, resolution]` values in
/// `[-1, 1]`, row-major.
pub fn preprocess(img: &image::RgbImage, resolution: usize) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let res = resolution as u32;
    let scale = res as f64 / w.min(h).max(1) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(res),
        ((h as f64 * scale).round() as u32).max(res),
    );
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle)
    };
    let (x0, y0) = ((nw - res) / 2, (nh - res) / 2);
    let n = resolution * resolution;
    let mut out = vec![0f32; 3 * n];
    for y in 0..res {
        for x in 0..res {
            let p = resized.get_pixel(x0 + x, y0 + y);
            let i = (y * res + x) as usize;
            for c in 0..3 {
                out[c * n + i] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caption(encoded: Vec<u8>) -> ImageCaption {
        ImageCaption {
            id: "huge".into(),
            encoded,
            caption: "a header that claims too many pixels".into(),
        }
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        // A PPM header claiming 50000 × 50000 pixels (7.5 GB of RGB) with almost no data: the
        // bounded decoder refuses it from the header instead of allocating.
        let mut huge = b"P6\n50000 50000\n255\n".to_vec();
        huge.extend_from_slice(&[0; 64]);
        let err = caption(huge).image().unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidArgument(m) if m.starts_with("image huge:")),
            "{err}"
        );
        // A small image of the same format decodes.
        let mut small = b"P6\n2 1\n255\n".to_vec();
        small.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let img = caption(small).image().unwrap();
        assert_eq!(img.dimensions(), (2, 1));
        assert_eq!(img.get_pixel(1, 0).0, [0, 0, 255]);
    }

    #[test]
    fn oversized_images_are_refused_when_a_folder_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut huge = b"P6\n50000 50000\n255\n".to_vec();
        huge.extend_from_slice(&[0; 64]);
        std::fs::write(dir.path().join("big.ppm"), huge).unwrap();
        std::fs::write(dir.path().join("big.txt"), "a cat").unwrap();
        let err = ImageCaption::from_folder(dir.path()).unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidArgument(m) if m.contains("big.ppm") && m.contains("over the limit")),
            "{err}"
        );
    }
}
