//! Evaluation reports over (prompt, SVG) pairs: per-sample CSV and JSON, a summary (mean, std,
//! percentiles), a markdown table, a PNG contact sheet and PNG histograms.
//!
//! Text in the figures is drawn with the bundled DejaVu Sans Mono (see `assets/DejaVu-LICENSE.txt`),
//! so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use burn::prelude::*;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Serialize;
use svgen_core::tokens::TokenCounter;
use svgen_core::Svg;

use crate::error::{EvalError, Result};
use crate::scorer::{clip_score_from_cosine, ClipScorer, ScoreImage};

/// What [`evaluate`] needs of one input: the text prompt, the SVG source and an optional id.
///
/// svgen-eval owns no pair type: implement this for your own records (svgen-data's
/// `pairs::Pair` implements it, and `svgen_data::pairs::read_pairs_jsonl` reads the
/// `PAIRS.jsonl` files of the `score_svgs` example), or borrow strings with [`EvalInput`].
pub trait PromptSvg {
    /// Identifier carried into the report (`None`: no id).
    fn id(&self) -> Option<&str> {
        None
    }
    /// The text prompt.
    fn prompt(&self) -> &str;
    /// The SVG document (source text).
    fn svg(&self) -> &str;
}

impl<T: PromptSvg + ?Sized> PromptSvg for &T {
    fn id(&self) -> Option<&str> {
        (**self).id()
    }
    fn prompt(&self) -> &str {
        (**self).prompt()
    }
    fn svg(&self) -> &str {
        (**self).svg()
    }
}

/// A borrowed input of [`evaluate`].
///
/// ```
/// use svgen_eval::report::{EvalInput, PromptSvg};
/// let svg = r#"<svg xmlns="http://www.w3.org/2000/svg"/>"#;
/// let input = EvalInput::new("an empty icon", svg).with_id("empty");
/// assert_eq!((input.id(), input.prompt()), (Some("empty"), "an empty icon"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalInput<'a> {
    /// Optional identifier carried into the report.
    pub id: Option<&'a str>,
    /// The text prompt.
    pub prompt: &'a str,
    /// The SVG document (source text).
    pub svg: &'a str,
}

impl<'a> EvalInput<'a> {
    /// An input without an id.
    pub fn new(prompt: &'a str, svg: &'a str) -> Self {
        EvalInput {
            id: None,
            prompt,
            svg,
        }
    }

    /// The same input with identifier `id`.
    pub fn with_id(self, id: &'a str) -> Self {
        EvalInput {
            id: Some(id),
            ..self
        }
    }
}

impl PromptSvg for EvalInput<'_> {
    fn id(&self) -> Option<&str> {
        self.id
    }
    fn prompt(&self) -> &str {
        self.prompt
    }
    fn svg(&self) -> &str {
        self.svg
    }
}

/// Scores of one pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleResult {
    /// Position in the input.
    pub index: usize,
    /// The pair's id, if any.
    pub id: Option<String>,
    /// The prompt.
    pub prompt: String,
    /// Whether the SVG parsed (and so rendered).
    pub valid: bool,
    /// The parse/render error of an invalid SVG.
    pub render_error: Option<String>,
    /// Tokens of the SVG source under the report's counter (cl100k_base by default).
    pub tokens: usize,
    /// Raw CLIP cosine (None for invalid SVGs).
    pub clip_similarity: Option<f32>,
    /// `100 · max(cos, 0)`.
    pub clip_score: Option<f32>,
    /// LAION aesthetic score (None without a head or for invalid SVGs).
    pub aesthetic: Option<f32>,
}

/// Distribution summary of one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Number of values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std: f64,
    /// Minimum.
    pub min: f64,
    /// 5th percentile (linear interpolation, numpy's default).
    pub p5: f64,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Maximum.
    pub max: f64,
}

/// Percentile `q` in [0, 100] of sorted values, linearly interpolated (numpy's `linear`).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Stats {
    /// Summary of finite values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        Some(Stats {
            n,
            mean,
            std: var.sqrt(),
            min: v[0],
            p5: percentile(&v, 5.0),
            p25: percentile(&v, 25.0),
            p50: percentile(&v, 50.0),
            p75: percentile(&v, 75.0),
            p95: percentile(&v, 95.0),
            max: v[n - 1],
        })
    }
}

