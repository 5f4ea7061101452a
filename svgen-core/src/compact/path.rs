//! Path geometry for the compact writer: conversion from usvg, circular-arc recovery,
//! simplification and the token-aware path-data encoder.

use super::arc::{arc_center, ArcSeg};
use super::cost::{needs_separator, path_data_tokens};

/// A point in output user units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pt {
    pub x: f64,
    pub y: f64,
}

impl Pt {
    pub fn new(x: f64, y: f64) -> Pt {
        Pt { x, y }
    }
    pub(crate) fn sub(self, o: Pt) -> Pt {
        Pt::new(self.x - o.x, self.y - o.y)
    }
    pub(crate) fn add(self, o: Pt) -> Pt {
        Pt::new(self.x + o.x, self.y + o.y)
    }
    pub(crate) fn scale(self, s: f64) -> Pt {
        Pt::new(self.x * s, self.y * s)
    }
    pub(crate) fn len(self) -> f64 {
        self.x.hypot(self.y)
    }
    pub(crate) fn dot(self, o: Pt) -> f64 {
        self.x * o.x + self.y * o.y
    }
    pub(crate) fn cross(self, o: Pt) -> f64 {
        self.x * o.y - self.y * o.x
    }
    pub(crate) fn dist(self, o: Pt) -> f64 {
        self.sub(o).len()
    }
}

/// A 2-D affine map `x' = a x + c y + e`, `y' = b x + d y + f` (SVG `matrix(a b c d e f)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub e: f64,
    pub f: f64,
}

impl Affine {
    pub const IDENTITY: Affine = Affine {
        a: 1.0,
        b: 0.0,
        c: 0.0,
        d: 1.0,
        e: 0.0,
        f: 0.0,
    };

    pub fn from_usvg(t: usvg::Transform) -> Affine {
        Affine {
            a: f64::from(t.sx),
            b: f64::from(t.ky),
            c: f64::from(t.kx),
            d: f64::from(t.sy),
            e: f64::from(t.tx),
            f: f64::from(t.ty),
        }
    }

    pub fn scale_translate(s: f64, tx: f64, ty: f64) -> Affine {
        Affine {
            a: s,
            b: 0.0,
            c: 0.0,
            d: s,
            e: tx,
            f: ty,
        }
    }

    /// `self ∘ other`: apply `other` first, then `self`.
    pub fn then_after(self, other: Affine) -> Affine {
        Affine {
            a: self.a * other.a + self.c * other.b,
            b: self.b * other.a + self.d * other.b,
            c: self.a * other.c + self.c * other.d,
            d: self.b * other.c + self.d * other.d,
            e: self.a * other.e + self.c * other.f + self.e,
            f: self.b * other.e + self.d * other.f + self.f,
        }
    }

    pub fn apply(&self, p: Pt) -> Pt {
        Pt::new(
            self.a * p.x + self.c * p.y + self.e,
            self.b * p.x + self.d * p.y + self.f,
        )
    }

    /// The inverse map, `None` when singular.
    pub fn inverse(&self) -> Option<Affine> {
        let det = self.a * self.d - self.b * self.c;
        if det.abs() <= f64::MIN_POSITIVE || !det.is_finite() {
            return None;
        }
        let (a, b, c, d) = (self.d / det, -self.b / det, -self.c / det, self.a / det);
        Some(Affine {
            a,
            b,
            c,
            d,
            e: -(a * self.e + c * self.f),
            f: -(b * self.e + d * self.f),
        })
    }

    /// The largest factor by which the map stretches a length (its largest singular value).
    pub fn max_stretch(&self) -> f64 {
        let p = self.a * self.a + self.b * self.b + self.c * self.c + self.d * self.d;
        let det = self.a * self.d - self.b * self.c;
        let disc = (p * p - 4.0 * det * det).max(0.0).sqrt();
        ((p + disc) / 2.0).sqrt()
    }

    /// The exact bit patterns of the six coefficients (a hash key).
    pub fn bits(&self) -> [u64; 6] {
        [self.a, self.b, self.c, self.d, self.e, self.f].map(f64::to_bits)
    }

    pub fn is_identity(&self) -> bool {
        *self == Affine::IDENTITY
    }

