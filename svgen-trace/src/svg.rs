//! Writing a [`PathList`] as SVG in the same form as `potrace -s` (potrace 1.16).
//!
//! The document uses potrace's coordinate system: the `<svg>` element is `W`×`H` points with
//! `viewBox="0 0 W H"`, and a group transform `translate(0,H) scale(1/unit,-1/unit)` maps the
//! path data — integer coordinates in units of `1/unit` pixel with the y axis pointing up — to
//! the image. Path data use an absolute `M` for every outline, a relative `m` for every hole,
//! relative `c`/`l` commands and `z`, with lines wrapped at 75 columns like potrace.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::path::{PathList, Point, Segment, TracedPath};

/// How paths are grouped into SVG elements (potrace's `--flat` / default / `--group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// The whole image as a single `<path>` (`--flat`).
    Flat,
    /// One `<path>` per outline, holding the outline and its holes (potrace's default).
    #[default]
    Paths,
    /// Like [`Grouping::Paths`], each outline with everything nested inside it wrapped in a
    /// `<g>` (`--group`).
    Group,
}

/// Options of [`PathList::to_svg`]. [`Default`] reproduces `potrace -s`.
///
/// ```
/// use svgen_trace::{svg::Grouping, SvgOptions};
/// let opts = SvgOptions { fill: "#1a2b3c".into(), unit: 1.0, grouping: Grouping::Flat, tight: true };
/// assert_ne!(opts, SvgOptions::default());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SvgOptions {
    /// Fill colour of the shapes (`-C`), any SVG colour; potrace's default is `#000000`.
    pub fill: String,
    /// Quantisation: coordinates are written in units of `1/unit` pixel (`-u`, default 10).
    /// Any positive finite value is accepted; other values fall back to 10.
    pub unit: f64,
    /// Element grouping.
    pub grouping: Grouping,
    /// Crop the document to the bounding box of the curves (`--tight`).
    pub tight: bool,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            fill: "#000000".to_owned(),
            unit: 10.0,
            grouping: Grouping::Paths,
            tight: false,
        }
    }
}

/// Token writer reproducing potrace's line wrapping.
struct Writer {
    out: String,
    column: usize,
    fresh: bool,
    unit: f64,
    /// The current point, in output units.
    cur: (i64, i64),
    last_op: u8,
}