/// Summary over all samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Number of pairs.
    pub n: usize,
    /// Pairs whose SVG is valid.
    pub valid: usize,
    /// `valid / n`.
    pub validity_rate: f64,
    /// Name of the token counter.
    pub token_counter: String,
    /// SVG tokens (all samples).
    pub tokens: Option<Stats>,
    /// CLIP cosine (valid samples).
    pub clip_similarity: Option<Stats>,
    /// CLIPScore (valid samples).
    pub clip_score: Option<Stats>,
    /// Aesthetic (valid samples, when scored).
    pub aesthetic: Option<Stats>,
}

/// A finished evaluation.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per-sample results, in input order.
    pub samples: Vec<SampleResult>,
    /// Summary.
    pub summary: Summary,
    /// Renderings of the valid SVGs (for the contact sheet), in input order.
    pub renders: Vec<Option<RgbImage>>,
}

/// Scores every pair: parses and renders the SVG (on white), counts its tokens, and computes CLIP
/// similarity and, when the scorer has a head, the aesthetic score. Invalid SVGs are reported, not
/// fatal.
pub fn evaluate<B: Backend, P: PromptSvg>(
    scorer: &ClipScorer<B>,
    pairs: &[P],
    counter: &dyn TokenCounter,
) -> Result<Report> {
    let parsed: Vec<std::result::Result<Svg, String>> = pairs
        .iter()
        .map(|p| Svg::parse(p.svg().as_bytes()).map_err(|e| e.to_string()))
        .collect();
    let texts: Vec<&str> = pairs.iter().map(|p| p.svg()).collect();
    let tokens = counter.count_batch(&texts);
    let valid_idx: Vec<usize> = (0..pairs.len()).filter(|&i| parsed[i].is_ok()).collect();
    let renders_valid: Vec<RgbImage> = valid_idx
        .iter()
        .filter_map(|&i| parsed[i].as_ref().ok())
        .map(|s| scorer.rasterize(ScoreImage::Svg(s)))
        .collect();
    let images: Vec<ScoreImage<'_>> = renders_valid.iter().map(ScoreImage::Rgb).collect();
    let prompts: Vec<&str> = valid_idx.iter().map(|&i| pairs[i].prompt()).collect();
    let (sims, aes) = scorer.score_pairs(&images, &prompts)?;
    let mut samples = Vec::with_capacity(pairs.len());
    let mut renders: Vec<Option<RgbImage>> = vec![None; pairs.len()];
    let mut k = 0;
    for (i, p) in pairs.iter().enumerate() {
        let (valid, err, sim, a) = match &parsed[i] {
            Ok(_) => {
                let r = (true, None, Some(sims[k]), aes.as_ref().map(|a| a[k]));
                renders[i] = Some(renders_valid[k].clone());
                k += 1;
                r
            }
            Err(e) => (false, Some(e.clone()), None, None),
        };
        samples.push(SampleResult {
            index: i,
            id: p.id().map(str::to_string),
            prompt: p.prompt().to_string(),
            valid,
            render_error: err,
            tokens: tokens[i],
            clip_similarity: sim,
            clip_score: sim.map(clip_score_from_cosine),
            aesthetic: a,
        });
    }
    let f = |g: &dyn Fn(&SampleResult) -> Option<f32>| {
        Stats::of(samples.iter().filter_map(g).map(f64::from))
    };
    let n = samples.len();
    let valid = samples.iter().filter(|s| s.valid).count();
    let summary = Summary {
        n,
        valid,
        validity_rate: if n == 0 { 0.0 } else { valid as f64 / n as f64 },
        token_counter: counter.name().to_string(),
        tokens: Stats::of(samples.iter().map(|s| s.tokens as f64)),
        clip_similarity: f(&|s| s.clip_similarity),
        clip_score: f(&|s| s.clip_score),
        aesthetic: f(&|s| s.aesthetic),
    };
    Ok(Report {
        samples,
        summary,
        renders,
    })
}

fn opt(v: Option<f32>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

static FONT: Once = Once::new();
const FONT_NAME: &str = "svgen-dejavu-sans-mono";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn font_ready() -> Result<()> {
    let mut res = Ok(());
    FONT.call_once(|| {
        if plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT_BYTES).is_err() {
            res = Err(());
        }
    });
    res.map_err(|_| EvalError::Plot {
        what: "font".into(),
        message: "the bundled DejaVu Sans Mono did not load".into(),
    })
}