    /// The uniform scale factor when the map is a similarity (rotation, uniform scale,
    /// translation, optionally mirrored), else `None`.
    pub fn similarity_scale(&self) -> Option<f64> {
        let sx = self.a.hypot(self.b);
        let sy = self.c.hypot(self.d);
        let ortho = (self.a * self.c + self.b * self.d).abs();
        let tol = 1e-6 * sx.max(sy).max(1e-12);
        if (sx - sy).abs() <= tol && ortho <= tol && sx > 0.0 {
            Some(sx)
        } else {
            None
        }
    }
}

/// One path segment in output user units.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seg {
    Move(Pt),
    Line(Pt),
    Quad(Pt, Pt),
    Cubic(Pt, Pt, Pt),
    Arc(ArcSeg),
    Close,
}

/// Axis-aligned bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Bounds {
    pub fn empty() -> Bounds {
        Bounds {
            x0: f64::INFINITY,
            y0: f64::INFINITY,
            x1: f64::NEG_INFINITY,
            y1: f64::NEG_INFINITY,
        }
    }
    pub fn add(&mut self, p: Pt) {
        self.x0 = self.x0.min(p.x);
        self.y0 = self.y0.min(p.y);
        self.x1 = self.x1.max(p.x);
        self.y1 = self.y1.max(p.y);
    }
    pub fn is_empty(&self) -> bool {
        self.x0 > self.x1 || self.y0 > self.y1
    }
    pub fn inflate(&self, m: f64) -> Bounds {
        Bounds {
            x0: self.x0 - m,
            y0: self.y0 - m,
            x1: self.x1 + m,
            y1: self.y1 + m,
        }
    }
    pub fn intersects(&self, o: &Bounds) -> bool {
        !(self.is_empty() || o.is_empty())
            && self.x0 <= o.x1
            && o.x0 <= self.x1
            && self.y0 <= o.y1
            && o.y0 <= self.y1
    }
    pub fn width(&self) -> f64 {
        (self.x1 - self.x0).max(0.0)
    }
    pub fn height(&self) -> f64 {
        (self.y1 - self.y0).max(0.0)
    }
}

/// Converts a tiny-skia path through `m` into segments.
pub(crate) fn from_skia(path: &usvg::tiny_skia_path::Path, m: &Affine) -> Vec<Seg> {
    use usvg::tiny_skia_path::PathSegment as S;
    let p = |q: usvg::tiny_skia_path::Point| m.apply(Pt::new(f64::from(q.x), f64::from(q.y)));
    path.segments()
        .map(|s| match s {
            S::MoveTo(a) => Seg::Move(p(a)),
            S::LineTo(a) => Seg::Line(p(a)),
            S::QuadTo(c, a) => Seg::Quad(p(c), p(a)),
            S::CubicTo(c1, c2, a) => Seg::Cubic(p(c1), p(c2), p(a)),
            S::Close => Seg::Close,
        })
        .collect()
}

/// The end point of a segment, given the current point and subpath start.
fn end_point(s: &Seg, start: Pt) -> Option<Pt> {
    match *s {
        Seg::Move(p) | Seg::Line(p) | Seg::Quad(_, p) | Seg::Cubic(_, _, p) => Some(p),
        Seg::Arc(a) => Some(a.to),
        Seg::Close => Some(start),
    }
}

/// Unit tangents of a segment from `cur` at its start and at its end (`None` for a
/// zero-length segment).
fn tangents(s: &Seg, cur: Pt, start: Pt) -> Option<(Pt, Pt)> {
    let unit = |v: Pt| {
        let l = v.len();
        (l > 1e-12 && l.is_finite()).then(|| v.scale(1.0 / l))
    };
    let first = |cands: &[Pt]| cands.iter().find_map(|v| unit(*v));
    match *s {
        Seg::Move(_) => None,
        Seg::Line(p) => unit(p.sub(cur)).map(|t| (t, t)),
        Seg::Close => unit(start.sub(cur)).map(|t| (t, t)),
        Seg::Quad(c, p) => Some((
            first(&[c.sub(cur), p.sub(cur)])?,
            first(&[p.sub(c), p.sub(cur)])?,
        )),
        Seg::Cubic(c1, c2, p) => Some((
            first(&[c1.sub(cur), c2.sub(cur), p.sub(cur)])?,
            first(&[p.sub(c2), p.sub(c1), p.sub(cur)])?,
        )),
        Seg::Arc(a) => {
            let dir = if a.sweep { 1.0 } else { -1.0 };
            let t0 = a.param(cur);
            let t1 = t0 + dir * a.angle;
            let d = |t: f64| {
                let (s, c) = a.rot.sin_cos();
                let (x, y) = (-a.rx * t.sin() * dir, a.ry * t.cos() * dir);
                Pt::new(c * x - s * y, s * x + c * y)
            };
            Some((unit(d(t0))?, unit(d(t1))?))
        }
    }
}

