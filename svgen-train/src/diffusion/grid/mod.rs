//! Grid search over prompt wordings × inference steps × seeds × guidance scales (× schedulers), the
//! thesis' way of finding "SVG-friendly" generation settings, for any pipeline implementing
//! [`GridModel`] (Stable Diffusion and FLUX).
//!
//! Every grid image is background-normalised (svgen-data's tracer stage: a dark border means the
//! image is inverted so the drawing is dark on white, ready for tracing), then scored by a
//! caller-supplied [`ImageScorer`]. [`TraceTokenScorer`] is the thesis' criterion: trace the image with
//! svgen-data's Potrace tracer, count the SVG's `cl100k_base` tokens (fewer is better) and optionally
//! measure the CLIP similarity of the traced SVG to the subject (higher is better). The result is a
//! ranked [`GridReport`], written as CSV and markdown next to the PNG images (and traced SVGs).
//!
//! ```no_run
//! use svgen_train::diffusion::grid::{grid_search, GridSpec, TraceTokenScorer};
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
//!
//! | module | contents |
//! |---|---|
//! | `score` | [`ImageScorer`], [`Score`], [`TraceTokenScorer`] |
//! | `report` | [`GridReport`], [`GridRow`] (CSV and markdown) |

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{DynamicImage, ImageFormat, RgbImage};
use svgen_data::stages::{normalise_background, BackgroundOptions};

use crate::diffusion::scheduler_kind::SchedulerKind;
use crate::error::{Result, TrainError};

mod report;
mod score;

pub use report::{GridReport, GridRow};
pub use score::{ImageScorer, Score, TraceTokenScorer};

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
    /// Schedulers (one by default: DPM-Solver++ 2M; FLUX runs [`SchedulerKind::FlowMatchEuler`]
    /// only).
    pub schedulers: Vec<SchedulerKind>,
    /// Karras noise levels (Stable Diffusion's Euler and DPM-Solver, FLUX's flow-matching Euler).
    pub karras_sigmas: bool,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// CLIP skip (Stable Diffusion only; see `sd::pipeline::GenerateParams::clip_skip`).
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

    /// The FLUX.1-schnell settings of the grid: 4 steps, guidance 0 (schnell is not
    /// guidance-distilled), the flow-matching Euler sampler, 1024 × 1024.
    pub fn flux_schnell() -> Self {
        Self {
            steps: vec![4],
            guidance_scales: vec![0.0],
            schedulers: vec![SchedulerKind::FlowMatchEuler],
            width: 1024,
            height: 1024,
            ..Self::default()
        }
    }
}

/// A text-to-image pipeline the grid can drive (implemented by Stable Diffusion and FLUX).
pub trait GridModel {
    /// Generates the image of `point` with the fixed settings of `spec` (its negative prompt,
    /// size, Karras flag, CLIP skip).
    ///
    /// # Errors
    /// Settings the pipeline does not support (e.g. a Stable Diffusion sampler for FLUX) are
    /// [`TrainError::InvalidArgument`] / [`TrainError::UnsupportedValue`]; generation errors.
    fn generate_point(&self, spec: &GridSpec, point: &GridPoint) -> Result<RgbImage>;
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
pub fn grid_search<M: GridModel + ?Sized>(
    model: &M,
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
        let raw = DynamicImage::ImageRgb8(model.generate_point(spec, &point)?);
        let generate_seconds = start.elapsed().as_secs_f64();
        let (image, inverted) = normalise_background(&raw, &spec.background)
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
            inverted,
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
