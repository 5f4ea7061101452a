//! Basic-shape elements: a path that is exactly one circle, axis-aligned ellipse or (rounded)
//! rectangle is written as `<circle>`, `<ellipse>` or `<rect>` when that costs fewer tokens
//! (`<rect x="3" y="3" width="18" height="18" rx="2"/>` is 25 tokens, its path data 45).

use std::f64::consts::FRAC_PI_2;

use super::arc::as_ellipse;
use super::cost::markup_tokens;
use super::path::{fmt_units, quantize, Pt, Seg};

/// A (rounded) rectangle: corner, size and corner radii.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RectForm {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub rx: f64,
    pub ry: f64,
}

fn near(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// If `segs` are one closed subpath tracing an axis-aligned rectangle, possibly with quarter
/// arcs of one radius pair at its four corners, returns it.
pub(crate) fn as_rect(segs: &[Seg], tol: f64) -> Option<RectForm> {
    let mut it = segs.iter();
    let Some(Seg::Move(start)) = it.next() else {
        return None;
    };
    let mut cur = *start;
    let mut lines: Vec<(Pt, Pt)> = Vec::new();
    let mut arcs = Vec::new();
    let mut closed = false;
    for s in it {
        if closed {
            return None;
        }
        match *s {
            Seg::Line(p) => {
                lines.push((cur, p));
                cur = p;
            }
            Seg::Arc(a) => {
                arcs.push((cur, a));
                cur = a.to;
            }
            Seg::Close => {
                if cur.dist(*start) > tol {
                    lines.push((cur, *start));
                }
                cur = *start;
                closed = true;
            }
            _ => return None,
        }
    }
    if cur.dist(*start) > tol || lines.len() > 5 || !(arcs.is_empty() || arcs.len() == 4) {
        return None;
    }
    let mut pts: Vec<Pt> = lines.iter().flat_map(|(a, b)| [*a, *b]).collect();
    pts.extend(arcs.iter().flat_map(|(a, s)| [*a, s.to]));
    let (x0, x1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.x), hi.max(p.x))
        });
    let (y0, y1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.y), hi.max(p.y))
        });
    let (w, h) = (x1 - x0, y1 - y0);
    if !(w > tol && h > tol && w.is_finite() && h.is_finite()) {
        return None;
    }
    // Every line runs along an edge of the bounding box.
    let on_edge = |a: Pt, b: Pt| {
        (near(a.x, b.x, tol) && (near(a.x, x0, tol) || near(a.x, x1, tol)))
            || (near(a.y, b.y, tol) && (near(a.y, y0, tol) || near(a.y, y1, tol)))
    };
    if !lines.iter().all(|(a, b)| on_edge(*a, *b)) {
        return None;
    }
    if arcs.is_empty() {
        // Sharp corners: the path must visit all four.
        let corners = [
            Pt::new(x0, y0),
            Pt::new(x1, y0),
            Pt::new(x1, y1),
            Pt::new(x0, y1),
        ];
        let all = corners
            .iter()
            .all(|c| pts.iter().any(|p| p.dist(*c) <= tol));
        let only = pts
            .iter()
            .all(|p| corners.iter().any(|c| p.dist(*c) <= tol));
        return (all && only).then_some(RectForm {
            x: x0,
            y: y0,
            w,
            h,
            rx: 0.0,
            ry: 0.0,
        });
    }
    let first = arcs[0].1;
    let (rx, ry) = (first.rx, first.ry);
    if rx * 2.0 > w + tol || ry * 2.0 > h + tol {
        return None;
    }
    let centres = [
        Pt::new(x0 + rx, y0 + ry),
        Pt::new(x1 - rx, y0 + ry),
        Pt::new(x1 - rx, y1 - ry),
        Pt::new(x0 + rx, y1 - ry),
    ];
    let mut used = [false; 4];
    for (from, a) in &arcs {
        let axis_aligned = a.rot.abs() * (a.rx - a.ry).abs() <= tol;
        if !axis_aligned
            || !near(a.rx, rx, tol)
            || !near(a.ry, ry, tol)
            || !near(a.angle, FRAC_PI_2, 1e-3)
        {
            return None;
        }
        let i = centres.iter().position(|c| c.dist(a.center) <= tol)?;
        if used[i] {
            return None;
        }
        used[i] = true;
        // Both ends are tangent points: on the box edges.
        for p in [*from, a.to] {
            let d = p.sub(a.center);
            let on_axis = (near(d.x.abs(), rx, tol) && near(d.y, 0.0, tol))
                || (near(d.y.abs(), ry, tol) && near(d.x, 0.0, tol));
            if !on_axis {
                return None;
            }
        }
    }
    Some(RectForm {
        x: x0,
        y: y0,
        w,
        h,
        rx,
        ry,
    })
}

/// The element (start tag without the closing `/>` and without style attributes) that draws
/// `segs` exactly, if any: `<circle>`, `<ellipse>` (axis-aligned) or `<rect>`. Numbers get `p`
/// decimals.
pub(crate) fn element_form(segs: &[Seg], p: u32) -> Option<String> {
    let unit = 10f64.powi(-(p as i32));
    let n = |v: f64| fmt_units(quantize(v, p), p);
    if let Some((c, rx, ry, rot)) = as_ellipse(segs, (unit * 0.25).max(1e-9)) {
        if near(rx, ry, unit * 0.5) {
            return Some(format!(
                "<circle cx=\"{}\" cy=\"{}\" r=\"{}\"",
                n(c.x),
                n(c.y),
                n((rx + ry) / 2.0)
            ));
        }
        if rot.abs() * (rx - ry).abs() <= unit * 0.25 {
            return Some(format!(
                "<ellipse cx=\"{}\" cy=\"{}\" rx=\"{}\" ry=\"{}\"",
                n(c.x),
                n(c.y),
                n(rx),
                n(ry)
            ));
        }
        return None;
    }
    let r = as_rect(segs, (unit * 0.25).max(1e-9))?;
    let mut s = String::from("<rect");
    // Round the corners, not the size: the far edges stay where they were.
    let (x, y) = (quantize(r.x, p), quantize(r.y, p));
    let (w, h) = (quantize(r.x + r.w, p) - x, quantize(r.y + r.h, p) - y);
    for (k, v) in [("x", x), ("y", y)] {
        if v != 0 {
            s.push_str(&format!(" {k}=\"{}\"", fmt_units(v, p)));
        }
    }
    s.push_str(&format!(
        " width=\"{}\" height=\"{}\"",
        fmt_units(w, p),
        fmt_units(h, p)
    ));
    let (rx, ry) = (quantize(r.rx, p), quantize(r.ry, p));
    if rx != 0 && ry != 0 {
        s.push_str(&format!(" rx=\"{}\"", fmt_units(rx, p)));
        if ry != rx {
            s.push_str(&format!(" ry=\"{}\"", fmt_units(ry, p)));
        }
    }
    Some(s)
}

/// The cost model's token estimate of a start tag or attribute text.
pub(crate) fn tag_tokens(s: &str) -> usize {
    markup_tokens(s)
}
