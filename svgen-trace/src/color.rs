//! Colour tracing by layers: quantise an image to a few colours, trace every colour as a
//! bitmap with the potrace algorithm, and emit one SVG with one filled `<path>` per colour.
//!
//! Two layer modes:
//! * [`LayerMode::Stacked`] (default): layers are painted back to front, largest area first;
//!   each layer covers its own pixels **and** those of every layer painted after it, so later
//!   layers sit on top of earlier ones and no gaps can open between neighbouring colours.
//! * [`LayerMode::CutOut`]: every layer is exactly the pixels of its colour (shapes never
//!   overlap, but thin gaps can appear where smoothed neighbours meet).
//!
//! The background colour (the most frequent colour of the border ring) is not traced. By
//! default [`ColorTrace::to_svg`] drops it when it is white, giving a transparent background,
//! and paints it as one `<rect>` otherwise (see [`BackgroundPaint`]). Pixels whose alpha is
//! below [`ColorParams::alpha_threshold`] belong to no layer.
//!
//! ```
//! use image::{DynamicImage, Rgb, RgbImage};
//! use svgen_trace::color::{trace_color, ColorParams, Palette};
//! # fn main() -> Result<(), svgen_trace::TraceError> {
//! // A red disc with a blue square on it, on white.
//! let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
//!     let (dx, dy) = (x as f64 - 32.0, y as f64 - 32.0);
//!     if (24..40).contains(&x) && (24..40).contains(&y) { Rgb([0, 0, 255]) }
//!     else if dx * dx + dy * dy < 500.0 { Rgb([255, 0, 0]) }
//!     else { Rgb([255, 255, 255]) }
//! }));
//! let traced = trace_color(&img, &ColorParams { palette: Palette::KMeans { k: 3, seed: 1 }, ..Default::default() })?;
//! assert_eq!(traced.background, Some([255, 255, 255]));
//! let colors: Vec<[u8; 3]> = traced.layers.iter().map(|l| l.color).collect();
//! assert_eq!(colors, [[255, 0, 0], [0, 0, 255]]); // back to front
//! let svg = traced.to_svg(&Default::default());
//! assert!(svg.contains(r##"fill="#ff0000""##) && svg.contains(r##"fill="#0000ff""##));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use image::DynamicImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bitmap::{check_size, DEFAULT_PIXEL_LIMIT};
use crate::{trace, Bitmap, PathList, Point, Segment, TraceError, TraceParams, TracedPath};

/// Where the layer colours come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Palette {
    /// k-means in CIELAB with deterministic k-means++ seeding from `seed`. An image with at
    /// most `k` distinct colours keeps exactly those colours. When at least a quarter of the
    /// pixels lie in flat areas (as in icons and clip art), only those pixels choose the
    /// palette, so that anti-aliased edges do not spend colours on blends; every pixel is then
    /// mapped to its nearest palette colour.
    KMeans {
        /// Number of colours, 1 to 256 (the background counts as one).
        k: usize,
        /// Seed of the initialisation; equal seeds give equal palettes.
        seed: u64,
    },
    /// A given palette: every pixel takes the nearest colour in CIELAB.
    Fixed(Vec<[u8; 3]>),
}

/// How layers are cut from the quantised image (see the [module docs](crate::color)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerMode {
    /// Back to front, each layer including all layers above it: no gaps.
    #[default]
    Stacked,
    /// Each layer exactly its own pixels.
    CutOut,
}

/// Parameters of [`trace_color`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColorParams {
    /// The colours (default: k-means with 8 colours, seed 0).
    pub palette: Palette,
    /// Stacked or cut-out layers.
    pub mode: LayerMode,
    /// Tracing parameters used for every layer.
    pub trace: TraceParams,
    /// Pixels with alpha below this are transparent and belong to no layer (default 128).
    pub alpha_threshold: u8,
    /// Set the background colour aside instead of tracing it (default `true`). When `false`
    /// every colour is a layer.
    pub drop_background: bool,
    /// Largest accepted `width × height`.
    pub max_pixels: u64,
}

