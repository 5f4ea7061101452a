//! Token-aware SVG writing: an equivalent document with fewer cl100k tokens.
//!
//! [`compact`] writes a new document from the resolved usvg tree of an [`Svg`] with its own
//! serializer. Because usvg has already resolved CSS, `<use>`, `<symbol>`, inherited and
//! default attributes, unit conversions and editor metadata, the output starts clean; on top
//! of that the writer
//!
//! * rounds every shape's coordinates as coarsely as its geometry allows (see *Precision*
//!   below), and writes them as integers on a scaled viewBox when that is cheaper (`12.34` is
//!   three tokens, `1234` two);
//! * chooses per segment the spelling with the fewest tokens under a cl100k cost model
//!   (absolute or relative, `H`/`V`/`S`/`T` shorthands, implicit repeated commands, minimal
//!   separators, compact arc flags), see [`path_data_tokens`];
//! * recovers circular and elliptical arcs, whole circles and ellipses from the Bézier curves
//!   usvg produces for `<circle>`, `<ellipse>`, `<rect rx>` and arc commands (an arc costs
//!   about a third of its curves), and writes a path that is exactly one circle, axis-aligned
//!   ellipse or (rounded) rectangle as that element when it is cheaper;
//! * folds transforms into coordinates where that is exact (gradients are mapped with them),
//!   hoists the most common presentation attributes to the root, drops default values and
//!   stroke caps and joins that cannot show, and merges paths of identical style where
//!   painting order makes it safe (also over shapes they do not overlap);
//! * optionally simplifies geometry within a tolerance (flat curves to lines, near-collinear
//!   lines merged, sub-tolerance subpaths dropped).
//!
//! # Precision
//!
//! With [`Precision::Auto`] (the default) each shape gets a tolerance `t`, the furthest any of
//! its points may move, in user units:
//!
//! `t = min(MAX_ERROR_PX · S / render_size, THICKNESS_FRACTION · w)`
//!
//! * `S / render_size` is the size of a pixel when the larger viewBox side `S` is rendered at
//!   `render_size` px (default 512, the top of the 256–512 px renders datasets use);
//!   [`MAX_ERROR_PX`] is 1/4: a quarter pixel at 512, an eighth at 256. A large viewBox gets
//!   coarse coordinates, a tiny one fine ones: the rule does not depend on the units.
//! * `w` is the thickness of what the shape paints: its stroke width when stroked, and for
//!   fills twice the filled area over the outline length (holes count, so a thin ring is thin);
//!   the smaller of the two when both. Ink IoU changes by about twice the mean edge
//!   displacement over the thickness, so [`THICKNESS_FRACTION`] = 1/200 keeps even a hairline
//!   (or a thin stroke along the edge of another shape) at its place within 0.5 % of its
//!   width; thick shapes are bounded by the pixel term instead.
//!
//! Coordinates are then rounded to the largest power of ten not above `2t` (so no point moves
//! more than `t`): a 24×24 icon with 2-unit strokes gets `t = min(0.0117, 0.01)`, two
//! decimals; a 0.1-unit hairline in it `t = 0.0005`, three; a 1000×1000 drawing of thick
//! shapes `t = 0.49`, one. With [`CompactOptions::integer_grid`] the viewBox may instead be
//! scaled by 1, 2 or 5 × 10ⁿ, up to the scale at which every shape's coordinates are integers
//! within its tolerance, whichever writes the fewest tokens (`width`/`height` keep the
//! rendered size). Finally [`CompactOptions::verify`] renders the output against the input
//! (ink IoU ≥ 0.995, colour error ≤ 0.005 at 256 px by default) and writes it again with a
//! quarter of the tolerances where they differ (up to three times): a long straight edge
//! whose pixel coverage sits right at the ink threshold can flip a whole row of pixels for a
//! displacement far below any tolerance, and only a rendering sees that.
//!
//! [`Precision::Decimals`] and [`Precision::Relative`] instead round every coordinate of the
//! document to a fixed number of decimals, without integer grid or verification (OmniSVG's
//! 200×200 normalisation is `normalise_viewbox: Some(200.0)` with
//! `precision: Precision::Decimals(0)`).
//!
//! Filters are not written (usvg keeps them on groups; icon sets essentially never use them):
//! a document with filters is compacted without its filter effects.
//!
//! ```
//! use svgen_core::{compact::{compact, CompactOptions}, Svg};
//! let svg = Svg::parse(br##"<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24"
//!     viewBox="0 0 24 24"><circle cx="12" cy="12" r="9" fill="none" stroke="#000000"/></svg>"##)
//!     .unwrap();
//! let out = compact(&svg, &CompactOptions::default());
//! assert_eq!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><circle cx="12" cy="12" r="9" fill="none" stroke="black"/></svg>"#);
//! ```

mod arc;
mod cost;
pub(crate) mod path;
mod precision;
mod shapes;

pub use cost::path_data_tokens;
pub use precision::{MAX_ERROR_PX, MIN_RELATIVE_TOLERANCE, THICKNESS_FRACTION};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use path::{Affine, Bounds, Pt, Seg};
use usvg::{Node, Paint};

use crate::metrics;
use crate::render::{render, RenderOptions};
use crate::Svg;

/// How coordinates are rounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precision {
    /// Follows the geometry (the default): each shape's coordinates move at most
    /// [`MAX_ERROR_PX`] px in a rendering of `render_size` px on the larger viewBox side, and at
    /// most [`THICKNESS_FRACTION`] of the thickness of what the shape paints (stroke width, or
    /// twice the filled area over the outline length). See the module docs.
    Auto {
        /// Pixels of the larger viewBox side in the renderings the output must match.
        /// Default: 512 (datasets render icons at 256–512 px).
        render_size: u32,
    },
    /// A fixed number of decimals in output user units (0 = integers). Values above 8 are
    /// treated as 8.
    Decimals(u8),
    /// Enough decimals that one unit of the last place is at most `1/steps` of the larger
    /// viewBox side (e.g. `Relative(1000)` gives 2 decimals for a 24×24 icon, 1 for 200×200:
    /// the unit is the largest power of ten not above `side / steps`).
    Relative(u32),
}

impl Default for Precision {
    fn default() -> Self {
        Precision::Auto {
            render_size: DEFAULT_RENDER_SIZE,
        }
    }
}

/// The default `render_size` of [`Precision::Auto`].
pub const DEFAULT_RENDER_SIZE: u32 = 512;

/// Options for [`compact`]. The defaults are visually lossless for icons: every output of the
/// benchmark (3,300 icons of nine real sets, `tools/bench_compact/run.sh`) keeps ink IoU ≥ 0.99
/// and a colour error (largest per-channel mean absolute error) ≤ 0.01 at 256 px.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactOptions {
    /// Coordinate precision. Default: `Precision::Auto { render_size: 512 }`.
    pub precision: Precision,
    /// Rescale the drawing so that the larger viewBox side is this long, with the viewBox
    /// origin at 0,0 (OmniSVG normalises to 200). The intrinsic `width`/`height` stay as they
    /// were. Default: `None` (keep the original coordinate system).
    pub normalise_viewbox: Option<f32>,
    /// With [`Precision::Auto`] and no `normalise_viewbox`: scale the viewBox by a power of ten
    /// when that writes the coordinates as integers in fewer tokens (`12.34` is three tokens,
    /// `1234` two); `width`/`height` keep the rendered size. Default: `true`.
    pub integer_grid: bool,
    /// Geometric simplification tolerance in user units of the (normalised) viewBox, before
    /// any integer-grid scaling; 0 disables it. Flat curves become lines, near-collinear lines
    /// merge and subpaths smaller than this in both directions are dropped. Default: 0.
    pub simplify_tolerance: f64,
    /// Recover circular arcs and circles from Bézier curves. Default: `true`.
    pub recover_arcs: bool,
    /// Merge adjacent paths of identical style where painting order makes it safe (opaque
    /// undashed strokes without fill, or non-overlapping shapes). Default: `true`.
    pub merge_paths: bool,
    /// Hoist the most common presentation attributes to the root element. Default: `true`.
    pub hoist_styles: bool,
    /// Write `width`/`height` when they differ from the viewBox size. Default: `true`.
    pub keep_size: bool,
    /// With [`Precision::Auto`]: render the output against the input and, where they differ
    /// more than allowed, write it again with finer coordinates (a quarter of the tolerances,
    /// up to three times). Default: `Some(Verify::default())`; `None` skips the renderings.
    pub verify: Option<Verify>,
}