/// What of a stroke's style can show: `(joins, caps)`. Joins show where two segments of a
/// subpath meet at an angle (more than half a degree), caps at the ends of open subpaths.
pub(crate) fn stroke_features(segs: &[Seg]) -> (bool, bool) {
    let smooth = |a: Pt, b: Pt| a.dot(b) >= (0.5f64).to_radians().cos();
    let (mut joins, mut caps) = (false, false);
    let mut cur = Pt::new(0.0, 0.0);
    let mut start = cur;
    // First tangent of the subpath, last tangent so far, and whether anything was drawn.
    let mut first: Option<Pt> = None;
    let mut last: Option<Pt> = None;
    let mut open = false;
    for s in segs {
        match *s {
            Seg::Move(p) => {
                if open {
                    caps = true;
                }
                start = p;
                cur = p;
                first = None;
                last = None;
                open = false;
            }
            _ => {
                if let Some((t0, t1)) = tangents(s, cur, start) {
                    if let Some(l) = last {
                        joins |= !smooth(l, t0);
                    }
                    first.get_or_insert(t0);
                    last = Some(t1);
                }
                open = true;
                if let Seg::Close = s {
                    // The closing join, back into the first segment.
                    if let (Some(l), Some(f)) = (last, first) {
                        joins |= !smooth(l, f);
                    }
                    open = false;
                    last = None;
                    first = None;
                }
                cur = end_point(s, start).unwrap_or(cur);
            }
        }
    }
    (joins, caps || open)
}

/// Conservative bounds of the segments (control points included).
pub(crate) fn bounds(segs: &[Seg]) -> Bounds {
    let mut b = Bounds::empty();
    for s in segs {
        match *s {
            Seg::Move(p) | Seg::Line(p) => b.add(p),
            Seg::Quad(c, p) => {
                b.add(c);
                b.add(p);
            }
            Seg::Cubic(c1, c2, p) => {
                b.add(c1);
                b.add(c2);
                b.add(p);
            }
            Seg::Arc(a) => {
                let r = a.rx.max(a.ry);
                b.add(a.to);
                b.add(a.center.add(Pt::new(r, r)));
                b.add(a.center.sub(Pt::new(r, r)));
            }
            Seg::Close => {}
        }
    }
    b
}

/// Simplifies geometry within `tol` user units: flat curves become lines, near-collinear
/// line runs are merged, and subpaths smaller than `tol` in both directions are dropped
/// (`keep_dots` keeps them, for round-capped strokes where a tiny subpath paints a dot).
pub(crate) fn simplify(segs: &[Seg], tol: f64, keep_dots: bool) -> Vec<Seg> {
    if tol <= 0.0 {
        return segs.to_vec();
    }
    // Split into subpaths.
    let mut subpaths: Vec<Vec<Seg>> = Vec::new();
    for s in segs {
        if matches!(s, Seg::Move(_)) || subpaths.is_empty() {
            subpaths.push(Vec::new());
        }
        if let Some(sp) = subpaths.last_mut() {
            sp.push(*s);
        }
    }
    let mut out = Vec::with_capacity(segs.len());
    for sp in subpaths {
        let b = bounds(&sp);
        if !keep_dots && b.width() < tol && b.height() < tol {
            continue;
        }
        let mut cur = Pt::new(0.0, 0.0);
        let mut start = cur;
        // First pass: flat curves to lines.
        let mut flat = Vec::with_capacity(sp.len());
        for s in &sp {
            let s2 = match *s {
                Seg::Cubic(c1, c2, p)
                    if seg_dist(c1, cur, p) <= tol && seg_dist(c2, cur, p) <= tol =>
                {
                    Seg::Line(p)
                }
                Seg::Quad(c, p) if seg_dist(c, cur, p) <= tol => Seg::Line(p),
                other => other,
            };
            if let Seg::Move(p) = s2 {
                start = p;
            }
            cur = end_point(&s2, start).unwrap_or(cur);
            flat.push(s2);
        }
        // Second pass: merge near-collinear line runs.
        let mut i = 0;
        let mut cur = Pt::new(0.0, 0.0);
        let mut start = cur;
        while i < flat.len() {
            if let Seg::Line(_) = flat[i] {
                let anchor = cur;
                let mut pts = Vec::new();
                let mut j = i;
                while let Some(Seg::Line(p)) = flat.get(j) {
                    pts.push(*p);
                    j += 1;
                }
                let mut k = 0;
                let mut a = anchor;
                while k < pts.len() {
                    let best = k + sleeve(a, &pts[k..], tol);
                    out.push(Seg::Line(pts[best]));
                    a = pts[best];
                    k = best + 1;
                }
                cur = a;
                i = j;
                continue;
            }
            let s = flat[i];
            if let Seg::Move(p) = s {
                start = p;
            }
            cur = end_point(&s, start).unwrap_or(cur);
            out.push(s);
            i += 1;
        }
    }
    out
}