impl Default for ColorParams {
    fn default() -> Self {
        ColorParams {
            palette: Palette::KMeans { k: 8, seed: 0 },
            mode: LayerMode::Stacked,
            trace: TraceParams::default(),
            alpha_threshold: 128,
            drop_background: true,
            max_pixels: DEFAULT_PIXEL_LIMIT,
        }
    }
}

/// One traced colour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColorLayer {
    /// sRGB fill colour.
    pub color: [u8; 3],
    /// Number of pixels quantised to this colour.
    pub pixels: u64,
    /// The traced shapes of the layer's bitmap (see [`LayerMode`]).
    pub paths: PathList,
}

/// The result of [`trace_color`]: layers in painting order (back to front).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColorTrace {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The background colour that was set aside, if any.
    pub background: Option<[u8; 3]>,
    /// Layers, back to front.
    pub layers: Vec<ColorLayer>,
}

/// Whether [`ColorTrace::to_svg`] paints the background colour that [`trace_color`] set aside.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackgroundPaint {
    /// Leave it out: the SVG is transparent there.
    Omit,
    /// Always paint it as a full-size `<rect>`.
    Rect,
    /// Paint it unless it is (near) white, the colour an SVG shows on a page anyway (default):
    /// a white background is dropped, a dark full-bleed one is kept.
    #[default]
    RectUnlessWhite,
}

/// Options of [`ColorTrace::to_svg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColorSvgOptions {
    /// Decimal places of coordinates (default 1; 0 writes integers).
    pub precision: u8,
    /// Background painting (default [`BackgroundPaint::RectUnlessWhite`]).
    pub background: BackgroundPaint,
}

impl Default for ColorSvgOptions {
    fn default() -> Self {
        ColorSvgOptions {
            precision: 1,
            background: BackgroundPaint::default(),
        }
    }
}

/// An image reduced to a palette: one palette index per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantized {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The colours.
    pub palette: Vec<[u8; 3]>,
    /// Pixels per palette entry.
    pub counts: Vec<u64>,
    /// Palette index of every pixel, row by row from the top; [`Quantized::TRANSPARENT`] for
    /// transparent pixels.
    pub indices: Vec<u16>,
}

impl Quantized {
    /// The index of transparent pixels.
    pub const TRANSPARENT: u16 = u16::MAX;
}

/// Traces a colour image by layers (see the [module docs](crate::color)).
///
/// Errors: invalid palette or trace parameters, or an image over [`ColorParams::max_pixels`].
/// A 0 × 0 or single-colour image gives no layers.
pub fn trace_color(image: &DynamicImage, params: &ColorParams) -> Result<ColorTrace, TraceError> {
    params.trace.validate()?;
    let q = quantize(
        image,
        &params.palette,
        params.alpha_threshold,
        params.max_pixels,
    )?;
    let (w, h) = (q.width, q.height);
    let background = if params.drop_background {
        border_majority(&q)
    } else {
        None
    };
    // Painting order: background first (if kept), then by decreasing area.
    let mut order: Vec<usize> = (0..q.palette.len())
        .filter(|&i| q.counts[i] > 0 && Some(i) != background)
        .collect();
    order.sort_by(|&a, &b| q.counts[b].cmp(&q.counts[a]).then(a.cmp(&b)));
    // rank[palette index] = position in the painting order (u16::MAX = not a layer).
    let mut rank = vec![u16::MAX; q.palette.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as u16;
    }
    let layers = order
        .par_iter()
        .enumerate()
        .map(|(r, &i)| {
            let r = r as u16;
            let bm = Bitmap::from_fn_with_limit(w, h, params.max_pixels, |x, y| {
                let idx = q.indices[y as usize * w as usize + x as usize];
                if idx == Quantized::TRANSPARENT {
                    return false;
                }
                let pr = rank[idx as usize];
                match params.mode {
                    LayerMode::Stacked => pr != u16::MAX && pr >= r,
                    LayerMode::CutOut => pr == r,
                }
            })?;
            Ok(ColorLayer {
                color: q.palette[i],
                pixels: q.counts[i],
                paths: trace(&bm, &params.trace)?,
            })
        })
        .collect::<Result<Vec<_>, TraceError>>()?;
    Ok(ColorTrace {
        width: w,
        height: h,
        background: background.map(|i| q.palette[i]),
        layers,
    })
}

