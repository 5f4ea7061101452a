//! Traced curves as data: the path tree with signs, holes and children.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::curve::{self, Seg};
use crate::decompose::RawPath;
use crate::polygon::{self, P2};
use crate::{TraceError, TraceParams};

/// A point in **image coordinates**: `x` to the right, `y` down, origin at the top-left corner
/// of the bitmap, one unit per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal position in pixels.
    pub x: f64,
    /// Vertical position in pixels (down).
    pub y: f64,
}

/// One segment of a closed traced curve. Each segment starts where the previous one ends;
/// the first starts at the end of the last.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Segment {
    /// A corner: a straight line to `vertex`, then a straight line to `end`.
    Corner {
        /// The corner point.
        vertex: Point,
        /// End point.
        end: Point,
    },
    /// A cubic Bézier curve with control points `c1`, `c2`.
    Bezier {
        /// First control point.
        c1: Point,
        /// Second control point.
        c2: Point,
        /// End point.
        end: Point,
    },
}

impl Segment {
    /// The end point of the segment.
    pub fn end(&self) -> Point {
        match *self {
            Segment::Corner { end, .. } | Segment::Bezier { end, .. } => end,
        }
    }
}

/// Whether a path is an outline of black pixels or a hole in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sign {
    /// An outline: black inside (potrace's `+`).
    Plus,
    /// A hole: white inside (potrace's `-`).
    Minus,
}

/// A traced closed curve and the paths nested directly inside it.
///
/// Outlines run clockwise and holes counter-clockwise as drawn in image coordinates
/// (counter-clockwise and clockwise in potrace's y-up coordinates); filling with the non-zero
/// or the even-odd rule both give the traced picture.
///
/// The curve is kept exactly as computed, in potrace's y-up coordinates
/// ([`TracedPath::segments_y_up`]), so that the SVG output rounds exactly like potrace;
/// [`TracedPath::segments`] gives it in image coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedPath {
    /// Outline or hole.
    pub sign: Sign,
    /// Number of pixels enclosed by the path's pixel boundary.
    pub area: u64,
    /// Paths directly inside this one (holes of an outline; outlines inside a hole).
    pub children: Vec<TracedPath>,
    /// The closed curve in potrace coordinates (x right, y up, origin bottom-left).
    segments: Vec<Segment>,
    /// Height of the traced bitmap, for the conversion to image coordinates.
    height: u32,
}

impl TracedPath {
    /// The closed curve in **image coordinates** (x right, y down, origin top-left).
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment> + '_ {
        let h = f64::from(self.height);
        let f = move |p: Point| Point { x: p.x, y: h - p.y };
        self.segments.iter().map(move |s| match *s {
            Segment::Corner { vertex, end } => Segment::Corner {
                vertex: f(vertex),
                end: f(end),
            },
            Segment::Bezier { c1, c2, end } => Segment::Bezier {
                c1: f(c1),
                c2: f(c2),
                end: f(end),
            },
        })
    }

    /// The closed curve in potrace's coordinates: x right, **y up**, origin at the bottom-left
    /// corner of the bitmap (the coordinates of `potrace -s` path data, before quantisation).
    pub fn segments_y_up(&self) -> &[Segment] {
        &self.segments
    }

    /// Number of segments of the curve.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The start (and end) point of the closed curve, in image coordinates.
    pub fn start(&self) -> Option<Point> {
        self.segments().last().map(|s| s.end())
    }
}

/// The result of tracing: a forest of [`TracedPath`]s in potrace's order.
///
/// ```
/// use svgen_trace::{trace, Bitmap, Sign, TraceParams};
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// // A ring: one outline with one hole.
/// let bm = Bitmap::from_fn(9, 9, |x, y| {
///     let inside = |a: u32| (1..8).contains(&a);
///     let hole = |a: u32| (3..6).contains(&a);
///     inside(x) && inside(y) && !(hole(x) && hole(y))
/// })?;
/// let list = trace(&bm, &TraceParams::default())?;
/// let outline = &list.paths()[0];
/// assert_eq!(outline.sign, Sign::Plus);
/// assert_eq!(outline.children.len(), 1);
/// assert_eq!(outline.children[0].sign, Sign::Minus);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathList {
    width: u32,
    height: u32,
    paths: Vec<TracedPath>,
}

impl PathList {
    /// An empty path list for a bitmap of the given size.
    pub fn empty(width: u32, height: u32) -> PathList {
        PathList {
            width,
            height,
            paths: Vec::new(),
        }
    }

    /// Width of the traced bitmap in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height of the traced bitmap in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The top-level paths (outlines not inside any other path), in potrace's order.
    pub fn paths(&self) -> &[TracedPath] {
        &self.paths
    }

    /// Consumes the list, returning its top-level paths.
    pub fn into_paths(self) -> Vec<TracedPath> {
        self.paths
    }