/// How many of the polyline points `pts` (after the anchor `a`) one line from `a` can replace,
/// minus one: the index of the farthest point `e` such that every point up to it lies within
/// `tol` of the segment `a`–`pts[e]`. Linear time: the directions from `a` that pass within
/// `tol` of every point so far form a cone that only narrows (sleeve fitting); a point that
/// comes back towards the anchor ends the run.
fn sleeve(a: Pt, pts: &[Pt], tol: f64) -> usize {
    let mut best = 0;
    let mut base: Option<Pt> = None;
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
    let mut far = 0.0f64;
    for (e, q) in pts.iter().enumerate() {
        let v = q.sub(a);
        let dist = v.len();
        if !dist.is_finite() || dist < far {
            break;
        }
        far = dist;
        if dist <= tol {
            // Within tolerance of the anchor: no constraint on the direction.
            if base.is_none() {
                best = e;
            }
            continue;
        }
        let b = *base.get_or_insert(v.scale(1.0 / dist));
        let ang = b.cross(v).atan2(b.dot(v));
        if ang < lo || ang > hi {
            break;
        }
        best = e;
        let half = (tol / dist).asin();
        lo = lo.max(ang - half);
        hi = hi.min(ang + half);
    }
    best
}

/// Distance from `p` to the segment `a`–`b`.
fn seg_dist(p: Pt, a: Pt, b: Pt) -> f64 {
    let ab = b.sub(a);
    let l2 = ab.dot(ab);
    if l2 <= f64::EPSILON {
        return p.dist(a);
    }
    let t = (p.sub(a).dot(ab) / l2).clamp(0.0, 1.0);
    p.dist(a.add(ab.scale(t)))
}

/// Fixed-point number formatting: `n` units of `10^-p`.
pub(crate) fn fmt_units(n: i64, p: u32) -> String {
    if p == 0 {
        return n.to_string();
    }
    let neg = n < 0;
    let a = n.unsigned_abs();
    let div = 10u64.pow(p);
    let int = a / div;
    let frac = a % div;
    let mut s = String::new();
    if neg && a != 0 {
        s.push('-');
    }
    if frac == 0 {
        s.push_str(&int.to_string());
        return s;
    }
    if int != 0 {
        s.push_str(&int.to_string());
    }
    s.push('.');
    let f = format!("{:0width$}", frac, width = p as usize);
    s.push_str(f.trim_end_matches('0'));
    s
}

/// Quantizes a coordinate to `10^-p` units; non-finite values become 0 and huge values are
/// clamped so that the fixed-point arithmetic cannot overflow.
pub(crate) fn quantize(v: f64, p: u32) -> i64 {
    if !v.is_finite() {
        return 0;
    }
    let s = v * 10f64.powi(p as i32);
    s.round().clamp(-1e15, 1e15) as i64
}

type IPt = (i64, i64);

#[derive(Clone, Copy)]
enum Tok {
    /// A coordinate in units of the last decimal.
    Num(i64),
    /// A number with its own decimals (arc rotation in degrees).
    Fixed(i64, u32),
    Flag(bool),
}

/// State of the path-data encoder.
struct Enc {
    p: u32,
    out: String,
    cur: IPt,
    start: IPt,
    /// Command an implicit repetition would mean.
    implicit: Option<char>,
    last_byte: Option<u8>,
    last_has_dot: bool,
    last_was_flag: bool,
    prev_c2: Option<IPt>,
    prev_qc: Option<IPt>,
    drawn_in_subpath: bool,
}