fn plot_err(what: &str, e: impl std::fmt::Display) -> EvalError {
    EvalError::Plot {
        what: what.into(),
        message: e.to_string(),
    }
}

/// Cuts `s` to at most `n` characters, with an ellipsis when cut.
fn ellipsize(s: &str, n: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= n {
        s
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Draws a histogram of `values` (finite ones) as an RGB image.
pub fn histogram(values: &[f64], title: &str, bins: usize, size: (u32, u32)) -> Result<RgbImage> {
    font_ready()?;
    let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let bins = bins.max(1);
    let (mut lo, mut hi) = vals
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if vals.is_empty() {
        lo = 0.0;
        hi = 1.0;
    }
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    }
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in &vals {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = size;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{title} (n = {})", vals.len()), (FONT_NAME, 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(lo..hi, 0u32..top + top / 10 + 1)
            .map_err(|e| plot_err(title, e))?;
        chart
            .configure_mesh()
            .label_style((FONT_NAME, 12))
            .disable_x_mesh()
            .draw()
            .map_err(|e| plot_err(title, e))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let a = lo + i as f64 * width;
                Rectangle::new([(a, 0), (a + width, c)], RGBColor(70, 110, 190).filled())
            }))
            .map_err(|e| plot_err(title, e))?;
        root.present().map_err(|e| plot_err(title, e))?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(title, "buffer size"))
}