    /// Whether nothing was traced.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// All paths in depth-first order (each path before its children).
    pub fn iter(&self) -> impl Iterator<Item = &TracedPath> {
        let mut stack: Vec<&TracedPath> = self.paths.iter().rev().collect();
        std::iter::from_fn(move || {
            let p = stack.pop()?;
            stack.extend(p.children.iter().rev());
            Some(p)
        })
    }

    /// Total number of paths, at every depth.
    pub fn path_count(&self) -> usize {
        self.iter().count()
    }

    /// Total number of segments over all paths.
    pub fn segment_count(&self) -> usize {
        self.iter().map(TracedPath::segment_count).sum()
    }

    /// Assembles the tree from decomposed paths and their fitted curves (same order).
    pub(crate) fn build(
        width: u32,
        height: u32,
        raw: Vec<RawPath>,
        fitted: Vec<Vec<Seg>>,
    ) -> PathList {
        let to_point = |p: P2| Point { x: p.x, y: p.y };
        let mut nodes: Vec<Option<TracedPath>> = raw
            .iter()
            .zip(fitted)
            .map(|(r, segs)| {
                Some(TracedPath {
                    sign: r.sign,
                    area: r.area.unsigned_abs(),
                    segments: segs
                        .into_iter()
                        .map(|s| match s {
                            Seg::Corner { vertex, end } => Segment::Corner {
                                vertex: to_point(vertex),
                                end: to_point(end),
                            },
                            Seg::Bezier { c1, c2, end } => Segment::Bezier {
                                c1: to_point(c1),
                                c2: to_point(c2),
                                end: to_point(end),
                            },
                        })
                        .collect(),
                    children: Vec::new(),
                    height,
                })
            })
            .collect();
        // Parents always precede their children, so attaching from the back keeps every
        // child list in decomposition order once reversed.
        let mut roots = Vec::new();
        for i in (0..raw.len()).rev() {
            let Some(node) = nodes[i].take() else {
                continue;
            };
            match raw[i].parent {
                Some(p) if p < i => {
                    if let Some(parent) = nodes[p].as_mut() {
                        parent.children.push(node);
                    }
                }
                _ => roots.push(node),
            }
        }
        fn reverse_all(v: &mut Vec<TracedPath>) {
            v.reverse();
            for p in v {
                reverse_all(&mut p.children);
            }
        }
        reverse_all(&mut roots);
        PathList {
            width,
            height,
            paths: roots,
        }
    }
}

/// Fits one decomposed path: optimal polygon, vertex adjustment, smoothing and (optionally)
/// curve optimisation. Returns segments in potrace coordinates.
pub(crate) fn fit_path(raw: &RawPath, params: &TraceParams) -> Vec<Seg> {
    let pt = &raw.points;
    let sums = polygon::Sums::new(pt);
    let lon = polygon::calc_lon(pt);
    let po = polygon::best_polygon(pt, &sums, &lon);
    let mut vertex = polygon::adjust_vertices(pt, &sums, &po);
    if raw.sign == crate::Sign::Minus {
        vertex.reverse();
    }
    let mut c = curve::smooth(&vertex, params.alphamax);
    if params.opticurve {
        c = curve::optimize(&c, params.opttolerance);
    }
    c.segs
}

/// Fits every path, in parallel, reporting progress from 0.1 to 0.99 on the calling thread.
pub(crate) fn fit_all(
    raw: &[RawPath],
    params: &TraceParams,
    progress: &mut impl FnMut(f64) -> bool,
) -> Result<Vec<Vec<Seg>>, TraceError> {
    // Work in chunks of roughly equal total length so progress can be reported between them.
    const CHUNK_POINTS: usize = 1 << 16;
    let total: usize = raw.iter().map(|r| r.points.len()).sum();
    let mut out = Vec::with_capacity(raw.len());
    let mut start = 0usize;
    let mut done = 0usize;
    while start < raw.len() {
        let mut end = start;
        let mut pts = 0usize;
        while end < raw.len() && (end == start || pts + raw[end].points.len() <= CHUNK_POINTS) {
            pts += raw[end].points.len();
            end += 1;
        }
        // On a one-thread pool, fit on the calling thread: handing the chunk to the pool's
        // worker and waiting for it costs two context switches and a wake-up per chunk.
        let chunk: Vec<Vec<Seg>> = if rayon::current_num_threads() > 1 {
            raw[start..end]
                .par_iter()
                .map(|r| fit_path(r, params))
                .collect()
        } else {
            raw[start..end]
                .iter()
                .map(|r| fit_path(r, params))
                .collect()
        };
        out.extend(chunk);
        done += pts;
        start = end;
        if !progress(0.1 + 0.89 * done as f64 / total.max(1) as f64) {
            return Err(TraceError::Cancelled);
        }
    }
    Ok(out)
}