impl Enc {
    fn render(&self, letter: Option<char>, toks: &[Tok]) -> (String, usize, Tail) {
        let mut s = String::new();
        let mut last = self.last_byte;
        let mut has_dot = self.last_has_dot;
        let mut was_flag = self.last_was_flag;
        let mut cost_adjust = 0usize;
        if let Some(l) = letter {
            if matches!(l, 'm' | 'M') && self.last_byte == Some(b'z') {
                cost_adjust = 1; // `zm` is one token
            }
            s.push(l);
            last = Some(l as u8);
            was_flag = false;
        }
        for t in toks {
            match *t {
                Tok::Num(_) | Tok::Fixed(..) => {
                    let num = match *t {
                        Tok::Fixed(n, d) => fmt_units(n, d),
                        Tok::Num(n) => fmt_units(n, self.p),
                        Tok::Flag(_) => String::new(),
                    };
                    if !was_flag && needs_separator(last, has_dot, &num) {
                        s.push(' ');
                    }
                    s.push_str(&num);
                    has_dot = num.contains('.');
                    last = num.bytes().last();
                    was_flag = false;
                }
                Tok::Flag(f) => {
                    if !was_flag && last.is_some_and(|b| b.is_ascii_digit() || b == b'.') {
                        s.push(' ');
                    }
                    s.push(if f { '1' } else { '0' });
                    last = Some(if f { b'1' } else { b'0' });
                    has_dot = false;
                    was_flag = true;
                }
            }
        }
        let cost = path_data_tokens(&s).saturating_sub(cost_adjust);
        (
            s,
            cost,
            Tail {
                last,
                has_dot,
                was_flag,
            },
        )
    }

    /// Emits the cheapest of the candidate spellings of one segment.
    fn emit(&mut self, cands: &[(char, Vec<Tok>)]) {
        let mut best: Option<(String, usize, Tail, char)> = None;
        for (l, toks) in cands {
            let mut opts = vec![Some(*l)];
            if self.implicit == Some(*l) {
                opts.push(None);
            }
            for o in opts {
                let (s, c, tail) = self.render(o, toks);
                let better = match &best {
                    None => true,
                    Some((bs, bc, _, _)) => c < *bc || (c == *bc && s.len() < bs.len()),
                };
                if better {
                    best = Some((s, c, tail, *l));
                }
            }
        }
        let Some((s, _, tail, l)) = best else { return };
        self.out.push_str(&s);
        self.last_byte = tail.last;
        self.last_has_dot = tail.has_dot;
        self.last_was_flag = tail.was_flag;
        self.implicit = Some(match l {
            'M' => 'L',
            'm' => 'l',
            other => other,
        });
    }
}

/// What the encoder needs to know about the text written so far.
#[derive(Clone, Copy)]
struct Tail {
    last: Option<u8>,
    has_dot: bool,
    was_flag: bool,
}