impl Writer {
    /// An empty writer at the start of a line, current point at the origin.
    fn new(unit: f64) -> Writer {
        Writer {
            out: String::new(),
            column: 0,
            fresh: true,
            unit,
            cur: (0, 0),
            last_op: 0,
        }
    }

    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
        match s.rfind('\n') {
            Some(i) => self.column = s.len() - i - 1,
            None => self.column += s.len(),
        }
    }

    /// Starts a new attribute value (no space before the first token).
    fn start(&mut self, s: &str) {
        self.raw(s);
        self.fresh = true;
    }

    fn token(&mut self, t: &str) {
        if !self.fresh && self.column + t.len() + 1 > 75 {
            self.out.push('\n');
            self.column = 0;
        } else if !self.fresh {
            self.out.push(' ');
            self.column += 1;
        }
        self.out.push_str(t);
        self.column += t.len();
        self.fresh = false;
    }

    /// Output units of a point in potrace's y-up coordinates.
    fn q(&self, p: Point) -> (i64, i64) {
        let x = (p.x * self.unit + 0.5).floor();
        let y = (p.y * self.unit + 0.5).floor();
        (x as i64, y as i64)
    }

    fn ship(&mut self, op: u8, nums: &[i64]) {
        let mut first = true;
        for &v in nums {
            // Format into a stack buffer: this runs for every number of the document.
            let mut buf = [0u8; 24];
            let mut i = buf.len();
            let mut m = v.unsigned_abs();
            loop {
                i -= 1;
                buf[i] = b'0' + (m % 10) as u8;
                m /= 10;
                if m == 0 {
                    break;
                }
            }
            if v < 0 {
                i -= 1;
                buf[i] = b'-';
            }
            if first && op != 0 {
                i -= 1;
                buf[i] = op;
            }
            first = false;
            // Only ASCII was written.
            let tok = std::str::from_utf8(&buf[i..]).unwrap_or_default();
            self.token(tok);
        }
    }

    fn rel(&mut self, op: u8, pts: &[Point]) {
        let mut nums = [0i64; 6];
        let mut len = 0;
        let base = self.cur;
        let mut last = base;
        for &p in pts.iter().take(3) {
            let q = self.q(p);
            nums[len] = q.0 - base.0;
            nums[len + 1] = q.1 - base.1;
            len += 2;
            last = q;
        }
        let letter = if self.last_op == op { 0 } else { op };
        self.ship(letter, &nums[..len]);
        self.cur = last;
        self.last_op = op;
    }

    fn curve(&mut self, path: &TracedPath, absolute: bool) {
        let Some(start) = path.segments_y_up().last().map(Segment::end) else {
            return;
        };
        let q = self.q(start);
        if absolute {
            self.ship(b'M', &[q.0, q.1]);
        } else {
            self.ship(b'm', &[q.0 - self.cur.0, q.1 - self.cur.1]);
        }
        self.cur = q;
        self.last_op = b'm';
        for seg in path.segments_y_up() {
            match *seg {
                Segment::Corner { vertex, end } => {
                    self.rel(b'l', &[vertex]);
                    self.rel(b'l', &[end]);
                }
                Segment::Bezier { c1, c2, end } => self.rel(b'c', &[c1, c2, end]),
            }
        }
        self.out.push('z');
        self.column += 1;
    }

    /// Potrace's default layout: per outline a `<path>` with its holes, then recursion into
    /// the outlines inside the holes.
    fn tree(&mut self, list: &[TracedPath], grouping: Grouping) {
        for p in list {
            if grouping == Grouping::Group {
                self.raw("<g>\n");
            }
            if grouping != Grouping::Flat {
                self.start("<path d=\"");
            }
            self.curve(p, true);
            for hole in &p.children {
                self.curve(hole, false);
            }
            if grouping != Grouping::Flat {
                self.raw("\"/>\n");
            }
            for hole in &p.children {
                self.tree(&hole.children, grouping);
            }
            if grouping == Grouping::Group {
                self.raw("</g>\n");
            }
        }
    }
}

/// Bounding box `(xmin, ymin, xmax, ymax)` of all curves, in potrace's y-up pixel coordinates.
fn bbox(list: &PathList) -> Option<(f64, f64, f64, f64)> {
    let mut bb: Option<(f64, f64, f64, f64)> = None;
    let mut add = |p: Point| {
        let (x, y) = (p.x, p.y);
        bb = Some(match bb {
            None => (x, y, x, y),
            Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
        });
    };
    for path in list.iter() {
        let segs = path.segments_y_up();
        let Some(mut cur) = segs.last().map(Segment::end) else {
            continue;
        };
        for seg in segs {
            match *seg {
                Segment::Corner { vertex, end } => {
                    add(vertex);
                    add(end);
                }
                Segment::Bezier { c1, c2, end } => {
                    add(end);
                    for t in bezier_extrema(cur.x, c1.x, c2.x, end.x)
                        .into_iter()
                        .chain(bezier_extrema(cur.y, c1.y, c2.y, end.y))
                        .flatten()
                    {
                        add(bezier_at(t, cur, c1, c2, end));
                    }
                }
            }
            cur = seg.end();
        }
    }
    bb
}

fn bezier_at(t: f64, p0: Point, p1: Point, p2: Point, p3: Point) -> Point {
    let s = 1.0 - t;
    let f = |a: f64, b: f64, c: f64, d: f64| {
        s * s * s * a + 3.0 * s * s * t * b + 3.0 * s * t * t * c + t * t * t * d
    };
    Point {
        x: f(p0.x, p1.x, p2.x, p3.x),
        y: f(p0.y, p1.y, p2.y, p3.y),
    }
}

