//! Grid search over prompt wordings × inference steps × seeds × guidance scales (× schedulers), the
//! thesis' way of finding "SVG-friendly" Stable Diffusion settings, and [`SdImageGenerator`], Stable
//! Diffusion as an svgen-data [`ImageGenerator`].
//!
//! Every grid image is background-normalised (svgen-trace's dark-background detection: a dark border
//! means the image is inverted so the drawing is dark on white, ready for tracing), then scored by a
//! caller-supplied [`ImageScorer`]. [`TraceTokenScorer`] is the thesis' criterion: trace the image with
//! svgen-trace, count the SVG's `cl100k_base` tokens (fewer is better) and optionally measure the CLIP
//! similarity of the traced SVG to the subject (higher is better). The result is a ranked
//! [`GridReport`], written as CSV and markdown next to the PNG images (and traced SVGs).
//!
//! ```no_run
//! use svgen_train::sd::grid::{grid_search, GridSpec, TraceTokenScorer};
//! use svgen_train::sd::pipeline::StableDiffusion;
//! use svgen_train::CpuBackend;
//!
//! let sd = StableDiffusion::<CpuBackend>::from_pretrained("models/sd15", &Default::default())?;
//! let spec = GridSpec {
//!     prompts: vec![
//!         "a cat, black silhouette, white background".into(),
//!         "minimalist flat vector icon of a cat".into(),
//!     ],
//!     subject: Some("a cat".into()),
//!     steps: vec![20, 30],
//!     seeds: vec![1, 2, 3],
//!     guidance_scales: vec![5.0, 7.5],
//!     ..GridSpec::default()
//! };
//! let report = grid_search(&sd, &spec, &TraceTokenScorer::new(), Some("grid-out".as_ref()), &mut |_, _| {})?;
//! println!("best: {:?}", report.best().map(|r| &r.point));
//! # Ok::<(), svgen_train::TrainError>(())
//! ```

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use burn::tensor::backend::Backend;
use image::{DynamicImage, ImageFormat, RgbImage};
use svgen_core::{Cl100k, Svg, TokenCounter};
use svgen_data::generate::{GeneratedImage, GenerationRequest, ImageGenerator};
use svgen_data::StageError;
use svgen_eval::{ClipScorer, ScoreImage};
use svgen_trace::preprocess::{normalise_background, BackgroundOptions, Threshold};
use svgen_trace::{Bitmap, SvgOptions, TraceParams};

use super::pipeline::{GenerateParams, StableDiffusion};
use super::scheduler::SchedulerKind;
use crate::error::{Result, TrainError};

/// Largest number of grid points one search accepts.
pub const MAX_GRID_POINTS: usize = 10_000;

/// The axes of a grid search and the fixed generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    /// Prompt wordings to compare.
    pub prompts: Vec<String>,
    /// What the image should show, for similarity scoring (e.g. `"a cat"` for wordings such as
    /// `"black silhouette of a cat, white background"`); `None` = each prompt itself.
    pub subject: Option<String>,
    /// Negative prompt shared by every point.
    pub negative_prompt: Option<String>,
    /// Inference step counts.
    pub steps: Vec<usize>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Guidance scales.
    pub guidance_scales: Vec<f64>,
    /// Schedulers (one by default: DPM-Solver++ 2M).
    pub schedulers: Vec<SchedulerKind>,
    /// Karras noise levels for Euler and DPM-Solver (see [`GenerateParams::karras_sigmas`]).
    pub karras_sigmas: bool,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// CLIP skip (see [`GenerateParams::clip_skip`]).
    pub clip_skip: Option<usize>,
    /// Dark-background normalisation applied to every image before scoring.
    pub background: BackgroundOptions,
}

impl Default for GridSpec {
    fn default() -> Self {
        Self {
            prompts: Vec::new(),
            subject: None,
            negative_prompt: None,
            steps: vec![25],
            seeds: vec![0],
            guidance_scales: vec![7.5],
            schedulers: vec![SchedulerKind::DpmSolverMultistep],
            karras_sigmas: false,
            width: 512,
            height: 512,
            clip_skip: None,
            background: BackgroundOptions::default(),
        }
    }
}