/// Emits an arc. The end points are rounded first; near half turns the centre of the rounded
/// arc is very sensitive to rounding, so the radii and the large-arc flag are chosen to keep the
/// drawn curve where it was (centre shift plus radius change), and arcs that still drift are
/// split in two. The rotation (ellipses only) gets the fewest decimals of a degree that move no
/// point by more than half a unit.
fn emit_arc(e: &mut Enc, a: &ArcSeg, depth: u32) {
    use std::f64::consts::PI;
    let p = e.p;
    let unit = 10f64.powi(-(p as i32));
    let t = (quantize(a.to.x, p), quantize(a.to.y, p));
    if t == e.cur {
        return;
    }
    let fs = Pt::new(e.cur.0 as f64 * unit, e.cur.1 as f64 * unit);
    let fe = Pt::new(t.0 as f64 * unit, t.1 as f64 * unit);
    let circle = (a.rx - a.ry).abs() <= unit * 0.5;
    let (rot_units, rot_decimals) = if circle {
        (0, 0)
    } else {
        let deg = a.rot.to_degrees();
        let spread = (a.rx - a.ry).abs();
        (0..=4u32)
            .map(|d| (quantize(deg, d), d))
            .find(|&(q, d)| {
                let moved = (q as f64 / 10f64.powi(d as i32) - deg).abs().to_radians() * spread;
                moved <= unit * 0.5
            })
            .unwrap_or((quantize(deg, 4), 4))
    };
    let rot = (rot_units as f64 / 10f64.powi(rot_decimals as i32)).to_radians();
    let (rxq, ryq) = if circle {
        let r = quantize((a.rx + a.ry) / 2.0, p);
        (r, r)
    } else {
        (quantize(a.rx, p), quantize(a.ry, p))
    };
    let steps: &[i64] = if circle {
        &[0, -1, 1, -2, 2]
    } else {
        &[0, -1, 1]
    };
    let mut best: Option<(f64, i64, i64, bool)> = None;
    // Exact radii first: ties keep them.
    for &kx in steps {
        for &ky in steps {
            if circle && ky != kx {
                continue;
            }
            let (rx, ry) = (rxq + kx, ryq + ky);
            if rx <= 0 || ry <= 0 {
                continue;
            }
            for large in [a.large, !a.large] {
                let (rxf, ryf) = (rx as f64 * unit, ry as f64 * unit);
                let (c, sx, sy) = arc_center(fs, fe, rxf, ryf, rot, large, a.sweep);
                // The drawn arc must also run the same way round (same side as the true one).
                let drawn = ArcSeg {
                    rx: sx,
                    ry: sy,
                    rot,
                    center: c,
                    ..*a
                };
                let (t0, t1) = (drawn.param(fs), drawn.param(fe));
                let delta = if a.sweep { t1 - t0 } else { t0 - t1 }.rem_euclid(2.0 * PI);
                let err = c.dist(a.center)
                    + (sx - a.rx).abs()
                    + (sy - a.ry).abs()
                    + (delta - a.angle).abs() * a.rx.max(a.ry);
                if best.is_none_or(|(b, ..)| err < b) {
                    best = Some((err, rx, ry, large));
                }
            }
        }
    }
    let Some((err, rx, ry, large)) = best else {
        e.emit(&[
            ('L', vec![Tok::Num(t.0), Tok::Num(t.1)]),
            ('l', vec![Tok::Num(t.0 - e.cur.0), Tok::Num(t.1 - e.cur.1)]),
        ]);
        e.cur = t;
        e.drawn_in_subpath = true;
        return;
    };
    if err > 4.0 * unit && depth < 3 && a.angle > 0.2 {
        // Split at the middle of the true arc.
        let mid = a.midpoint(fs);
        let half = ArcSeg {
            large: false,
            angle: a.angle / 2.0,
            to: mid,
            ..*a
        };
        emit_arc(e, &half, depth + 1);
        let half2 = ArcSeg {
            large: false,
            angle: a.angle / 2.0,
            ..*a
        };
        emit_arc(e, &half2, depth + 1);
        return;
    }
    let head = [
        Tok::Num(rx),
        Tok::Num(ry),
        Tok::Fixed(rot_units, rot_decimals),
        Tok::Flag(large),
        Tok::Flag(a.sweep),
    ];
    let mut abs = head.to_vec();
    abs.extend([Tok::Num(t.0), Tok::Num(t.1)]);
    let mut rel = head.to_vec();
    rel.extend([Tok::Num(t.0 - e.cur.0), Tok::Num(t.1 - e.cur.1)]);
    e.emit(&[('A', abs), ('a', rel)]);
    e.cur = t;
    e.drawn_in_subpath = true;
}