/// The most frequent palette index on the border ring, unless the border is mostly transparent.
fn border_majority(q: &Quantized) -> Option<usize> {
    let (w, h) = (q.width as usize, q.height as usize);
    if w == 0 || h == 0 {
        return None;
    }
    let mut counts = vec![0u64; q.palette.len()];
    let mut transparent = 0u64;
    let mut visit = |x: usize, y: usize| match q.indices[y * w + x] {
        Quantized::TRANSPARENT => transparent += 1,
        i => counts[i as usize] += 1,
    };
    for x in 0..w {
        visit(x, 0);
        if h > 1 {
            visit(x, h - 1);
        }
    }
    for y in 1..h.saturating_sub(1) {
        visit(0, y);
        if w > 1 {
            visit(w - 1, y);
        }
    }
    let (best, &n) = counts
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
    (n > transparent).then_some(best)
}

/// Reduces an image to a palette (see [`Palette`]); pixels with alpha below `alpha_threshold`
/// become [`Quantized::TRANSPARENT`].
pub fn quantize(
    image: &DynamicImage,
    palette: &Palette,
    alpha_threshold: u8,
    max_pixels: u64,
) -> Result<Quantized, TraceError> {
    let (w, h) = (image.width(), image.height());
    check_size(w, h, max_pixels)?;
    match palette {
        Palette::KMeans { k, .. } if *k == 0 || *k > 256 => {
            return Err(TraceError::InvalidParam {
                name: "k",
                reason: format!("the number of colours must be 1 to 256, got {k}"),
            })
        }
        Palette::Fixed(p) if p.is_empty() || p.len() > 256 => {
            return Err(TraceError::InvalidParam {
                name: "palette",
                reason: format!("a palette needs 1 to 256 colours, got {}", p.len()),
            })
        }
        _ => {}
    }
    let rgba = image.to_rgba8();
    // Distinct opaque colours with their counts.
    let mut hist: HashMap<[u8; 3], u64> = HashMap::new();
    for p in rgba.pixels() {
        if p.0[3] >= alpha_threshold {
            *hist.entry([p.0[0], p.0[1], p.0[2]]).or_insert(0) += 1;
        }
    }
    let colors: Vec<[u8; 3]> = match palette {
        Palette::Fixed(p) => p.clone(),
        Palette::KMeans { k, seed } => {
            let flat = flat_histogram(&rgba, alpha_threshold);
            let opaque: u64 = hist.values().sum();
            let source = if flat.values().sum::<u64>() * 4 >= opaque {
                &flat
            } else {
                &hist
            };
            let mut distinct: Vec<([u8; 3], u64)> = source.iter().map(|(c, n)| (*c, *n)).collect();
            distinct.sort_unstable();
            if distinct.len() <= *k {
                distinct.iter().map(|(c, _)| *c).collect()
            } else {
                kmeans(&distinct, *k, *seed)
            }
        }
    };
    let labs: Vec<[f32; 3]> = colors.iter().map(|&c| srgb_to_lab(c)).collect();
    let nearest: HashMap<[u8; 3], u16> = hist
        .keys()
        .map(|&c| (c, nearest_index(&labs, srgb_to_lab(c)) as u16))
        .collect();
    let mut counts = vec![0u64; colors.len()];
    let mut indices = Vec::with_capacity(rgba.len() / 4);
    for p in rgba.pixels() {
        let idx = if p.0[3] >= alpha_threshold {
            nearest[&[p.0[0], p.0[1], p.0[2]]]
        } else {
            Quantized::TRANSPARENT
        };
        if idx != Quantized::TRANSPARENT {
            counts[idx as usize] += 1;
        }
        indices.push(idx);
    }
    Ok(Quantized {
        width: w,
        height: h,
        palette: colors,
        counts,
        indices,
    })
}

