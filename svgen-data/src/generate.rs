//! Image generators: from a prompt to image bytes.
//!
//! - [`OpenAiImages`]: the OpenAI Images API (DALL-E), `b64_json` responses;
//! - [`ImageFolder`] / [`ImageManifest`]: images generated elsewhere (a FLUX or Stable Diffusion
//!   run), looked up by sample id;
//! - [`SourceImages`]: the image that came with the caption (webdataset shards);
//! - [`RenderedSvgs`]: rasters of known SVGs (the embedded default job and tests).
//!
//! The Stable Diffusion generator of `svgen-train` implements [`ImageGenerator`] too.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{DataError, FailureKind, StageError};
use crate::http::{EndpointConfig, JsonClient};

/// Largest image file read from disk (bytes).
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;

/// What a generator is asked for.
#[derive(Debug, Clone, Copy)]
pub struct GenerationRequest<'a> {
    /// The sample id (folder and manifest generators look images up by it).
    pub id: &'a str,
    /// Positive prompt.
    pub prompt: &'a str,
    /// Negative prompt (may be ignored).
    pub negative_prompt: &'a str,
    /// Seed derived from the id (deterministic across runs); generators that cannot seed
    /// report `None` in [`GeneratedImage::seed`].
    pub seed: u64,
    /// Image bytes that came with the caption, if any.
    pub source_image: Option<&'a [u8]>,
}

/// A generated (or looked-up) image, still encoded (PNG, JPEG, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    /// Encoded image bytes.
    pub bytes: Vec<u8>,
    /// The seed actually used, when the generator is seedable.
    pub seed: Option<u64>,
}

/// Something that produces an image for a prompt. Shared across worker threads.
pub trait ImageGenerator: Send + Sync {
    /// Name recorded in the `generator` column (e.g. `dall-e-3`, `folder`).
    fn name(&self) -> &str;
    /// Produces one image.
    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError>;
}

impl<T: ImageGenerator + ?Sized> ImageGenerator for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        (**self).generate(request)
    }
}

/// The OpenAI Images API: `POST {base_url}/images/generations` with
/// `response_format: "b64_json"`; reads `data[0].b64_json`.
///
/// DALL-E has no negative prompt and no seed; both are ignored.
#[derive(Debug)]
pub struct OpenAiImages {
    client: JsonClient,
    model: String,
    size: String,
    quality: Option<String>,
}

impl OpenAiImages {
    /// A client for `model` (`dall-e-3`, `dall-e-2`) at `size` (`1024x1024`, `512x512`, ...).
    pub fn new(
        endpoint: &EndpointConfig,
        model: impl Into<String>,
        size: impl Into<String>,
    ) -> Result<Self, DataError> {
        Ok(OpenAiImages {
            client: JsonClient::new(endpoint)?,
            model: model.into(),
            size: size.into(),
            quality: None,
        })
    }

    /// Sets `quality` (`standard`, `hd`).
    pub fn with_quality(mut self, quality: impl Into<String>) -> Self {
        self.quality = Some(quality.into());
        self
    }

    /// The request body for `prompt` (exposed for inspection and tests).
    pub fn request_body(&self, prompt: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.model,
            "prompt": prompt,
            "n": 1,
            "size": self.size,
            "response_format": "b64_json",
        });
        if let Some(q) = &self.quality {
            body["quality"] = serde_json::Value::String(q.clone());
        }
        body
    }
}

impl ImageGenerator for OpenAiImages {
    fn name(&self) -> &str {
        &self.model
    }

    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        let (resp, _) = self
            .client
            .post_json("images/generations", &self.request_body(request.prompt))?;
        parse_images_response(&resp)
    }
}

/// Reads an Images API response: the base64 `data[0].b64_json` image.
///
/// # Errors
/// [`FailureKind::Protocol`] when it is missing, not a string, or not base64.
pub fn parse_images_response(resp: &serde_json::Value) -> Result<GeneratedImage, StageError> {
    let b64 = resp
        .pointer("/data/0/b64_json")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            StageError::new(
                FailureKind::Protocol,
                "response has no data[0].b64_json string",
            )
        })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| StageError::new(FailureKind::Protocol, format!("bad base64: {e}")))?;
    Ok(GeneratedImage { bytes, seed: None })
}

/// Makes an id safe as a file name: keeps `[A-Za-z0-9._-]`, maps everything else to `_`.
///
/// ```
/// assert_eq!(svgen_data::generate::file_stem_for_id("coco:42/a b"), "coco_42_a_b");
/// ```
pub fn file_stem_for_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

fn read_image_file(path: &Path) -> Result<Vec<u8>, StageError> {
    // Refused from its size before anything is read; the bounded read covers a growing file.
    svgen_core::io::read_capped(path, MAX_IMAGE_FILE_BYTES)
        .map_err(|e| StageError::bad_input(e.to_string()))
}

/// Pre-generated images in a folder, named `{id}.png` (or `.jpg`, `.jpeg`, `.webp`, `.bmp`),
/// with the id passed through [`file_stem_for_id`].
#[derive(Debug, Clone)]
pub struct ImageFolder {
    dir: PathBuf,
    name: String,
}