/// The rendering check of [`CompactOptions::verify`]: both documents are rendered into a
/// `size` × `size` white canvas (drawing contained and centred, as
/// [`compare_svgs`](crate::metrics::compare_svgs) does) and compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verify {
    /// Side of the renderings in pixels. Default: 256.
    pub size: u32,
    /// Smallest accepted ink IoU ([`crate::metrics::ink_iou`]). Default: 0.995.
    pub min_ink_iou: f64,
    /// Largest accepted colour error, the largest per-channel mean absolute error
    /// ([`crate::metrics::channel_mean_abs_error`]). Default: 0.005.
    pub max_colour_mae: f64,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            size: 256,
            min_ink_iou: 0.995,
            max_colour_mae: 0.005,
        }
    }
}

/// How many times [`compact`] refines a document that fails its [`Verify`] check.
const MAX_REFINEMENTS: u32 = 3;

/// The factor by which each refinement scales the coordinate tolerances.
const REFINEMENT: f64 = 0.25;

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            precision: Precision::default(),
            normalise_viewbox: None,
            integer_grid: true,
            simplify_tolerance: 0.0,
            recover_arcs: true,
            merge_paths: true,
            hoist_styles: true,
            keep_size: true,
            verify: Some(Verify::default()),
        }
    }
}

/// Writes `svg` as an equivalent document with fewer cl100k tokens. See the module docs.
pub fn compact(svg: &Svg, opts: &CompactOptions) -> String {
    let write = |refine: f64| {
        let doc = Doc::build_tree(svg.tree(), opts, refine);
        doc.to_svg_string(&doc.items, &doc.defs_for(&doc.items))
    };
    let first = write(1.0);
    let (Precision::Auto { .. }, Some(v)) = (opts.precision, opts.verify) else {
        return first;
    };
    let ropts = RenderOptions::square(v.size.clamp(1, crate::render::MAX_RENDER_SIDE));
    let reference = render(svg, &ropts);
    // (passes, ink IoU, colour error) of an output; one that does not parse scores worst.
    let score = |text: &str| -> (bool, f64, f64) {
        let Ok(back) = Svg::parse(text.as_bytes()) else {
            return (false, 0.0, 1.0);
        };
        let img = render(&back, &ropts);
        let (iou, colour) = ink_iou_and_colour(&reference, &img).unwrap_or((0.0, 1.0));
        let pass = iou >= v.min_ink_iou && colour <= v.max_colour_mae;
        (pass, iou, colour)
    };
    let mut best = (score(&first), first);
    let mut refine = 1.0;
    for _ in 0..MAX_REFINEMENTS {
        if best.0 .0 {
            break;
        }
        refine *= REFINEMENT;
        let text = write(refine);
        let sc = score(&text);
        // Keep the finer output when it passes or at least looks closer.
        if sc.0 || (sc.1, -sc.2) > (best.0 .1, -best.0 .2) {
            best = (sc, text);
        }
    }
    best.1
}

/// Ink IoU and colour error (largest per-channel mean absolute error) of two renderings, as
/// [`metrics::ink_iou`] and [`metrics::channel_mean_abs_error`] define them, in one pass of
/// integer arithmetic (over white, a channel is `255 − (255 − c)·α/255`, so both the ink test
/// and the channel differences are exact in units of 1/255²). `None` on a size mismatch.
fn ink_iou_and_colour(a: &image::RgbaImage, b: &image::RgbaImage) -> Option<(f64, f64)> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let ink_min = u32::from(metrics::INK_THRESHOLD) * 255;
    // Darkness over white of each channel, times 255.
    let dark = |p: &[u8]| {
        let alpha = u32::from(p[3]);
        [0, 1, 2].map(|i| (255 - u32::from(p[i])) * alpha)
    };
    let (mut inter, mut union) = (0u64, 0u64);
    let mut sums = [0u64; 3];
    for (pa, pb) in a.as_raw().chunks_exact(4).zip(b.as_raw().chunks_exact(4)) {
        if pa == pb {
            // Most pixels: the same (often blank) in both.
            let ink = pa[3] != 0 && dark(pa).iter().max().is_some_and(|m| *m >= ink_min);
            inter += u64::from(ink);
            union += u64::from(ink);
            continue;
        }
        let (da, db) = (dark(pa), dark(pb));
        let ia = da.iter().max().is_some_and(|m| *m >= ink_min);
        let ib = db.iter().max().is_some_and(|m| *m >= ink_min);
        inter += u64::from(ia && ib);
        union += u64::from(ia || ib);
        for i in 0..3 {
            sums[i] += u64::from(da[i].abs_diff(db[i]));
        }
    }
    let iou = if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    };
    let n = u64::from(a.width()) * u64::from(a.height());
    let colour = if n == 0 {
        0.0
    } else {
        sums.iter().copied().max().unwrap_or(0) as f64 / (n as f64 * 255.0 * 255.0)
    };
    Some((iou, colour))
}

// ---------------------------------------------------------------------------------------
// Intermediate representation
// ---------------------------------------------------------------------------------------

/// Inheritable presentation properties written on shapes (and hoisted to the root).
const PROPS: [(&str, &str); 13] = [
    ("fill", "black"),
    ("fill-opacity", "1"),
    ("fill-rule", "nonzero"),
    ("stroke", "none"),
    ("stroke-width", "1"),
    ("stroke-linecap", "butt"),
    ("stroke-linejoin", "miter"),
    ("stroke-miterlimit", "4"),
    ("stroke-dasharray", "none"),
    ("stroke-dashoffset", "0"),
    ("stroke-opacity", "1"),
    ("paint-order", "normal"),
    ("shape-rendering", "auto"),
];
const NPROPS: usize = PROPS.len();

/// A shape's resolved style; `None` = the property does not affect this shape.
type Style = [Option<String>; NPROPS];

/// A shape: a path (or circle) with its style.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    segs: Vec<Seg>,
    style: Style,
    /// Non-inheritable attributes (`clip-rule`, `clip-path` inside clip paths).
    extra: Vec<(&'static str, String)>,
    /// Painted bounds (stroke included), one per merged part.
    parts: Vec<Bounds>,
    /// Overlapping parts may be merged into this shape without changing the picture.
    overlap_safe: bool,
    /// Whether the stroke start point matters (dashes) or caps could show (open, butt/square).
    circle_ok: bool,
    /// Paint servers this shape references.
    refs: Vec<String>,
    /// Decimals of the coordinates.
    p: u32,
    /// How far the coordinates may move, in output user units.
    tol: f64,
}

/// An element of the output document.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    El(El),
    Shape(Box<Shape>),
}

/// A non-shape element.
#[derive(Debug, Clone)]
pub(crate) struct El {
    tag: &'static str,
    attrs: Vec<(&'static str, String)>,
    children: Vec<Item>,
    /// Definitions this element references directly.
    refs: Vec<String>,
}

impl El {
    /// A group whose children may be painted as separate groups with the same attributes
    /// without changing the picture (only a transform and/or a clip path).
    pub(crate) fn is_separable(&self) -> bool {
        self.tag == "g"
            && self
                .attrs
                .iter()
                .all(|(k, _)| matches!(*k, "transform" | "clip-path"))
    }