/// Parameters in (0, 1) where a 1-d cubic Bézier has a derivative of zero.
fn bezier_extrema(a: f64, b: f64, c: f64, d: f64) -> [Option<f64>; 2] {
    // derivative / 3 = A t² + B t + C
    let qa = -a + 3.0 * b - 3.0 * c + d;
    let qb = 2.0 * (a - 2.0 * b + c);
    let qc = b - a;
    let inside = |t: f64| (t > 0.0 && t < 1.0).then_some(t);
    if qa.abs() < 1e-12 {
        if qb.abs() < 1e-12 {
            return [None, None];
        }
        return [inside(-qc / qb), None];
    }
    let disc = qb * qb - 4.0 * qa * qc;
    if disc < 0.0 {
        return [None, None];
    }
    let r = disc.sqrt();
    [
        inside((-qb + r) / (2.0 * qa)),
        inside((-qb - r) / (2.0 * qa)),
    ]
}

impl PathList {
    /// Writes the paths as an SVG document, in the same form and coordinate system as
    /// `potrace -s` (see the [module documentation](crate::svg)).
    ///
    /// ```
    /// use svgen_trace::{trace, Bitmap, SvgOptions, TraceParams};
    /// # fn main() -> Result<(), svgen_trace::TraceError> {
    /// let bm = Bitmap::from_fn(6, 5, |x, y| (1..4).contains(&x) && (1..4).contains(&y))?;
    /// let svg = trace(&bm, &TraceParams::default())?.to_svg(&SvgOptions::default());
    /// assert!(svg.contains(r#"width="6.000000pt" height="5.000000pt" viewBox="0 0 6.000000 5.000000""#));
    /// assert!(svg.contains(r#"<g transform="translate(0.000000,5.000000) scale(0.100000,-0.100000)""#));
    /// # Ok(()) }
    /// ```
    pub fn to_svg(&self, opts: &SvgOptions) -> String {
        let unit = if opts.unit.is_finite() && opts.unit > 0.0 {
            opts.unit
        } else {
            10.0
        };
        let (w, h) = (f64::from(self.width()), f64::from(self.height()));
        let (x0, y0, x1, y1) = if opts.tight {
            // Like potrace, an empty image keeps its full size.
            bbox(self).unwrap_or((0.0, 0.0, w, h))
        } else {
            (0.0, 0.0, w, h)
        };
        let (dw, dh) = (x1 - x0, y1 - y0);
        let mut wr = Writer::new(unit);
        wr.raw(concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 20010904//EN\"\n",
            " \"http://www.w3.org/TR/2001/REC-SVG-20010904/DTD/svg10.dtd\">\n",
            "<svg version=\"1.0\" xmlns=\"http://www.w3.org/2000/svg\"\n"
        ));
        wr.raw(&format!(
            " width=\"{dw:.6}pt\" height=\"{dh:.6}pt\" viewBox=\"0 0 {dw:.6} {dh:.6}\"\n \
             preserveAspectRatio=\"xMidYMid meet\">\n"
        ));
        wr.raw(&format!(
            "<g transform=\"translate({:.6},{:.6}) scale({:.6},{:.6})\"\nfill=\"{}\" stroke=\"none\">\n",
            -x0 + 0.0,
            y1,
            1.0 / unit,
            -1.0 / unit,
            xml_escape(&opts.fill)
        ));
        if opts.grouping == Grouping::Flat {
            // (An empty image gives an empty path, as in potrace.)
            wr.start("<path d=\"");
            wr.tree(self.paths(), Grouping::Flat);
            wr.raw("\"/>\n");
        } else {
            // Every top-level path starts on a fresh line with an absolute moveto, so the
            // paths can be written independently, in parallel, and concatenated.
            let write = |p: &TracedPath| {
                let mut w = Writer::new(unit);
                w.tree(std::slice::from_ref(p), opts.grouping);
                w.out
            };
            // As in tracing, a one-thread pool writes on the calling thread.
            let parts: Vec<String> = if rayon::current_num_threads() > 1 {
                self.paths().par_iter().map(write).collect()
            } else {
                self.paths().iter().map(write).collect()
            };
            wr.out.reserve(parts.iter().map(String::len).sum());
            for part in parts {
                wr.out.push_str(&part);
            }
        }
        wr.raw("</g>\n</svg>\n");
        wr.out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