impl ImageFolder {
    /// Uses the images in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, DataError> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(DataError::Config(format!(
                "image folder {} does not exist",
                dir.display()
            )));
        }
        Ok(ImageFolder {
            dir,
            name: "folder".into(),
        })
    }

    /// Sets the generator name recorded per sample (e.g. `flux.1-schnell`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl ImageGenerator for ImageFolder {
    fn name(&self) -> &str {
        &self.name
    }

    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        let stem = file_stem_for_id(request.id);
        for ext in ["png", "jpg", "jpeg", "webp", "bmp"] {
            let p = self.dir.join(format!("{stem}.{ext}"));
            if p.is_file() {
                return Ok(GeneratedImage {
                    bytes: read_image_file(&p)?,
                    seed: None,
                });
            }
        }
        Err(StageError::bad_input(format!(
            "no image {stem}.png/.jpg/... in {}",
            self.dir.display()
        )))
    }
}

/// A manifest of pre-generated images: JSON Lines with `{"id": ..., "path": ...}` and an
/// optional `"seed"`; relative paths are relative to the manifest's folder.
#[derive(Debug, Clone)]
pub struct ImageManifest {
    entries: HashMap<String, (PathBuf, Option<u64>)>,
    name: String,
}

impl ImageManifest {
    /// Reads a manifest; malformed lines are a [`DataError::Parse`] naming the line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut entries = HashMap::new();
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| DataError::io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let parse_err = |m: String| DataError::Parse {
                path: path.to_path_buf(),
                message: format!("line {}: {m}", i + 1),
            };
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| parse_err(e.to_string()))?;
            let id = match v.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => return Err(parse_err("missing id".into())),
            };
            let p = v
                .get("path")
                .and_then(|p| p.as_str())
                .ok_or_else(|| parse_err("missing path".into()))?;
            let seed = v.get("seed").and_then(|s| s.as_u64());
            entries.insert(id, (base.join(p), seed));
        }
        Ok(ImageManifest {
            entries,
            name: "manifest".into(),
        })
    }

    /// Sets the generator name recorded per sample.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the manifest is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ImageGenerator for ImageManifest {
    fn name(&self) -> &str {
        &self.name
    }

    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        let (path, seed) = self
            .entries
            .get(request.id)
            .ok_or_else(|| StageError::bad_input("id not in the image manifest"))?;
        Ok(GeneratedImage {
            bytes: read_image_file(path)?,
            seed: *seed,
        })
    }
}

/// Uses the image that came with the caption (e.g. the `.jpg` of a webdataset sample).
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceImages;

impl ImageGenerator for SourceImages {
    fn name(&self) -> &str {
        "source"
    }

    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        request
            .source_image
            .map(|b| GeneratedImage {
                bytes: b.to_vec(),
                seed: None,
            })
            .ok_or_else(|| StageError::bad_input("the caption record carries no image"))
    }
}

/// Rasters of known SVG documents, keyed by sample id, rendered with svgen-core at
/// `size`×`size` and PNG-encoded. Every `dark_every`-th id (by position in the id list,
/// 0 = never) is rendered inverted — a light drawing on a dark background, the way Stable
/// Diffusion often answers a "white background" prompt — to exercise background
/// normalisation.
#[derive(Debug, Clone)]
pub struct RenderedSvgs {
    svgs: HashMap<String, (String, bool)>,
    size: u32,
}

impl RenderedSvgs {
    /// `svgs` are `(id, svg text)` pairs.
    pub fn new(svgs: Vec<(String, String)>, size: u32, dark_every: usize) -> Self {
        let svgs = svgs
            .into_iter()
            .enumerate()
            .map(|(i, (id, svg))| {
                (
                    id,
                    (svg, dark_every > 0 && i % dark_every == dark_every - 1),
                )
            })
            .collect();
        RenderedSvgs { svgs, size }
    }

    /// Whether the image of `id` is rendered on a dark background.
    pub fn is_dark(&self, id: &str) -> bool {
        self.svgs.get(id).is_some_and(|(_, d)| *d)
    }
}

impl ImageGenerator for RenderedSvgs {
    fn name(&self) -> &str {
        "svg-render"
    }

    fn generate(&self, request: &GenerationRequest<'_>) -> Result<GeneratedImage, StageError> {
        let (svg, dark) = self
            .svgs
            .get(request.id)
            .ok_or_else(|| StageError::bad_input("no SVG for this id"))?;
        let doc = svgen_core::Svg::parse(svg.as_bytes())
            .map_err(|e| StageError::bad_input(format!("SVG does not parse: {e}")))?;
        let opts = svgen_core::RenderOptions::square(self.size);
        let mut img = image::DynamicImage::ImageRgba8(svgen_core::render(&doc, &opts));
        if *dark {
            img.invert();
            // Not a pure inversion: a slightly blue-grey "night" background.
            let mut rgba = img.to_rgba8();
            for p in rgba.pixels_mut() {
                p.0[2] = p.0[2].saturating_add(18);
                p.0[0] = p.0[0].saturating_add(6);
            }
            img = image::DynamicImage::ImageRgba8(rgba);
        }
        let img = image::DynamicImage::ImageRgb8(img.to_rgb8());
        Ok(GeneratedImage {
            bytes: crate::sample::encode_png(&img).map_err(StageError::internal)?,
            seed: Some(request.seed),
        })
    }
}