/// Histogram of the opaque pixels that lie inside flat areas: each of their 4-neighbours has
/// (nearly) the same colour. Anti-aliased edge pixels, which mix two neighbouring colours, are
/// left out, so that k-means spends its clusters on the real colours of the drawing; the edge
/// pixels are later assigned to the nearest of them.
fn flat_histogram(rgba: &image::RgbaImage, alpha_threshold: u8) -> HashMap<[u8; 3], u64> {
    const TOLERANCE: u8 = 6;
    let (w, h) = rgba.dimensions();
    let near = |a: &image::Rgba<u8>, b: &image::Rgba<u8>| {
        (b.0[3] >= alpha_threshold) && (0..3).all(|c| a.0[c].abs_diff(b.0[c]) <= TOLERANCE)
    };
    let mut hist = HashMap::new();
    for y in 0..h {
        for x in 0..w {
            let p = rgba.get_pixel(x, y);
            if p.0[3] < alpha_threshold {
                continue;
            }
            let flat = (x == 0 || near(p, rgba.get_pixel(x - 1, y)))
                && (x + 1 == w || near(p, rgba.get_pixel(x + 1, y)))
                && (y == 0 || near(p, rgba.get_pixel(x, y - 1)))
                && (y + 1 == h || near(p, rgba.get_pixel(x, y + 1)));
            if flat {
                *hist.entry([p.0[0], p.0[1], p.0[2]]).or_insert(0) += 1;
            }
        }
    }
    hist
}

fn nearest_index(labs: &[[f32; 3]], c: [f32; 3]) -> usize {
    let mut best = (f32::INFINITY, 0);
    for (i, l) in labs.iter().enumerate() {
        let d = dist2(*l, c);
        if d < best.0 {
            best = (d, i);
        }
    }
    best.1
}