    pub(crate) fn children(&self) -> &[Item] {
        &self.children
    }

    /// A copy of this element with other children.
    pub(crate) fn with_children(&self, children: Vec<Item>) -> El {
        El {
            tag: self.tag,
            attrs: self.attrs.clone(),
            children,
            refs: self.refs.clone(),
        }
    }
}

/// A document ready to be written: root attributes, definitions and top-level items.
#[derive(Debug)]
pub(crate) struct Doc {
    root_attrs: Vec<(&'static str, String)>,
    hoisted: Vec<Option<String>>,
    /// Definitions in document order (id, element).
    defs: Vec<(String, El)>,
    pub(crate) items: Vec<Item>,
}

/// How many integer-grid scales [`Doc::build_tree`] tries below the finest it needs, besides
/// the largest that keeps the viewBox under 1000 units (each is also tried centred on the
/// origin when the viewBox reaches 1000 units).
const GRID_CANDIDATES: usize = 7;

/// The larger side of the drawing's size.
fn doc_side(tree: &usvg::Tree) -> f64 {
    f64::from(tree.size().width().max(tree.size().height()))
}

/// The scales [`Doc::build_tree`] may give the viewBox for an integer grid (1-2-5 steps).
const GRID_SCALES: [f64; 19] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5,
    5e5, 1e6,
];

struct Builder<'a> {
    opts: &'a CompactOptions,
    /// Decimals of numbers that are not shape coordinates (gradients, transforms), in output
    /// user units.
    p: u32,
    /// [`Precision::Auto`]: the render tolerance in output user units.
    auto_tol: Option<f64>,
    /// The finest tolerance ever used, in output user units.
    min_tol: f64,
    /// Simplification tolerance in output user units.
    simplify: f64,
    /// The largest stretch from the coordinates being written to output user units (above 1
    /// inside scaled groups, clip paths and patterns that keep their transform).
    ctx: f64,
    /// The factor applied to the tolerances of [`Precision::Auto`] (below 1 when refining).
    refine: f64,
    /// Ids of definitions by address (and, for paint servers, the map of the coordinates).
    ids: HashMap<(usize, [u64; 6]), String>,
    defs: Vec<(String, El)>,
}