impl Report {
    /// Per-sample CSV: `index,id,prompt,valid,render_error,tokens,clip_similarity,clip_score,aesthetic`.
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| EvalError::Plot {
            what: "csv".into(),
            message: e.to_string(),
        };
        w.write_record([
            "index",
            "id",
            "prompt",
            "valid",
            "render_error",
            "tokens",
            "clip_similarity",
            "clip_score",
            "aesthetic",
        ])
        .map_err(err)?;
        for s in &self.samples {
            w.write_record([
                s.index.to_string(),
                s.id.clone().unwrap_or_default(),
                s.prompt.clone(),
                s.valid.to_string(),
                s.render_error.clone().unwrap_or_default(),
                s.tokens.to_string(),
                opt(s.clip_similarity),
                opt(s.clip_score),
                opt(s.aesthetic),
            ])
            .map_err(err)?;
        }
        let bytes = w.into_inner().map_err(|e| EvalError::Plot {
            what: "csv".into(),
            message: e.to_string(),
        })?;
        String::from_utf8(bytes).map_err(|e| EvalError::Plot {
            what: "csv".into(),
            message: e.to_string(),
        })
    }

    /// `{"summary": …, "samples": […]}` as pretty JSON.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            summary: &'a Summary,
            samples: &'a [SampleResult],
        }
        serde_json::to_string_pretty(&Doc {
            summary: &self.summary,
            samples: &self.samples,
        })
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The summary as a markdown table (one row per metric).
    pub fn markdown(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "| metric | n | mean | std | min | p5 | p25 | median | p75 | p95 | max |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | validity | {} | {:.4} | | | | | | | | |\n",
            s.n, s.validity_rate
        );
        let rows: [(&str, &Option<Stats>); 4] = [
            ("clip_similarity", &s.clip_similarity),
            ("clip_score", &s.clip_score),
            ("aesthetic", &s.aesthetic),
            ("tokens", &s.tokens),
        ];
        for (name, st) in rows {
            if let Some(t) = st {
                let label = if name == "tokens" {
                    format!("tokens ({})", s.token_counter)
                } else {
                    name.to_string()
                };
                out.push_str(&format!(
                    "| {label} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                    t.n, t.mean, t.std, t.min, t.p5, t.p25, t.p50, t.p75, t.p95, t.max
                ));
            }
        }
        out
    }

    /// A grid of the renderings (invalid SVGs as grey tiles), each captioned with its prompt and
    /// scores.
    pub fn contact_sheet(&self, columns: usize, tile: u32) -> Result<RgbImage> {
        font_ready()?;
        let columns = columns.max(1);
        let tile = tile.max(32);
        let caption = 46u32;
        let pad = 8u32;
        let n = self.samples.len().max(1);
        let rows = n.div_ceil(columns) as u32;
        let (cw, ch) = (tile + 2 * pad, tile + caption + 2 * pad);
        let (w, h) = (cw * columns as u32, ch * rows);
        let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
        for i in 0..self.samples.len() {
            let (x, y) = (
                (i % columns) as u32 * cw + pad,
                (i / columns) as u32 * ch + pad,
            );
            let thumb = match self.renders.get(i).and_then(Option::as_ref) {
                Some(r) => {
                    image::imageops::resize(r, tile, tile, image::imageops::FilterType::Triangle)
                }
                None => RgbImage::from_pixel(tile, tile, image::Rgb([200, 200, 200])),
            };
            image::imageops::overlay(&mut canvas, &thumb, i64::from(x), i64::from(y));
        }
        let mut buf = canvas.into_raw();
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let chars = (tile / 7).max(4) as usize;
            for (i, s) in self.samples.iter().enumerate() {
                let (x, y) = (
                    (i % columns) as u32 * cw + pad,
                    (i / columns) as u32 * ch + pad,
                );
                let x0 = x as i32;
                let y0 = (y + tile + 3) as i32;
                root.draw(&Rectangle::new(
                    [
                        (x0 - 1, y as i32 - 1),
                        (x0 + tile as i32, y as i32 + tile as i32),
                    ],
                    RGBColor(180, 180, 180),
                ))
                .map_err(|e| plot_err("contact sheet", e))?;
                let style = (FONT_NAME, 12).into_font().color(&BLACK);
                root.draw_text(&ellipsize(&s.prompt, chars), &style, (x0, y0))
                    .map_err(|e| plot_err("contact sheet", e))?;
                let line = if s.valid {
                    let mut l = format!("clip {:.3}", s.clip_similarity.unwrap_or(f32::NAN));
                    if let Some(a) = s.aesthetic {
                        l.push_str(&format!("  aes {a:.2}"));
                    }
                    l
                } else {
                    "invalid SVG".to_string()
                };
                let color = if s.valid {
                    RGBColor(30, 90, 30)
                } else {
                    RGBColor(170, 20, 20)
                };
                root.draw_text(
                    &ellipsize(&line, chars),
                    &(FONT_NAME, 12).into_font().color(&color),
                    (x0, y0 + 15),
                )
                .map_err(|e| plot_err("contact sheet", e))?;
                let tok = format!("{} tokens", s.tokens);
                root.draw_text(
                    &tok,
                    &(FONT_NAME, 11).into_font().color(&RGBColor(90, 90, 90)),
                    (x0, y0 + 29),
                )
                .map_err(|e| plot_err("contact sheet", e))?;
            }
            root.present().map_err(|e| plot_err("contact sheet", e))?;
        }
        RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err("contact sheet", "buffer size"))
    }

    /// Writes `samples.csv`, `report.json`, `summary.json`, `summary.md`, `contact_sheet.png` and
    /// `hist_{clip_similarity,aesthetic,tokens}.png` into `dir` (created if needed); returns the paths.
    pub fn write_all(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let mut written = Vec::new();
        let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| EvalError::io(&p, e))?;
            written.push(p);
            Ok(())
        };
        put("samples.csv", self.to_csv()?.as_bytes())?;
        put("report.json", self.to_json().as_bytes())?;
        put(
            "summary.json",
            serde_json::to_string_pretty(&self.summary)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        put("summary.md", self.markdown().as_bytes())?;
        let save = |img: &RgbImage, name: &str, written: &mut Vec<PathBuf>| -> Result<()> {
            let p = dir.join(name);
            img.save(&p).map_err(|e| EvalError::Image {
                path: p.clone(),
                message: e.to_string(),
            })?;
            written.push(p);
            Ok(())
        };
        let sheet = self.contact_sheet(6, 160)?;
        save(&sheet, "contact_sheet.png", &mut written)?;
        let series: [(&str, Vec<f64>); 3] = [
            (
                "clip_similarity",
                self.samples
                    .iter()
                    .filter_map(|s| s.clip_similarity)
                    .map(f64::from)
                    .collect(),
            ),
            (
                "aesthetic",
                self.samples
                    .iter()
                    .filter_map(|s| s.aesthetic)
                    .map(f64::from)
                    .collect(),
            ),
            (
                "tokens",
                self.samples.iter().map(|s| s.tokens as f64).collect(),
            ),
        ];
        for (name, vals) in series {
            if name == "aesthetic" && vals.is_empty() {
                continue;
            }
            let img = histogram(&vals, name, 20, (640, 400))?;
            save(&img, &format!("hist_{name}.png"), &mut written)?;
        }
        Ok(written)
    }
}