/// One combination of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPoint {
    /// Position in generation order (prompts × steps × seeds × guidance × schedulers, last fastest).
    pub index: usize,
    /// Which of [`GridSpec::prompts`].
    pub prompt_index: usize,
    /// The prompt.
    pub prompt: String,
    /// The text similarity is measured against.
    pub subject: String,
    /// Inference steps.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
    /// Guidance scale.
    pub guidance_scale: f64,
    /// Sampler.
    pub scheduler: SchedulerKind,
}

impl GridSpec {
    /// Every combination, in generation order.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] when an axis is empty or the grid exceeds
    /// [`MAX_GRID_POINTS`].
    pub fn points(&self) -> Result<Vec<GridPoint>> {
        for (name, len) in [
            ("prompts", self.prompts.len()),
            ("steps", self.steps.len()),
            ("seeds", self.seeds.len()),
            ("guidance_scales", self.guidance_scales.len()),
            ("schedulers", self.schedulers.len()),
        ] {
            if len == 0 {
                return Err(TrainError::InvalidArgument(format!(
                    "grid axis `{name}` is empty"
                )));
            }
        }
        let total = [
            self.prompts.len(),
            self.steps.len(),
            self.seeds.len(),
            self.guidance_scales.len(),
            self.schedulers.len(),
        ]
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&t| t <= MAX_GRID_POINTS)
        .ok_or_else(|| {
            TrainError::InvalidArgument(format!("the grid has more than {MAX_GRID_POINTS} points"))
        })?;
        let mut out = Vec::with_capacity(total);
        for (prompt_index, prompt) in self.prompts.iter().enumerate() {
            for &steps in &self.steps {
                for &seed in &self.seeds {
                    for &guidance_scale in &self.guidance_scales {
                        for &scheduler in &self.schedulers {
                            out.push(GridPoint {
                                index: out.len(),
                                prompt_index,
                                prompt: prompt.clone(),
                                subject: self.subject.clone().unwrap_or_else(|| prompt.clone()),
                                steps,
                                seed,
                                guidance_scale,
                                scheduler,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn params(&self, p: &GridPoint) -> GenerateParams {
        GenerateParams {
            prompt: p.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: p.steps,
            guidance_scale: p.guidance_scale,
            seed: p.seed,
            width: self.width,
            height: self.height,
            scheduler: p.scheduler,
            karras_sigmas: self.karras_sigmas,
            latents: None,
            batch: 1,
            clip_skip: self.clip_skip,
        }
    }
}

/// The score of one grid image: higher `value` ranks first.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The ranking value (higher is better).
    pub value: f64,
    /// Whether the image is usable at all (e.g. a trace with no paths is not); invalid images rank
    /// after every valid one.
    pub valid: bool,
    /// Named measurements shown in the table (e.g. `tokens`, `clip_similarity`).
    pub metrics: Vec<(String, f64)>,
    /// The traced SVG, when the scorer made one (saved next to the image).
    pub svg: Option<String>,
}

/// Scores one (background-normalised) grid image. Supplied by the caller of [`grid_search`].
pub trait ImageScorer {
    /// Name for reports and errors.
    fn name(&self) -> &str;
    /// Scores `image`, generated for `point`.
    ///
    /// # Errors
    /// Whatever made scoring impossible ([`TrainError::Scorer`] for the provided scorer).
    fn score(&self, point: &GridPoint, image: &DynamicImage) -> Result<Score>;
}

type Similarity<'a> = Box<dyn Fn(&Svg, &str) -> Result<f32> + 'a>;

/// The thesis' criterion: trace with svgen-trace (potrace's defaults), count the SVG's `cl100k_base`
/// tokens, and optionally measure the CLIP similarity of the traced SVG (rendered on white) to the
/// point's subject.
///
/// `value = clip_weight · cos − tokens / token_budget` (without CLIP: `−tokens / token_budget`); a trace
/// without any path is invalid (an empty page would otherwise win on tokens).
pub struct TraceTokenScorer<'a> {
    /// Thresholding (potrace's `-k 0.5` by default).
    pub threshold: Threshold,
    /// Tracing parameters.
    pub params: TraceParams,
    /// SVG writing options.
    pub svg: SvgOptions,
    /// Weight of the CLIP cosine (default 10: a cosine gain of 0.05 is worth `0.5·token_budget` tokens).
    pub clip_weight: f64,
    /// Tokens that cost one unit of score (default 8000, the thesis' positive-label threshold).
    pub token_budget: f64,
    clip: Option<Similarity<'a>>,
}

impl std::fmt::Debug for TraceTokenScorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceTokenScorer")
            .field("threshold", &self.threshold)
            .field("clip_weight", &self.clip_weight)
            .field("token_budget", &self.token_budget)
            .field("clip", &self.clip.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for TraceTokenScorer<'_> {
    fn default() -> Self {
        Self {
            threshold: Threshold::default(),
            params: TraceParams::default(),
            svg: SvgOptions::default(),
            clip_weight: 10.0,
            token_budget: 8000.0,
            clip: None,
        }
    }
}

impl<'a> TraceTokenScorer<'a> {
    /// Token count only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds CLIP similarity of the traced SVG to the subject, with svgen-eval's scorer.
    pub fn with_clip<B: Backend>(mut self, clip: &'a ClipScorer<B>) -> Self {
        self.clip = Some(Box::new(move |svg: &Svg, text: &str| {
            let cos = clip.clip_similarity(&[ScoreImage::Svg(svg)], &[text])?;
            cos.first().copied().ok_or_else(|| TrainError::Scorer {
                scorer: "clip".into(),
                message: "no similarity returned".into(),
            })
        }));
        self
    }

    fn fail(&self, message: impl std::fmt::Display) -> TrainError {
        TrainError::Scorer {
            scorer: self.name().into(),
            message: message.to_string(),
        }
    }
}

impl ImageScorer for TraceTokenScorer<'_> {
    fn name(&self) -> &str {
        "trace-tokens"
    }

    fn score(&self, point: &GridPoint, image: &DynamicImage) -> Result<Score> {
        if self.token_budget.is_nan() || self.token_budget <= 0.0 || !self.clip_weight.is_finite() {
            return Err(self.fail("token_budget must be positive and clip_weight finite"));
        }
        let bitmap = Bitmap::from_image(image, &self.threshold)
            .map_err(|e| self.fail(format!("thresholding: {e}")))?;
        let paths = svgen_trace::trace(&bitmap, &self.params)
            .map_err(|e| self.fail(format!("tracing: {e}")))?;
        let n_paths = paths.paths().len();
        let svg = paths.to_svg(&self.svg);
        let tokens = Cl100k.count(&svg);
        let mut metrics = vec![
            ("tokens".to_string(), tokens as f64),
            ("paths".to_string(), n_paths as f64),
        ];
        let mut value = -(tokens as f64) / self.token_budget;
        if let Some(similarity) = &self.clip {
            let parsed =
                Svg::parse(svg.as_bytes()).map_err(|e| self.fail(format!("traced SVG: {e}")))?;
            let cos = f64::from(similarity(&parsed, &point.subject)?);
            metrics.push(("clip_similarity".to_string(), cos));
            value += self.clip_weight * cos;
        }
        Ok(Score {
            value,
            valid: n_paths > 0 && value.is_finite(),
            metrics,
            svg: Some(svg),
        })
    }
}

/// One row of the ranked table.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRow {
    /// 1-based rank (1 = best).
    pub rank: usize,
    /// The settings.
    pub point: GridPoint,
    /// The score.
    pub score: Score,
    /// Whether background normalisation inverted the image.
    pub inverted: bool,
    /// Wall-clock seconds spent generating the image.
    pub generate_seconds: f64,
    /// The saved (normalised) image, relative to the output folder.
    pub image_file: Option<PathBuf>,
    /// The saved SVG, relative to the output folder.
    pub svg_file: Option<PathBuf>,
}

/// The ranked result of [`grid_search`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridReport {
    /// The scorer's name.
    pub scorer: String,
    /// Rows, best first.
    pub rows: Vec<GridRow>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

impl GridReport {
    /// The best valid row.
    pub fn best(&self) -> Option<&GridRow> {
        self.rows.first().filter(|r| r.score.valid)
    }

    /// Metric names, in order of first appearance.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in &self.rows {
            for (n, _) in &r.score.metrics {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    fn metric(row: &GridRow, name: &str) -> String {
        row.score
            .metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| format!("{v}"))
            .unwrap_or_default()
    }

    /// The table as CSV (header + one line per row, best first).
    pub fn to_csv(&self) -> String {
        let metrics = self.metric_names();
        let mut out = String::from(
            "rank,index,prompt,subject,scheduler,steps,seed,guidance_scale,score,valid,inverted",
        );
        for m in &metrics {
            out.push(',');
            out.push_str(&csv_field(m));
        }
        out.push_str(",generate_seconds,image,svg\n");
        for r in &self.rows {
            let p = &r.point;
            let _ = write!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                r.rank,
                p.index,
                csv_field(&p.prompt),
                csv_field(&p.subject),
                p.scheduler,
                p.steps,
                p.seed,
                p.guidance_scale,
                r.score.value,
                r.score.valid,
                r.inverted
            );
            for m in &metrics {
                out.push(',');
                out.push_str(&Self::metric(r, m));
            }
            let path = |f: &Option<PathBuf>| {
                f.as_ref()
                    .map(|p| csv_field(&p.to_string_lossy()))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                out,
                ",{:.3},{},{}",
                r.generate_seconds,
                path(&r.image_file),
                path(&r.svg_file)
            );
        }
        out
    }

    /// The table as markdown, with the images inlined (paths relative to the output folder).
    pub fn to_markdown(&self) -> String {
        let metrics = self.metric_names();
        let mut out = format!(
            "# Grid search ({} images, scorer `{}`)\n\n",
            self.rows.len(),
            self.scorer
        );
        out.push_str("| rank | image | prompt | scheduler | steps | seed | guidance | score |");
        for m in &metrics {
            let _ = write!(out, " {} |", md_cell(m));
        }
        out.push_str("\n|---:|---|---|---|---:|---:|---:|---:|");
        for _ in &metrics {
            out.push_str("---:|");
        }
        out.push('\n');
        for r in &self.rows {
            let p = &r.point;
            let image = r
                .image_file
                .as_ref()
                .map(|f| format!("![{}]({})", p.index, f.to_string_lossy().replace('\\', "/")))
                .unwrap_or_default();
            let score = if r.score.valid {
                format!("{:.4}", r.score.value)
            } else {
                format!("{:.4} (invalid)", r.score.value)
            };
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.rank,
                image,
                md_cell(&p.prompt),
                p.scheduler,
                p.steps,
                p.seed,
                p.guidance_scale,
                score
            );
            for m in &metrics {
                let v = r
                    .score
                    .metrics
                    .iter()
                    .find(|(n, _)| n == m)
                    .map(|(_, v)| *v);
                let cell = match v {
                    Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
                    Some(v) => format!("{v:.4}"),
                    None => String::new(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out
    }

    /// Writes `results.csv` and `results.md` into `dir`.
    ///
    /// # Errors
    /// [`TrainError::Io`] when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        for (name, text) in [
            ("results.csv", self.to_csv()),
            ("results.md", self.to_markdown()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
        }
        Ok(())
    }
}

fn save_png(image: &DynamicImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, ImageFormat::Png)
        .map_err(|e| TrainError::io(path, std::io::Error::other(e)))
}

/// Runs the grid: generates every point's image, normalises its background, scores it, ranks the
/// rows (valid first, then by score, ties by generation order). With `out_dir`, saves
/// `images/NNNN.png` (the normalised image), `svgs/NNNN.svg` (when the scorer traced one),
/// `results.csv` and `results.md`. `progress(done, total)` is called after every image.
///
/// # Errors
/// Bad grid specs or generation parameters ([`TrainError::InvalidArgument`]), scorer failures, I/O.
pub fn grid_search<B: Backend>(
    sd: &StableDiffusion<B>,
    spec: &GridSpec,
    scorer: &dyn ImageScorer,
    out_dir: Option<&Path>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GridReport> {
    let points = spec.points()?;
    if let Some(dir) = out_dir {
        for sub in ["images", "svgs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| TrainError::io(&d, e))?;
        }
    }
    let total = points.len();
    let mut rows = Vec::with_capacity(total);
    for point in points {
        let start = Instant::now();
        let mut images = sd.generate(&spec.params(&point))?;
        let generate_seconds = start.elapsed().as_secs_f64();
        let raw = DynamicImage::ImageRgb8(images.remove(0));
        let (image, decision) = normalise_background(&raw, &spec.background)
            .map_err(|e| TrainError::InvalidArgument(format!("background options: {e}")))?;
        let score = scorer.score(&point, &image)?;
        let (mut image_file, mut svg_file) = (None, None);
        if let Some(dir) = out_dir {
            let rel = PathBuf::from("images").join(format!("{:04}.png", point.index));
            save_png(&image, &dir.join(&rel))?;
            image_file = Some(rel);
            if let Some(svg) = &score.svg {
                let rel = PathBuf::from("svgs").join(format!("{:04}.svg", point.index));
                let path = dir.join(&rel);
                std::fs::write(&path, svg).map_err(|e| TrainError::io(&path, e))?;
                svg_file = Some(rel);
            }
        }
        rows.push(GridRow {
            rank: 0,
            point,
            score,
            inverted: decision.inverted,
            generate_seconds,
            image_file,
            svg_file,
        });
        progress(rows.len(), total);
    }
    rows.sort_by(|a, b| {
        let key = |r: &GridRow| r.score.valid && !r.score.value.is_nan();
        key(b)
            .cmp(&key(a))
            .then_with(|| b.score.value.total_cmp(&a.score.value))
            .then_with(|| a.point.index.cmp(&b.point.index))
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    let report = GridReport {
        scorer: scorer.name().to_string(),
        rows,
    };
    if let Some(dir) = out_dir {
        report.write(dir)?;
    }
    Ok(report)
}

/// Stable Diffusion as an svgen-data [`ImageGenerator`]: the request's prompt, negative prompt (the
/// template's when the request has none) and seed, the template's other settings; PNG bytes out.
///
/// The pipeline sits behind a mutex (Burn modules need not be `Sync`), so concurrent workers take
/// turns; the backend parallelises each generation itself.
pub struct SdImageGenerator<B: Backend> {
    sd: Mutex<StableDiffusion<B>>,
    template: GenerateParams,
    name: String,
}

impl<B: Backend> std::fmt::Debug for SdImageGenerator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdImageGenerator")
            .field("name", &self.name)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> SdImageGenerator<B> {
    /// Wraps a pipeline; `template` gives steps, guidance, size, scheduler, CLIP skip and the default
    /// negative prompt (its prompt, seed, latents and batch are replaced per request).
    pub fn new(sd: StableDiffusion<B>, template: GenerateParams) -> Self {
        Self {
            sd: Mutex::new(sd),
            template,
            name: "stable-diffusion".into(),
        }
    }

    /// Sets the name recorded in the dataset's `generator` column.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The generation settings of a request.
    pub fn params_for(&self, request: &GenerationRequest<'_>) -> GenerateParams {
        let negative = if request.negative_prompt.trim().is_empty() {
            self.template.negative_prompt.clone()
        } else {
            Some(request.negative_prompt.to_string())
        };
        GenerateParams {
            prompt: request.prompt.to_string(),
            negative_prompt: negative,
            seed: request.seed,
            latents: None,
            batch: 1,
            ..self.template.clone()
        }
    }

    /// Generates the image of a request.
    ///
    /// # Errors
    /// As [`StableDiffusion::generate`].
    pub fn generate_image(&self, request: &GenerationRequest<'_>) -> Result<RgbImage> {
        let params = self.params_for(request);
        let sd = self
            .sd
            .lock()
            .map_err(|_| TrainError::InvalidArgument("the pipeline mutex is poisoned".into()))?;
        let mut images = sd.generate(&params)?;
        images
            .pop()
            .ok_or_else(|| TrainError::InvalidArgument("the pipeline returned no image".into()))
    }
}

impl<B: Backend> ImageGenerator for SdImageGenerator<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
    ) -> std::result::Result<GeneratedImage, StageError> {
        if request.prompt.trim().is_empty() {
            return Err(StageError::bad_input("empty prompt"));
        }
        let image = self.generate_image(request).map_err(|e| match e {
            TrainError::InvalidArgument(m) | TrainError::Tokenizer(m) => StageError::bad_input(m),
            other => StageError::internal(other.to_string()),
        })?;
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|e| StageError::internal(format!("PNG encoding: {e}")))?;
        Ok(GeneratedImage {
            bytes,
            seed: Some(request.seed),
        })
    }
}