fn short_id(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
        n -= 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// Formats `v` with at most `decimals` decimals, shortest form.
pub(crate) fn fmt_num(v: f64, decimals: u32) -> String {
    path::fmt_units(path::quantize(v, decimals), decimals)
}

const NAMED: [(&str, [u8; 3]); 20] = [
    ("black", [0, 0, 0]),
    ("white", [255, 255, 255]),
    ("red", [255, 0, 0]),
    ("blue", [0, 0, 255]),
    ("green", [0, 128, 0]),
    ("gray", [128, 128, 128]),
    ("yellow", [255, 255, 0]),
    ("orange", [255, 165, 0]),
    ("purple", [128, 0, 128]),
    ("navy", [0, 0, 128]),
    ("silver", [192, 192, 192]),
    ("maroon", [128, 0, 0]),
    ("olive", [128, 128, 0]),
    ("teal", [0, 128, 128]),
    ("lime", [0, 255, 0]),
    ("aqua", [0, 255, 255]),
    ("pink", [255, 192, 203]),
    ("brown", [165, 42, 42]),
    ("gold", [255, 215, 0]),
    ("tan", [210, 180, 140]),
];

/// The color spelling with the fewest tokens (single-word names are one token; `#rgb` two).
pub(crate) fn fmt_color(c: usvg::Color) -> String {
    let rgb = [c.red, c.green, c.blue];
    if let Some((name, _)) = NAMED.iter().find(|(_, v)| *v == rgb) {
        return (*name).to_string();
    }
    if rgb.iter().all(|v| v >> 4 == v & 15) {
        format!("#{:x}{:x}{:x}", c.red & 15, c.green & 15, c.blue & 15)
    } else {
        format!("#{:02x}{:02x}{:02x}", c.red, c.green, c.blue)
    }
}

fn fmt_transform(t: &Affine, p: u32) -> String {
    let lp = 6;
    let tp = p + 2;
    if t.b == 0.0 && t.c == 0.0 {
        if t.a == 1.0 && t.d == 1.0 {
            return if t.f == 0.0 {
                format!("translate({})", fmt_num(t.e, tp))
            } else {
                format!("translate({} {})", fmt_num(t.e, tp), fmt_num(t.f, tp))
            };
        }
        if t.e == 0.0 && t.f == 0.0 {
            return if t.a == t.d {
                format!("scale({})", fmt_num(t.a, lp))
            } else {
                format!("scale({} {})", fmt_num(t.a, lp), fmt_num(t.d, lp))
            };
        }
    }
    format!(
        "matrix({} {} {} {} {} {})",
        fmt_num(t.a, lp),
        fmt_num(t.b, lp),
        fmt_num(t.c, lp),
        fmt_num(t.d, lp),
        fmt_num(t.e, tp),
        fmt_num(t.f, tp)
    )
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if ch.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if ch.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Whether a subtree can be drawn with its transforms folded into coordinates.
fn flattenable(g: &usvg::Group, t: &Affine) -> bool {
    g.children().iter().all(|n| match n {
        Node::Path(p) => {
            // Gradients are mapped with the coordinates (exact for similarities).
            let similar = t.similarity_scale().is_some();
            let paint_ok = |pt: &Paint| match pt {
                Paint::Color(_) => true,
                Paint::LinearGradient(_) | Paint::RadialGradient(_) => similar,
                Paint::Pattern(_) => false,
            };
            p.fill().is_none_or(|f| paint_ok(f.paint()))
                && p.stroke().is_none_or(|s| paint_ok(s.paint()) && similar)
        }
        Node::Image(_) => true,
        Node::Text(tx) => flattenable(tx.flattened(), t),
        Node::Group(cg) => {
            if has_effects(cg) {
                true
            } else {
                flattenable(cg, &t.then_after(Affine::from_usvg(cg.transform())))
            }
        }
    })
}

/// Effects that need a `<g>` of their own (and its own coordinate system).
fn has_effects(g: &usvg::Group) -> bool {
    g.clip_path().is_some()
        || g.mask().is_some()
        || !g.filters().is_empty()
        || g.isolate()
        || g.blend_mode() != usvg::BlendMode::Normal
}

impl<'a> Builder<'a> {
    fn id_for<T>(&mut self, a: &Arc<T>) -> (String, bool) {
        self.id_for_mapped(a, &Affine::IDENTITY)
    }

    /// The id of the definition of `a` drawn through the map `m`, and whether it is new.
    fn id_for_mapped<T>(&mut self, a: &Arc<T>, m: &Affine) -> (String, bool) {
        let key = (Arc::as_ptr(a) as *const () as usize, m.bits());
        if let Some(id) = self.ids.get(&key) {
            return (id.clone(), false);
        }
        let id = short_id(self.ids.len());
        self.ids.insert(key, id.clone());
        (id, true)
    }

    /// The paint value of `p` for a shape whose coordinates were mapped by `m` (a similarity,
    /// see [`flattenable`]): gradients are mapped with it, so that each (gradient, map) pair
    /// gets a definition of its own.
    fn paint(&mut self, p: &Paint, m: &Affine) -> (String, Option<String>) {
        match p {
            Paint::Color(c) => (fmt_color(*c), None),
            Paint::LinearGradient(lg) => {
                let (id, new) = self.id_for_mapped(lg, m);
                if new {
                    let mut attrs = vec![
                        ("id", id.clone()),
                        ("gradientUnits", "userSpaceOnUse".into()),
                    ];
                    let p = self.p + 1;
                    let a = m.apply(Pt::new(f64::from(lg.x1()), f64::from(lg.y1())));
                    let b = m.apply(Pt::new(f64::from(lg.x2()), f64::from(lg.y2())));
                    for (k, v) in [("x1", a.x), ("y1", a.y), ("x2", b.x), ("y2", b.y)] {
                        if k == "x2" || v != 0.0 {
                            attrs.push((k, fmt_num(v, p)));
                        }
                    }
                    let el = self.gradient("linearGradient", attrs, lg, m);
                    self.defs.push((id.clone(), el));
                }
                (format!("url(#{id})"), Some(id))
            }
            Paint::RadialGradient(rg) => {
                let (id, new) = self.id_for_mapped(rg, m);
                if new {
                    let p = self.p + 1;
                    let s = m.similarity_scale().unwrap_or(1.0);
                    let c = m.apply(Pt::new(f64::from(rg.cx()), f64::from(rg.cy())));
                    let f = m.apply(Pt::new(f64::from(rg.fx()), f64::from(rg.fy())));
                    let mut attrs = vec![
                        ("id", id.clone()),
                        ("gradientUnits", "userSpaceOnUse".into()),
                        ("cx", fmt_num(c.x, p)),
                        ("cy", fmt_num(c.y, p)),
                        ("r", fmt_num(f64::from(rg.r().get()) * s, p)),
                    ];
                    if rg.fx() != rg.cx() {
                        attrs.push(("fx", fmt_num(f.x, p)));
                    }
                    if rg.fy() != rg.cy() {
                        attrs.push(("fy", fmt_num(f.y, p)));
                    }
                    if rg.fr().get() != 0.0 {
                        attrs.push(("fr", fmt_num(f64::from(rg.fr().get()) * s, p)));
                    }
                    let el = self.gradient("radialGradient", attrs, rg, m);
                    self.defs.push((id.clone(), el));
                }
                (format!("url(#{id})"), Some(id))
            }
            Paint::Pattern(pat) => {
                let (id, new) = self.id_for(pat);
                if new {
                    let r = pat.rect();
                    let p = self.p + 1;
                    let mut attrs = vec![
                        ("id", id.clone()),
                        ("patternUnits", "userSpaceOnUse".into()),
                        ("x", fmt_num(f64::from(r.x()), p)),
                        ("y", fmt_num(f64::from(r.y()), p)),
                        ("width", fmt_num(f64::from(r.width()), p)),
                        ("height", fmt_num(f64::from(r.height()), p)),
                    ];
                    let t = Affine::from_usvg(pat.transform());
                    if !t.is_identity() {
                        attrs.push(("patternTransform", fmt_transform(&t, self.p)));
                    }
                    let saved_ctx = self.ctx;
                    self.ctx *= t.max_stretch();
                    let children = self.children(pat.root(), Affine::IDENTITY, false);
                    self.ctx = saved_ctx;
                    let el = El {
                        tag: "pattern",
                        attrs,
                        children,
                        refs: Vec::new(),
                    };
                    self.defs.push((id.clone(), el));
                }
                (format!("url(#{id})"), Some(id))
            }
        }
    }

    fn gradient(
        &self,
        tag: &'static str,
        mut attrs: Vec<(&'static str, String)>,
        g: &usvg::BaseGradient,
        m: &Affine,
    ) -> El {
        // Coordinates were mapped by `m`: the gradient space becomes `m · G · m⁻¹`.
        let mut t = Affine::from_usvg(g.transform());
        if !t.is_identity() && !m.is_identity() {
            t = m
                .then_after(t)
                .then_after(m.inverse().unwrap_or(Affine::IDENTITY));
        }
        if !t.is_identity() {
            attrs.push(("gradientTransform", fmt_transform(&t, self.p)));
        }
        match g.spread_method() {
            usvg::SpreadMethod::Pad => {}
            usvg::SpreadMethod::Reflect => attrs.push(("spreadMethod", "reflect".into())),
            usvg::SpreadMethod::Repeat => attrs.push(("spreadMethod", "repeat".into())),
        }
        let children = g
            .stops()
            .iter()
            .map(|s| {
                let mut a = vec![("offset", fmt_num(f64::from(s.offset().get()), 3))];
                if s.color() != usvg::Color::black() {
                    a.push(("stop-color", fmt_color(s.color())));
                }
                if s.opacity().get() != 1.0 {
                    a.push(("stop-opacity", fmt_num(f64::from(s.opacity().get()), 3)));
                }
                Item::El(El {
                    tag: "stop",
                    attrs: a,
                    children: Vec::new(),
                    refs: Vec::new(),
                })
            })
            .collect();
        El {
            tag,
            attrs,
            children,
            refs: Vec::new(),
        }
    }

    /// Clip paths and masks are reached through plain references; they are identified by
    /// address, like the paint servers.
    fn clip_def_ref(&mut self, c: &usvg::ClipPath) -> String {
        let key = (c as *const usvg::ClipPath as usize, Affine::IDENTITY.bits());
        if let Some(id) = self.ids.get(&key) {
            return id.clone();
        }
        let id = short_id(self.ids.len());
        self.ids.insert(key, id.clone());
        let mut attrs = vec![("id", id.clone())];
        let t = Affine::from_usvg(c.transform());
        if !t.is_identity() {
            attrs.push(("transform", fmt_transform(&t, self.p)));
        }
        let mut refs = Vec::new();
        if let Some(inner) = c.clip_path() {
            let iid = self.clip_def_ref(inner);
            attrs.push(("clip-path", format!("url(#{iid})")));
            refs.push(iid);
        }
        let saved_ctx = self.ctx;
        self.ctx *= t.max_stretch();
        let children = self.children(c.root(), Affine::IDENTITY, true);
        self.ctx = saved_ctx;
        self.defs.push((
            id.clone(),
            El {
                tag: "clipPath",
                attrs,
                children,
                refs,
            },
        ));
        id
    }

    fn mask_def_ref(&mut self, m: &usvg::Mask) -> String {
        let key = (m as *const usvg::Mask as usize, Affine::IDENTITY.bits());
        if let Some(id) = self.ids.get(&key) {
            return id.clone();
        }
        let id = short_id(self.ids.len());
        self.ids.insert(key, id.clone());
        let r = m.rect();
        let p = self.p + 1;
        let mut attrs = vec![
            ("id", id.clone()),
            ("maskUnits", "userSpaceOnUse".into()),
            ("x", fmt_num(f64::from(r.x()), p)),
            ("y", fmt_num(f64::from(r.y()), p)),
            ("width", fmt_num(f64::from(r.width()), p)),
            ("height", fmt_num(f64::from(r.height()), p)),
        ];
        if m.kind() == usvg::MaskType::Alpha {
            attrs.push(("mask-type", "alpha".into()));
        }
        let mut refs = Vec::new();
        if let Some(inner) = m.mask() {
            let iid = self.mask_def_ref(inner);
            attrs.push(("mask", format!("url(#{iid})")));
            refs.push(iid);
        }
        let children = self.children(m.root(), Affine::IDENTITY, false);
        self.defs.push((
            id.clone(),
            El {
                tag: "mask",
                attrs,
                children,
                refs,
            },
        ));
        id
    }

    /// Converts the children of `g`, whose coordinates map to output coordinates through `m`.
    fn children(&mut self, g: &usvg::Group, m: Affine, in_clip: bool) -> Vec<Item> {
        let mut out = Vec::new();
        for n in g.children() {
            match n {
                Node::Group(cg) => self.group(cg, m, in_clip, &mut out),
                Node::Path(p) => {
                    if let Some(s) = self.shape(p, &m, in_clip) {
                        out.push(Item::Shape(Box::new(s)));
                    }
                }
                Node::Image(img) => {
                    if !in_clip {
                        if let Some(el) = self.image(img, &m) {
                            out.push(Item::El(el));
                        }
                    }
                }
                Node::Text(t) => self.group(t.flattened(), m, in_clip, &mut out),
            }
        }
        if self.opts.merge_paths {
            merge_adjacent(&mut out);
        }
        out
    }

    fn group(&mut self, cg: &usvg::Group, m: Affine, in_clip: bool, out: &mut Vec<Item>) {
        let t = m.then_after(Affine::from_usvg(cg.transform()));
        if in_clip {
            // Clip paths only use geometry: fold everything into coordinates; a nested clip
            // goes onto each shape.
            let mut items = self.children(cg, t, true);
            if let Some(c) = cg.clip_path() {
                let id = self.clip_def_ref(c);
                for it in &mut items {
                    if let Item::Shape(s) = it {
                        s.extra.push(("clip-path", format!("url(#{id})")));
                        s.refs.push(id.clone());
                    }
                }
            }
            out.extend(items);
            return;
        }
        let opacity = f64::from(cg.opacity().get());
        if has_effects(cg) {
            let saved_ctx = self.ctx;
            self.ctx *= t.max_stretch();
            let mut attrs = Vec::new();
            let mut refs = Vec::new();
            if !t.is_identity() {
                attrs.push(("transform", fmt_transform(&t, self.p)));
            }
            if opacity != 1.0 {
                attrs.push(("opacity", fmt_num(opacity, 3)));
            }
            if let Some(c) = cg.clip_path() {
                let id = self.clip_def_ref(c);
                attrs.push(("clip-path", format!("url(#{id})")));
                refs.push(id);
            }
            if let Some(mk) = cg.mask() {
                let id = self.mask_def_ref(mk);
                attrs.push(("mask", format!("url(#{id})")));
                refs.push(id);
            }
            if cg.blend_mode() != usvg::BlendMode::Normal || cg.isolate() {
                let iso = if cg.isolate() { "isolate" } else { "auto" };
                attrs.push((
                    "style",
                    format!("mix-blend-mode:{};isolation:{iso}", cg.blend_mode()),
                ));
            }
            let children = self.children(cg, Affine::IDENTITY, false);
            self.ctx = saved_ctx;
            out.push(Item::El(El {
                tag: "g",
                attrs,
                children,
                refs,
            }));
            return;
        }
        let (mut children, transform_attr) = if flattenable(cg, &t) {
            (self.children(cg, t, false), None)
        } else {
            let saved_ctx = self.ctx;
            self.ctx *= t.max_stretch();
            let children = self.children(cg, Affine::IDENTITY, false);
            self.ctx = saved_ctx;
            (children, Some(fmt_transform(&t, self.p)))
        };
        if opacity != 1.0 {
            // A lone shape painting only fill or only stroke takes the opacity itself.
            if transform_attr.is_none() && children.len() == 1 {
                if let Item::Shape(s) = &mut children[0] {
                    let has_fill = s.style[0].as_deref().is_some_and(|f| f != "none");
                    let has_stroke = s.style[3].as_deref().is_some_and(|f| f != "none");
                    let idx = match (has_fill, has_stroke) {
                        (true, false) => Some(1),
                        (false, true) => Some(10),
                        _ => None,
                    };
                    if let Some(i) = idx {
                        let cur: f64 = s.style[i].as_deref().unwrap_or("1").parse().unwrap_or(1.0);
                        s.style[i] = Some(fmt_num(cur * opacity, 3));
                        if s.style[i].as_deref() == Some("1") {
                            s.style[i] = Some("1".into());
                        }
                        s.overlap_safe = false;
                        out.append(&mut children);
                        return;
                    }
                }
            }
            let mut attrs = vec![("opacity", fmt_num(opacity, 3))];
            if let Some(ta) = transform_attr {
                attrs.insert(0, ("transform", ta));
            }
            out.push(Item::El(El {
                tag: "g",
                attrs,
                children,
                refs: Vec::new(),
            }));
        } else if let Some(ta) = transform_attr {
            out.push(Item::El(El {
                tag: "g",
                attrs: vec![("transform", ta)],
                children,
                refs: Vec::new(),
            }));
        } else {
            out.append(&mut children);
        }
    }

    fn image(&mut self, img: &usvg::Image, m: &Affine) -> Option<El> {
        if !img.is_visible() {
            return None;
        }
        let (mime, data) = match img.kind() {
            usvg::ImageKind::JPEG(d) => ("image/jpeg", d.as_slice().to_vec()),
            usvg::ImageKind::PNG(d) => ("image/png", d.as_slice().to_vec()),
            usvg::ImageKind::GIF(d) => ("image/gif", d.as_slice().to_vec()),
            usvg::ImageKind::WEBP(d) => ("image/webp", d.as_slice().to_vec()),
            usvg::ImageKind::SVG(tree) => {
                let doc = Doc::build_tree(tree, self.opts, self.refine);
                let text = doc.to_svg_string(&doc.items, &doc.defs_for(&doc.items));
                ("image/svg+xml", text.into_bytes())
            }
        };
        let s = img.size();
        let mut attrs = vec![
            ("width", fmt_num(f64::from(s.width()), self.p + 1)),
            ("height", fmt_num(f64::from(s.height()), self.p + 1)),
            ("preserveAspectRatio", "none".into()),
        ];
        if !m.is_identity() {
            attrs.push(("transform", fmt_transform(m, self.p)));
        }
        match img.rendering_mode() {
            usvg::ImageRendering::OptimizeSpeed => {
                attrs.push(("image-rendering", "optimizeSpeed".into()))
            }
            usvg::ImageRendering::OptimizeQuality => {}
            other => attrs.push((
                "style",
                format!("image-rendering:{}", format!("{other:?}").to_lowercase()),
            )),
        }
        attrs.push(("href", format!("data:{mime};base64,{}", base64(&data))));
        Some(El {
            tag: "image",
            attrs,
            children: Vec::new(),
            refs: Vec::new(),
        })
    }

    fn shape(&mut self, p: &usvg::Path, m: &Affine, in_clip: bool) -> Option<Shape> {
        if !p.is_visible() {
            return None;
        }
        let mut segs = path::from_skia(p.data(), m);
        let scale = m.similarity_scale().unwrap_or(1.0);
        let stroke_width = if in_clip {
            None
        } else {
            p.stroke().map(|s| f64::from(s.width().get()) * scale)
        };
        let (sp, coord_tol) =
            self.shape_precision(&segs, stroke_width, in_clip || p.fill().is_some());
        let quantum = 10f64.powi(-(sp as i32));
        if self.opts.recover_arcs {
            segs = arc::recover_arcs(&segs, (quantum * 0.4).max(1e-9));
        }
        let mut style: Style = Default::default();
        let mut extra = Vec::new();
        let mut refs = Vec::new();
        let mut overlap_safe = false;
        let mut stroke_margin = 0.0;
        let mut keep_dots = false;
        let mut circle_ok = true;
        if in_clip {
            if p.fill()
                .is_some_and(|f| f.rule() == usvg::FillRule::EvenOdd)
            {
                extra.push(("clip-rule", "evenodd".to_string()));
            }
        } else {
            match p.fill() {
                Some(f) => {
                    let (v, r) = self.paint(f.paint(), m);
                    refs.extend(r);
                    style[0] = Some(v);
                    style[1] = Some(fmt_num(f64::from(f.opacity().get()), 3));
                    style[2] = Some(
                        match f.rule() {
                            usvg::FillRule::NonZero => "nonzero",
                            usvg::FillRule::EvenOdd => "evenodd",
                        }
                        .into(),
                    );
                }
                None => style[0] = Some("none".into()),
            }
            match p.stroke() {
                Some(s) => {
                    let (v, r) = self.paint(s.paint(), m);
                    refs.extend(r);
                    let w = f64::from(s.width().get()) * scale;
                    style[3] = Some(v.clone());
                    style[4] = Some(fmt_num(w, sp + 1));
                    let cap = match s.linecap() {
                        usvg::LineCap::Butt => "butt",
                        usvg::LineCap::Round => "round",
                        usvg::LineCap::Square => "square",
                    };
                    // Caps and joins that cannot show are left to inherit anything.
                    let (joins, caps) = match s.dasharray() {
                        Some(_) => (true, true),
                        None => path::stroke_features(&segs),
                    };
                    if caps {
                        style[5] = Some(cap.into());
                    }
                    let join = match s.linejoin() {
                        usvg::LineJoin::Miter => "miter",
                        usvg::LineJoin::MiterClip => "miter-clip",
                        usvg::LineJoin::Round => "round",
                        usvg::LineJoin::Bevel => "bevel",
                    };
                    let ml = f64::from(s.miterlimit().get());
                    if joins {
                        style[6] = Some(join.into());
                        if matches!(
                            s.linejoin(),
                            usvg::LineJoin::Miter | usvg::LineJoin::MiterClip
                        ) {
                            style[7] = Some(fmt_num(ml, 3));
                        }
                    }
                    match s.dasharray() {
                        Some(d) => {
                            let parts: Vec<String> = d
                                .iter()
                                .map(|v| fmt_num(f64::from(*v) * scale, sp + 1))
                                .collect();
                            style[8] = Some(parts.join(" "));
                            style[9] = Some(fmt_num(f64::from(s.dashoffset()) * scale, sp + 1));
                            circle_ok = false;
                        }
                        None => style[8] = Some("none".into()),
                    }
                    style[10] = Some(fmt_num(f64::from(s.opacity().get()), 3));
                    let miter = if style[7].is_some() { ml.max(1.0) } else { 1.0 };
                    stroke_margin = w * miter;
                    keep_dots = cap != "butt";
                    overlap_safe = p.fill().is_none()
                        && matches!(s.paint(), Paint::Color(_))
                        && s.opacity().get() == 1.0
                        && s.dasharray().is_none();
                    if cap != "round" && !segs.iter().any(|s| matches!(s, Seg::Close)) {
                        circle_ok = false;
                    }
                }
                None => style[3] = Some("none".into()),
            }
            if p.fill().is_some() && p.stroke().is_some() {
                style[11] = Some(
                    match p.paint_order() {
                        usvg::PaintOrder::FillAndStroke => "normal",
                        usvg::PaintOrder::StrokeAndFill => "stroke",
                    }
                    .into(),
                );
            }
            style[12] = Some(
                match p.rendering_mode() {
                    usvg::ShapeRendering::OptimizeSpeed => "optimizeSpeed",
                    usvg::ShapeRendering::CrispEdges => "crispEdges",
                    usvg::ShapeRendering::GeometricPrecision => "auto",
                }
                .into(),
            );
        }
        // Below half a unit of the last decimal, simplification is lossless: rounding moves
        // points that much anyway.
        let tol = (self.simplify / self.ctx).max(quantum * 0.5);
        if tol > 0.0 {
            segs = path::simplify(&segs, tol, keep_dots);
            let b = path::bounds(&segs).inflate(stroke_margin / 2.0);
            if b.is_empty() || (!keep_dots && b.width() < tol && b.height() < tol) {
                return None;
            }
        }
        if !segs.iter().any(|s| !matches!(s, Seg::Move(_) | Seg::Close)) {
            return None;
        }
        let b = path::bounds(&segs).inflate(stroke_margin + quantum);
        Some(Shape {
            segs,
            style,
            extra,
            parts: vec![b],
            overlap_safe,
            circle_ok,
            refs,
            p: sp,
            tol: coord_tol * self.ctx,
        })
    }

    /// The decimals of a shape's coordinates and how far they may move (see [`Precision`]);
    /// `segs` are in the local coordinates being written, `stroke_width` and the tolerance in
    /// the same units.
    fn shape_precision(&self, segs: &[Seg], stroke_width: Option<f64>, filled: bool) -> (u32, f64) {
        let Some(render_tol) = self.auto_tol else {
            // Fixed precision, plus the decimals a scaled coordinate system takes away.
            let extra = self.ctx.log10().round().clamp(0.0, 8.0) as u32;
            let p = (self.p + extra).min(8);
            return (p, 0.5 * 10f64.powi(-(p as i32)));
        };
        let ctx = if self.ctx.is_finite() && self.ctx > 0.0 {
            self.ctx
        } else {
            1.0
        };
        let mut t = render_tol / ctx;
        let tf = THICKNESS_FRACTION * self.refine;
        if let Some(w) = stroke_width {
            t = t.min(w * tf);
        }
        if filled {
            t = t.min(precision::fill_thickness(segs) * tf);
        }
        let t = t.max(self.min_tol / ctx);
        (precision::decimals_for(t), t)
    }
}

/// Shapes merged by disjointness are checked part by part; at most this many parts.
const MAX_MERGED_PARTS: usize = 64;

/// Merges adjacent shapes of identical style when the picture cannot change.
fn merge_adjacent(items: &mut Vec<Item>) {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    'next: for it in items.drain(..) {
        if let Item::Shape(s) = &it {
            if !prefers_element(s) {
                // Merge into the latest shape of the same style, moving this one back in
                // painting order over shapes it does not overlap.
                let n = out.len();
                for j in (n.saturating_sub(MERGE_LOOKBACK)..n).rev() {
                    let Item::Shape(prev) = &mut out[j] else {
                        break;
                    };
                    let safe = (prev.overlap_safe && s.overlap_safe) || !overlaps(prev, s);
                    if safe
                        && prev.extra == s.extra
                        && compatible(&prev.style, &s.style)
                        && !prefers_element(prev)
                    {
                        merge_into(prev, s);
                        continue 'next;
                    }
                    if overlaps(prev, s) {
                        break;
                    }
                }
            }
        }
        out.push(it);
    }
    *items = out;
}

/// How far back [`merge_adjacent`] looks for a shape of the same style.
const MERGE_LOOKBACK: usize = 16;

/// Whether any painted part of `a` may touch any of `b` (bounded: many parts count as
/// overlapping).
fn overlaps(a: &Shape, b: &Shape) -> bool {
    a.parts.len() >= MAX_MERGED_PARTS
        || b.parts.len() >= MAX_MERGED_PARTS
        || a.parts
            .iter()
            .any(|x| b.parts.iter().any(|y| x.intersects(y)))
}

/// Styles that paint the same: every property equal or irrelevant to one of the shapes.
fn compatible(a: &Style, b: &Style) -> bool {
    a.iter()
        .zip(b.iter())
        .all(|(x, y)| x == y || x.is_none() || y.is_none())
}

fn merge_into(prev: &mut Shape, s: &Shape) {
    prev.segs.extend_from_slice(&s.segs);
    prev.p = prev.p.max(s.p);
    prev.tol = prev.tol.min(s.tol);
    prev.parts.extend_from_slice(&s.parts);
    prev.circle_ok &= s.circle_ok;
    for (a, b) in prev.style.iter_mut().zip(s.style.iter()) {
        if a.is_none() {
            a.clone_from(b);
        }
    }
    for r in &s.refs {
        if !prev.refs.contains(r) {
            prev.refs.push(r.clone());
        }
    }
}

/// Whether a shape is cheaper as a basic-shape element than as path data (then it is not
/// merged into a neighbouring path).
fn prefers_element(sh: &Shape) -> bool {
    if !sh.circle_ok {
        return false;
    }
    let Some(e) = shapes::element_form(&sh.segs, sh.p) else {
        return false;
    };
    // Merged, the shape costs only its path data.
    let fill_only = sh.style[3].as_deref().is_none_or(|v| v == "none");
    shapes::tag_tokens(&e) < shapes::tag_tokens(&path::encode(&sh.segs, sh.p, fill_only))
}

/// Token estimate of an attribute value (words are single tokens).
fn value_tokens(v: &str) -> usize {
    let mut n = 0;
    let mut prev_alpha = false;
    let mut rest = String::new();
    for ch in v.chars() {
        if ch.is_ascii_alphabetic() {
            if !prev_alpha {
                n += 1;
            }
            prev_alpha = true;
        } else {
            prev_alpha = false;
            rest.push(if ch.is_ascii_alphabetic() { ' ' } else { ch });
        }
    }
    n + path_data_tokens(&rest)
}

fn attr_tokens(name: &str, v: &str) -> usize {
    2 + name.matches('-').count() + 1 + value_tokens(v)
}

impl Doc {
    pub(crate) fn build(svg: &Svg, opts: &CompactOptions) -> Doc {
        Doc::build_tree(svg.tree(), opts, 1.0)
    }

    /// Builds the document; `refine` scales the tolerances of [`Precision::Auto`].
    fn build_tree(tree: &usvg::Tree, opts: &CompactOptions, refine: f64) -> Doc {
        let first = Doc::build_scaled(tree, opts, 1.0, false, refine);
        let auto = matches!(opts.precision, Precision::Auto { .. });
        if !(auto && opts.integer_grid && opts.normalise_viewbox.is_none()) {
            return first;
        }
        // Integer grid: every scale in 1-2-5 steps up to the coarsest at which all shapes'
        // coordinates are integers within their tolerance (below it the thinnest shapes take
        // decimals, but a viewBox under 1000 units writes every coordinate in one digit chunk);
        // the cheapest of those and the unscaled document wins.
        let t_min = first.min_tolerance();
        if !(t_min.is_finite() && t_min > 0.0) {
            return first;
        }
        let need = 1.0 / (2.0 * t_min);
        let Some(i) = GRID_SCALES.iter().position(|s| *s >= need * (1.0 - 1e-9)) else {
            return first;
        };
        let mut best_cost = first.cost_estimate();
        let mut best = first;
        // The coarsest scales are no use (the thin shapes would need decimals there), except the
        // largest that keeps the viewBox under 1000 units.
        let lo = i.saturating_sub(GRID_CANDIDATES - 1).max(1);
        let under_1000 = GRID_SCALES[1..lo]
            .iter()
            .rev()
            .find(|s| doc_side(tree) * **s < 1000.0);
        for &scale in under_1000.into_iter().chain(&GRID_SCALES[lo..=i]) {
            if scale <= 1.0 {
                continue;
            }
            for centre in [false, true] {
                let doc = Doc::build_scaled(tree, opts, scale, centre, refine);
                let cost = doc.cost_estimate();
                if cost < best_cost {
                    best_cost = cost;
                    best = doc;
                }
                if doc_side(tree) * scale < 1000.0 {
                    break;
                }
            }
        }
        best
    }

    /// The smallest coordinate tolerance of any shape, in output user units.
    fn min_tolerance(&self) -> f64 {
        let mut t = f64::INFINITY;
        Doc::for_each_shape(&self.items, &mut |s| t = t.min(s.tol));
        for (_, d) in &self.defs {
            Doc::for_each_shape(&d.children, &mut |s| t = t.min(s.tol));
        }
        t
    }

    /// The cost model's token estimate of the whole document.
    fn cost_estimate(&self) -> usize {
        cost::markup_tokens(&self.to_svg_string(&self.items, &self.defs_for(&self.items)))
    }

    /// Builds the document with the viewBox (after any normalisation) scaled by `grid`.
    fn build_scaled(
        tree: &usvg::Tree,
        opts: &CompactOptions,
        grid: f64,
        centre: bool,
        refine: f64,
    ) -> Doc {
        let size = tree.size();
        let (w, h) = (f64::from(size.width()), f64::from(size.height()));
        // Recover the viewBox from a root group that only maps it.
        let root = tree.root();
        let mut top: &usvg::Group = root;
        let mut vb = (0.0, 0.0, w, h);
        let mut aspect_none = false;
        if root.children().len() == 1 {
            if let Node::Group(g) = &root.children()[0] {
                let t = Affine::from_usvg(g.transform());
                if !has_effects(g)
                    && g.opacity().get() == 1.0
                    && t.b == 0.0
                    && t.c == 0.0
                    && t.a > 0.0
                    && t.d > 0.0
                {
                    vb = (-t.e / t.a, -t.f / t.d, w / t.a, h / t.d);
                    aspect_none = (t.a - t.d).abs() > 1e-6 * t.a.max(t.d);
                    top = g;
                }
            }
        }
        let mut base = Affine::IDENTITY;
        if let Some(n) = opts.normalise_viewbox.filter(|n| n.is_finite() && *n > 0.0) {
            let s = f64::from(n) / vb.2.max(vb.3);
            base = Affine::scale_translate(s, -vb.0 * s, -vb.1 * s);
            vb = (0.0, 0.0, vb.2 * s, vb.3 * s);
        }
        if grid != 1.0 {
            base = Affine::scale_translate(grid, 0.0, 0.0).then_after(base);
            vb = (vb.0 * grid, vb.1 * grid, vb.2 * grid, vb.3 * grid);
        }
        if centre {
            let (cx, cy) = ((vb.0 + vb.2 / 2.0).round(), (vb.1 + vb.3 / 2.0).round());
            base = Affine::scale_translate(1.0, -cx, -cy).then_after(base);
            vb = (vb.0 - cx, vb.1 - cy, vb.2, vb.3);
        }
        let side = vb.2.max(vb.3);
        let mut auto_tol = None;
        let p = match opts.precision {
            Precision::Auto { render_size } => {
                let t = precision::render_tolerance(side, render_size) * refine;
                auto_tol = Some(t);
                precision::decimals_for(t)
            }
            Precision::Decimals(d) => u32::from(d.min(8)),
            Precision::Relative(steps) => {
                let q = side / f64::from(steps.max(1));
                if q > 0.0 && q.is_finite() {
                    (-q.log10()).ceil().clamp(0.0, 8.0) as u32
                } else {
                    2
                }
            }
        };
        let mut b = Builder {
            opts,
            p,
            auto_tol,
            min_tol: (side * MIN_RELATIVE_TOLERANCE).max(f64::MIN_POSITIVE),
            simplify: opts.simplify_tolerance * grid,
            ctx: 1.0,
            refine,
            ids: HashMap::new(),
            defs: Vec::new(),
        };
        let items = if base.is_identity() || flattenable(top, &base) {
            b.children(top, base, false)
        } else {
            b.ctx = base.max_stretch();
            let children = b.children(top, Affine::IDENTITY, false);
            b.ctx = 1.0;
            vec![Item::El(El {
                tag: "g",
                attrs: vec![("transform", fmt_transform(&base, p))],
                children,
                refs: Vec::new(),
            })]
        };
        let vp = p.max(2) + 1;
        let mut root_attrs = vec![
            ("xmlns", "http://www.w3.org/2000/svg".to_string()),
            (
                "viewBox",
                format!(
                    "{} {} {} {}",
                    fmt_num(vb.0, vp),
                    fmt_num(vb.1, vp),
                    fmt_num(vb.2, vp),
                    fmt_num(vb.3, vp)
                ),
            ),
        ];
        if opts.keep_size && ((w - vb.2).abs() > 1e-6 || (h - vb.3).abs() > 1e-6) {
            root_attrs.push(("width", fmt_num(w, vp)));
            root_attrs.push(("height", fmt_num(h, vp)));
        }
        if aspect_none {
            root_attrs.push(("preserveAspectRatio", "none".into()));
        }
        let defs = std::mem::take(&mut b.defs);
        let mut doc = Doc {
            root_attrs,
            hoisted: vec![None; NPROPS],
            defs,
            items,
        };
        if opts.hoist_styles {
            doc.hoist();
        }
        doc
    }

    fn for_each_shape<'s>(items: &'s [Item], f: &mut impl FnMut(&'s Shape)) {
        for it in items {
            match it {
                Item::Shape(s) => f(s),
                Item::El(e) => Doc::for_each_shape(&e.children, f),
            }
        }
    }

    fn hoist(&mut self) {
        let mut tallies: Vec<HashMap<String, usize>> = vec![HashMap::new(); NPROPS];
        let mut visit = |s: &Shape| {
            for (i, v) in s.style.iter().enumerate() {
                if let Some(v) = v {
                    *tallies[i].entry(v.clone()).or_default() += 1;
                }
            }
        };
        Doc::for_each_shape(&self.items, &mut visit);
        for (_, d) in &self.defs {
            Doc::for_each_shape(&d.children, &mut visit);
        }
        let mut shapes = 0usize;
        Doc::for_each_shape(&self.items, &mut |_| shapes += 1);
        let mut hoisted = vec![None; NPROPS];
        for (i, (name, default)) in PROPS.iter().enumerate() {
            let t = &tallies[i];
            let cost_of = |root: &str| -> usize {
                let mut c = if root == *default {
                    0
                } else {
                    attr_tokens(name, root)
                };
                for (v, n) in t {
                    if *v != root {
                        c += n * attr_tokens(name, v);
                    }
                }
                c
            };
            let mut best = (cost_of(default), default.to_string());
            let mut cands: Vec<&String> = t.keys().collect();
            cands.sort();
            for v in cands {
                let c = cost_of(v);
                // On a tie between shapes and root, a document of several shapes keeps the
                // value on the root: one place for the style all its shapes share.
                if c < best.0 || (c == best.0 && best.1 == *default && shapes > 1) {
                    best = (c, v.to_string());
                }
            }
            if best.1 != *default {
                hoisted[i] = Some(best.1);
            }
        }
        self.hoisted = hoisted;
    }

    /// Definitions (transitively) referenced by `items`, in document order.
    pub(crate) fn defs_for(&self, items: &[Item]) -> Vec<usize> {
        let mut need: Vec<String> = Vec::new();
        fn collect(items: &[Item], need: &mut Vec<String>) {
            for it in items {
                match it {
                    Item::Shape(s) => need.extend(s.refs.iter().cloned()),
                    Item::El(e) => {
                        need.extend(e.refs.iter().cloned());
                        collect(&e.children, need);
                    }
                }
            }
        }
        collect(items, &mut need);
        let mut used = vec![false; self.defs.len()];
        while let Some(id) = need.pop() {
            if let Some(i) = self.defs.iter().position(|(d, _)| *d == id) {
                if !used[i] {
                    used[i] = true;
                    let d = &self.defs[i].1;
                    need.extend(d.refs.iter().cloned());
                    collect(&d.children, &mut need);
                }
            }
        }
        (0..self.defs.len()).filter(|i| used[*i]).collect()
    }

    /// The root start tag.
    pub(crate) fn header(&self) -> String {
        let mut s = String::from("<svg");
        for (k, v) in &self.root_attrs {
            let _ = write!(s, " {k}=\"{v}\"");
        }
        for (i, v) in self.hoisted.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(s, " {}=\"{v}\"", PROPS[i].0);
            }
        }
        s.push('>');
        s
    }

    pub(crate) fn def_string(&self, i: usize) -> (String, String) {
        let mut s = String::new();
        self.write_el(&self.defs[i].1, &mut s);
        (self.defs[i].0.clone(), s)
    }

    pub(crate) fn item_string(&self, it: &Item) -> String {
        let mut s = String::new();
        self.write_item(it, &mut s);
        s
    }

    pub(crate) fn to_svg_string(&self, items: &[Item], defs: &[usize]) -> String {
        let mut s = self.header();
        for &i in defs {
            self.write_el(&self.defs[i].1, &mut s);
        }
        for it in items {
            self.write_item(it, &mut s);
        }
        s.push_str("</svg>");
        s
    }

    fn write_item(&self, it: &Item, s: &mut String) {
        match it {
            Item::El(e) => self.write_el(e, s),
            Item::Shape(sh) => self.write_shape(sh, s),
        }
    }

    fn write_el(&self, e: &El, s: &mut String) {
        let _ = write!(s, "<{}", e.tag);
        for (k, v) in &e.attrs {
            let _ = write!(s, " {k}=\"{v}\"");
        }
        if e.children.is_empty() {
            s.push_str("/>");
        } else {
            s.push('>');
            for c in &e.children {
                self.write_item(c, s);
            }
            let _ = write!(s, "</{}>", e.tag);
        }
    }

    fn write_shape(&self, sh: &Shape, s: &mut String) {
        let fill_only = sh.style[3].as_deref().is_none_or(|v| v == "none");
        let path = format!("<path d=\"{}\"", path::encode(&sh.segs, sh.p, fill_only));
        let element = if sh.circle_ok {
            shapes::element_form(&sh.segs, sh.p)
                .filter(|e| shapes::tag_tokens(e) <= shapes::tag_tokens(&path))
        } else {
            None
        };
        let is_element = element.is_some();
        s.push_str(&element.unwrap_or(path));
        for (i, v) in sh.style.iter().enumerate() {
            let Some(v) = v else { continue };
            // A basic shape is one simple subpath: its fill rule cannot matter.
            if is_element && i == 2 {
                continue;
            }
            let inherited = self.hoisted[i].as_deref().unwrap_or(PROPS[i].1);
            if v != inherited {
                let _ = write!(s, " {}=\"{v}\"", PROPS[i].0);
            }
        }
        for (k, v) in &sh.extra {
            let _ = write!(s, " {k}=\"{v}\"");
        }
        s.push_str("/>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_unique() {
        let ids: Vec<String> = (0..800).map(short_id).collect();
        let mut d = ids.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), ids.len());
        assert_eq!(ids[0], "a");
        assert_eq!(ids[26], "aa");
    }

    #[test]
    fn colors_prefer_single_token_names() {
        assert_eq!(fmt_color(usvg::Color::new_rgb(0, 0, 0)), "black");
        assert_eq!(fmt_color(usvg::Color::new_rgb(0x11, 0x22, 0x33)), "#123");
        assert_eq!(fmt_color(usvg::Color::new_rgb(0x12, 0x22, 0x33)), "#122233");
    }

    #[test]
    fn fused_comparison_matches_the_metrics() {
        // Pseudo-random images with partial alpha, and a blank pair.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        let mut a = image::RgbaImage::new(37, 23);
        let mut b = image::RgbaImage::new(37, 23);
        for p in a.pixels_mut().chain(b.pixels_mut()) {
            *p = image::Rgba([next(), next(), next(), next()]);
        }
        let (iou, colour) = ink_iou_and_colour(&a, &b).expect("same size");
        let want_iou = metrics::ink_iou(&a, &b).expect("same size");
        let ch = metrics::channel_mean_abs_error(&a, &b).expect("same size");
        let want_colour = ch[0].max(ch[1]).max(ch[2]);
        assert!((iou - want_iou).abs() < 1e-12, "{iou} vs {want_iou}");
        assert!(
            (colour - want_colour).abs() < 1e-12,
            "{colour} vs {want_colour}"
        );
        let blank = image::RgbaImage::new(4, 4);
        assert_eq!(ink_iou_and_colour(&blank, &blank), Some((1.0, 0.0)));
        assert_eq!(
            ink_iou_and_colour(&blank, &image::RgbaImage::new(4, 5)),
            None
        );
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