#[inline]
fn dist2(a: [f32; 3], b: [f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// A SplitMix64 step: a tiny deterministic generator for the k-means++ seeding.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Weighted k-means in CIELAB over distinct colours (`k < distinct.len()`), returning sRGB
/// centroids (the weighted mean colour of each cluster). Colours are first merged into
/// 5-bit-per-channel bins so that the cost is bounded whatever the image.
fn kmeans(distinct: &[([u8; 3], u64)], k: usize, seed: u64) -> Vec<[u8; 3]> {
    // Bins: weighted sums of RGB per 15-bit key.
    let mut bins: HashMap<u16, ([u64; 3], u64)> = HashMap::new();
    for &(c, n) in distinct {
        let key = (u16::from(c[0] >> 3) << 10) | (u16::from(c[1] >> 3) << 5) | u16::from(c[2] >> 3);
        let e = bins.entry(key).or_insert(([0; 3], 0));
        for (acc, &v) in e.0.iter_mut().zip(&c) {
            *acc += u64::from(v) * n;
        }
        e.1 += n;
    }
    let mut keys: Vec<u16> = bins.keys().copied().collect();
    keys.sort_unstable();
    let points: Vec<([f32; 3], [u64; 3], u64)> = keys
        .iter()
        .map(|k| {
            let (sum, n) = bins[k];
            let mean = [0, 1, 2].map(|ch| ((sum[ch] + n / 2) / n) as u8);
            (srgb_to_lab(mean), sum, n)
        })
        .collect();
    if points.len() <= k {
        return points
            .iter()
            .map(|(_, sum, n)| [0, 1, 2].map(|ch| ((sum[ch] + n / 2) / n) as u8))
            .collect();
    }
    // k-means++ seeding, weighted by pixel count.
    let mut rng = seed;
    let mut centres: Vec<[f32; 3]> = Vec::with_capacity(k);
    let total: u64 = points.iter().map(|p| p.2).sum();
    let mut pick = splitmix(&mut rng) % total;
    for p in &points {
        if pick < p.2 {
            centres.push(p.0);
            break;
        }
        pick -= p.2;
    }
    let mut d2: Vec<f64> = points
        .iter()
        .map(|p| f64::from(dist2(p.0, centres[0])))
        .collect();
    while centres.len() < k {
        let weights: Vec<f64> = points
            .iter()
            .zip(&d2)
            .map(|(p, d)| d * p.2 as f64)
            .collect();
        let sum: f64 = weights.iter().sum();
        let chosen = if sum <= 0.0 {
            // All remaining points coincide with centres: take any unused point.
            points
                .iter()
                .position(|p| !centres.contains(&p.0))
                .unwrap_or(0)
        } else {
            let mut t = (splitmix(&mut rng) >> 11) as f64 / (1u64 << 53) as f64 * sum;
            let mut idx = weights.len() - 1;
            for (i, wt) in weights.iter().enumerate() {
                if t < *wt {
                    idx = i;
                    break;
                }
                t -= wt;
            }
            idx
        };
        let c = points[chosen].0;
        centres.push(c);
        for (d, p) in d2.iter_mut().zip(&points) {
            *d = d.min(f64::from(dist2(p.0, c)));
        }
    }
    // Lloyd iterations.
    let mut assign = vec![usize::MAX; points.len()];
    for _ in 0..50 {
        let mut changed = false;
        for (a, p) in assign.iter_mut().zip(&points) {
            let n = nearest_index(&centres, p.0);
            if *a != n {
                *a = n;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut acc = vec![([0f64; 3], 0f64); k];
        for (a, p) in assign.iter().zip(&points) {
            for ch in 0..3 {
                acc[*a].0[ch] += f64::from(p.0[ch]) * p.2 as f64;
            }
            acc[*a].1 += p.2 as f64;
        }
        for (c, (sum, n)) in centres.iter_mut().zip(&acc) {
            if *n > 0.0 {
                *c = [0, 1, 2].map(|ch| (sum[ch] / n) as f32);
            }
        }
    }
    // Centroids as the weighted mean sRGB of their members; empty clusters are dropped.
    let mut acc = vec![([0u64; 3], 0u64); k];
    for (a, p) in assign.iter().zip(&points) {
        for ch in 0..3 {
            acc[*a].0[ch] += p.1[ch];
        }
        acc[*a].1 += p.2;
    }
    let mut out: Vec<[u8; 3]> = acc
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(sum, n)| [0, 1, 2].map(|ch| ((sum[ch] + n / 2) / n) as u8))
        .collect();
    out.dedup();
    out
}

/// sRGB (D65) to CIELAB.
fn srgb_to_lab(c: [u8; 3]) -> [f32; 3] {
    let lin = |v: u8| {
        let v = f32::from(v) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(c[0]), lin(c[1]), lin(c[2]));
    let x = (0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / 0.950_47;
    let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b;
    let z = (0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b) / 1.088_83;
    let f = |t: f32| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

// ---------------------------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------------------------

impl ColorTrace {
    /// Writes one SVG document: `viewBox="0 0 W H"` in image coordinates (y down), the
    /// background `<rect>` if [`ColorSvgOptions::background`] asks for it, then one
    /// `<path fill="#rrggbb">` per layer in painting order, holes as subpaths (non-zero fill),
    /// relative commands, coordinates rounded to [`ColorSvgOptions::precision`] decimals.
    pub fn to_svg(&self, opts: &ColorSvgOptions) -> String {
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
            w = self.width,
            h = self.height
        );
        let paint = match (opts.background, self.background) {
            (BackgroundPaint::Omit, _) | (_, None) => None,
            (BackgroundPaint::Rect, Some(c)) => Some(c),
            (BackgroundPaint::RectUnlessWhite, Some(c)) => c.iter().any(|&v| v < 245).then_some(c),
        };
        if let Some(c) = paint {
            let _ = write!(
                out,
                "<rect width=\"{}\" height=\"{}\" fill=\"{}\"/>",
                self.width,
                self.height,
                hex(c)
            );
        }
        for layer in &self.layers {
            if layer.paths.is_empty() {
                continue;
            }
            let mut d = PathData::new(opts.precision);
            for p in layer.paths.paths() {
                d.tree(p);
            }
            let _ = write!(out, "<path fill=\"{}\" d=\"{}\"/>", hex(layer.color), d.out);
        }
        out.push_str("</svg>\n");
        out
    }
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Compact path-data writer: quantised integer state so that relative moves never drift.
struct PathData {
    out: String,
    scale: f64,
    decimals: usize,
    cur: (i64, i64),
    /// The last command letter written, for implicit repetition (`l1 2 3 4` = `l1 2l3 4`).
    last_cmd: Option<char>,
}

impl PathData {
    fn new(precision: u8) -> PathData {
        let decimals = usize::from(precision.min(6));
        PathData {
            out: String::new(),
            scale: 10f64.powi(decimals as i32),
            decimals,
            cur: (0, 0),
            last_cmd: None,
        }
    }

    fn q(&self, p: Point) -> (i64, i64) {
        (
            (p.x * self.scale).round() as i64,
            (p.y * self.scale).round() as i64,
        )
    }

    fn num(&mut self, v: i64) {
        let neg = v < 0;
        let a = v.unsigned_abs();
        let int = a / self.scale as u64;
        let frac = a % self.scale as u64;
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        if frac == 0 {
            let _ = write!(s, "{int}");
        } else {
            let f = format!("{frac:0width$}", width = self.decimals);
            let f = f.trim_end_matches('0');
            if int == 0 {
                let _ = write!(s, ".{f}");
            } else {
                let _ = write!(s, "{int}.{f}");
            }
        }
        // A separator is needed unless the number starts with '-' or the previous token ends
        // in a command letter; '.' after a number that already has a '.' also separates.
        let prev = self.out.chars().last();
        let needs_sep = match prev {
            None => false,
            Some(c) if c.is_ascii_alphabetic() => false,
            Some(_) => !(neg || (s.starts_with('.') && self.last_has_dot())),
        };
        if needs_sep {
            self.out.push(' ');
        }
        self.out.push_str(&s);
    }

    fn last_has_dot(&self) -> bool {
        let tail = self
            .out
            .rsplit(|c: char| c == ' ' || c == '-' || c.is_ascii_alphabetic())
            .next()
            .unwrap_or("");
        tail.contains('.')
    }

    fn rel(&mut self, cmd: char, pts: &[Point]) {
        if self.last_cmd != Some(cmd) {
            self.out.push(cmd);
            self.last_cmd = Some(cmd);
        }
        let base = self.cur;
        let mut last = base;
        for &p in pts {
            let (x, y) = self.q(p);
            self.num(x - base.0);
            self.num(y - base.1);
            last = (x, y);
        }
        self.cur = last;
    }

    fn tree(&mut self, path: &TracedPath) {
        if let Some(start) = path.start() {
            let (x, y) = self.q(start);
            self.out.push('M');
            self.last_cmd = Some('M');
            self.num(x);
            self.num(y);
            self.cur = (x, y);
            for s in path.segments() {
                match s {
                    Segment::Corner { vertex, end } => {
                        self.rel('l', &[vertex]);
                        self.rel('l', &[end]);
                    }
                    Segment::Bezier { c1, c2, end } => self.rel('c', &[c1, c2, end]),
                }
            }
            self.out.push('z');
            self.last_cmd = Some('z');
        }
        for child in &path.children {
            self.tree(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_primaries() {
        let w = srgb_to_lab([255, 255, 255]);
        assert!((w[0] - 100.0).abs() < 0.01 && w[1].abs() < 0.01 && w[2].abs() < 0.01);
        let k = srgb_to_lab([0, 0, 0]);
        assert!(k[0].abs() < 1e-3);
        let r = srgb_to_lab([255, 0, 0]);
        assert!((r[0] - 53.24).abs() < 0.05 && (r[1] - 80.09).abs() < 0.1);
    }

    #[test]
    fn numbers_are_compact_and_parse_back() {
        let mut d = PathData::new(1);
        for v in [0, 5, -5, 10, -12, 123, 7] {
            d.num(v);
        }
        assert_eq!(d.out, "0 .5-.5 1-1.2 12.3.7");
        let mut d = PathData::new(0);
        d.num(3);
        d.num(-4);
        d.num(12);
        assert_eq!(d.out, "3-4 12");
    }
}