/// Encodes segments as SVG path data with `p` decimals, choosing per segment the spelling
/// (absolute/relative, `H`/`V`/`S`/`T` shorthands, implicit repetition) with the fewest cl100k
/// tokens.
///
/// `fill_only` shapes (no stroke, and clip geometry) are closed implicitly when filled, so a
/// final line back to the subpath start and a final `z` are left out.
pub(crate) fn encode(segs: &[Seg], p: u32, fill_only: bool) -> String {
    let q = |pt: Pt| (quantize(pt.x, p), quantize(pt.y, p));
    let mut e = Enc {
        p,
        out: String::new(),
        cur: (0, 0),
        start: (0, 0),
        implicit: None,
        last_byte: None,
        last_has_dot: false,
        last_was_flag: false,
        prev_c2: None,
        prev_qc: None,
        drawn_in_subpath: false,
    };
    let n = segs.len();
    let mut i = 0;
    while i < n {
        let s = segs[i];
        let next_is_close = matches!(segs.get(i + 1), Some(Seg::Close));
        match s {
            Seg::Move(pt) => {
                // Consecutive moves: only the last one matters.
                if matches!(segs.get(i + 1), Some(Seg::Move(_))) {
                    i += 1;
                    continue;
                }
                // A trailing move draws nothing.
                if i + 1 == n {
                    break;
                }
                let t = q(pt);
                let (dx, dy) = (t.0 - e.cur.0, t.1 - e.cur.1);
                e.emit(&[
                    ('M', vec![Tok::Num(t.0), Tok::Num(t.1)]),
                    ('m', vec![Tok::Num(dx), Tok::Num(dy)]),
                ]);
                e.cur = t;
                e.start = t;
                e.prev_c2 = None;
                e.prev_qc = None;
                e.drawn_in_subpath = false;
            }
            Seg::Line(pt) => {
                let t = q(pt);
                let degenerate = t == e.cur && e.drawn_in_subpath;
                let ends_subpath = matches!(segs.get(i + 1), None | Some(Seg::Move(_)));
                let closes = (next_is_close || (fill_only && ends_subpath))
                    && t == e.start
                    && e.drawn_in_subpath;
                if !degenerate && !closes {
                    let (dx, dy) = (t.0 - e.cur.0, t.1 - e.cur.1);
                    let mut c = vec![
                        ('L', vec![Tok::Num(t.0), Tok::Num(t.1)]),
                        ('l', vec![Tok::Num(dx), Tok::Num(dy)]),
                    ];
                    if dy == 0 {
                        c.push(('H', vec![Tok::Num(t.0)]));
                        c.push(('h', vec![Tok::Num(dx)]));
                    }
                    if dx == 0 {
                        c.push(('V', vec![Tok::Num(t.1)]));
                        c.push(('v', vec![Tok::Num(dy)]));
                    }
                    e.emit(&c);
                    e.cur = t;
                    e.drawn_in_subpath = true;
                }
                e.prev_c2 = None;
                e.prev_qc = None;
            }
            Seg::Quad(c, pt) => {
                let (c, t) = (q(c), q(pt));
                if !(c == e.cur && t == e.cur && e.drawn_in_subpath) {
                    let (x0, y0) = e.cur;
                    let mut cands = vec![
                        (
                            'Q',
                            vec![Tok::Num(c.0), Tok::Num(c.1), Tok::Num(t.0), Tok::Num(t.1)],
                        ),
                        (
                            'q',
                            vec![
                                Tok::Num(c.0 - x0),
                                Tok::Num(c.1 - y0),
                                Tok::Num(t.0 - x0),
                                Tok::Num(t.1 - y0),
                            ],
                        ),
                    ];
                    if let Some(pc) = e.prev_qc {
                        if (2 * x0 - pc.0, 2 * y0 - pc.1) == c {
                            cands.push(('T', vec![Tok::Num(t.0), Tok::Num(t.1)]));
                            cands.push(('t', vec![Tok::Num(t.0 - x0), Tok::Num(t.1 - y0)]));
                        }
                    }
                    e.emit(&cands);
                    e.cur = t;
                    e.drawn_in_subpath = true;
                    e.prev_qc = Some(c);
                } else {
                    e.prev_qc = None;
                }
                e.prev_c2 = None;
            }
            Seg::Cubic(c1, c2, pt) => {
                let (c1, c2, t) = (q(c1), q(c2), q(pt));
                if !(c1 == e.cur && c2 == e.cur && t == e.cur && e.drawn_in_subpath) {
                    let (x0, y0) = e.cur;
                    let mut cands = vec![
                        (
                            'C',
                            vec![
                                Tok::Num(c1.0),
                                Tok::Num(c1.1),
                                Tok::Num(c2.0),
                                Tok::Num(c2.1),
                                Tok::Num(t.0),
                                Tok::Num(t.1),
                            ],
                        ),
                        (
                            'c',
                            vec![
                                Tok::Num(c1.0 - x0),
                                Tok::Num(c1.1 - y0),
                                Tok::Num(c2.0 - x0),
                                Tok::Num(c2.1 - y0),
                                Tok::Num(t.0 - x0),
                                Tok::Num(t.1 - y0),
                            ],
                        ),
                    ];
                    let reflected = match e.prev_c2 {
                        Some(pc) => (2 * x0 - pc.0, 2 * y0 - pc.1),
                        None => e.cur,
                    };
                    // The reflected control point may be off by one unit of the last decimal.
                    if (reflected.0 - c1.0).abs() <= 1 && (reflected.1 - c1.1).abs() <= 1 {
                        cands.push((
                            'S',
                            vec![Tok::Num(c2.0), Tok::Num(c2.1), Tok::Num(t.0), Tok::Num(t.1)],
                        ));
                        cands.push((
                            's',
                            vec![
                                Tok::Num(c2.0 - x0),
                                Tok::Num(c2.1 - y0),
                                Tok::Num(t.0 - x0),
                                Tok::Num(t.1 - y0),
                            ],
                        ));
                    }
                    e.emit(&cands);
                    e.cur = t;
                    e.drawn_in_subpath = true;
                    e.prev_c2 = Some(c2);
                } else {
                    e.prev_c2 = None;
                }
                e.prev_qc = None;
            }
            Seg::Arc(a) => {
                emit_arc(&mut e, &a, 0);
                e.prev_c2 = None;
                e.prev_qc = None;
            }
            Seg::Close => {
                let last = segs[i + 1..]
                    .iter()
                    .all(|s| matches!(s, Seg::Close | Seg::Move(_)));
                if e.last_byte != Some(b'z') && !e.out.is_empty() && !(fill_only && last) {
                    e.out.push('z');
                    e.last_byte = Some(b'z');
                    e.last_has_dot = false;
                    e.last_was_flag = false;
                    e.implicit = None;
                }
                e.cur = e.start;
                e.prev_c2 = None;
                e.prev_qc = None;
            }
        }
        i += 1;
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_point() {
        assert_eq!(fmt_units(1250, 2), "12.5");
        assert_eq!(fmt_units(-50, 2), "-.5");
        assert_eq!(fmt_units(5, 3), ".005");
        assert_eq!(fmt_units(-0, 3), "0");
        assert_eq!(fmt_units(1200, 2), "12");
        assert_eq!(fmt_units(-7, 0), "-7");
    }

    #[test]
    fn affine_similarity() {
        assert_eq!(
            Affine::scale_translate(2.0, 1.0, 1.0).similarity_scale(),
            Some(2.0)
        );
        let skew = Affine {
            c: 0.5,
            ..Affine::IDENTITY
        };
        assert_eq!(skew.similarity_scale(), None);
    }

    #[test]
    fn encodes_lines_compactly() {
        let segs = [
            Seg::Move(Pt::new(0.0, 0.0)),
            Seg::Line(Pt::new(24.0, 0.0)),
            Seg::Line(Pt::new(24.0, 24.0)),
            Seg::Line(Pt::new(0.0, 24.0)),
            Seg::Line(Pt::new(0.0, 0.0)),
            Seg::Close,
        ];
        assert_eq!(encode(&segs, 2, false), "M0 0H24V24H0z");
        assert_eq!(encode(&segs, 2, true), "M0 0H24V24H0");
    }

    #[test]
    fn recovers_a_circle() {
        let k = 9.0 * 4.0 / 3.0 * (std::f64::consts::FRAC_PI_2 / 4.0).tan();
        let c = Pt::new(12.0, 12.0);
        let segs = vec![
            Seg::Move(Pt::new(21.0, 12.0)),
            Seg::Cubic(
                Pt::new(21.0, 12.0 + k),
                Pt::new(12.0 + k, 21.0),
                Pt::new(12.0, 21.0),
            ),
            Seg::Cubic(
                Pt::new(12.0 - k, 21.0),
                Pt::new(3.0, 12.0 + k),
                Pt::new(3.0, 12.0),
            ),
            Seg::Cubic(
                Pt::new(3.0, 12.0 - k),
                Pt::new(12.0 - k, 3.0),
                Pt::new(12.0, 3.0),
            ),
            Seg::Cubic(
                Pt::new(12.0 + k, 3.0),
                Pt::new(21.0, 12.0 - k),
                Pt::new(21.0, 12.0),
            ),
            Seg::Close,
        ];
        let arcs = super::super::arc::recover_arcs(&segs, 1e-3);
        let (center, r, _, _) = super::super::arc::as_ellipse(&arcs, 1e-3).expect("a circle");
        assert!(center.dist(c) < 1e-9 && (r - 9.0).abs() < 1e-9);
        assert_eq!(encode(&arcs, 2, false), "M21 12A9 9 0 013 12a9 9 0 0118 0z");
    }

    #[test]
    fn simplify_merges_collinear_lines() {
        let segs = [
            Seg::Move(Pt::new(0.0, 0.0)),
            Seg::Line(Pt::new(1.0, 0.01)),
            Seg::Line(Pt::new(2.0, 0.0)),
            Seg::Line(Pt::new(2.0, 5.0)),
        ];
        let s = simplify(&segs, 0.05, false);
        assert_eq!(s.len(), 3);
        let s = simplify(&segs, 0.001, false);
        assert_eq!(s.len(), 4);
    }
}
