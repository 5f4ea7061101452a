//! Circular and elliptical arcs: recovery from the cubic Béziers usvg produces for circles,
//! ellipses, rounded rectangles and arc commands, and the arc geometry the encoder needs.
//!
//! usvg (through kurbo) approximates an arc of an ellipse by cubics that are each the image,
//! under the affine map of the ellipse, of the standard approximation of a circular arc of at
//! most 90°: control arms of length `κ = 4/3 · tan(θ/4)` along the tangents. For such a cubic
//! `p0 c1 c2 p3` with `d0 = c1 − p0` and `d1 = p3 − c2`, the affine image of the circle relation
//! gives `κ · sin θ · (p3 − p0) = (1 − cos θ) · (d0 + d1)`: `d0 + d1` is parallel to the chord
//! and their length ratio fixes θ. The conjugate semi-diameters of the ellipse then follow as
//! `b = d0 / κ` and `a = (cos θ · d0 − d1) / (κ · sin θ)`, the centre as `p0 − a`, and its radii
//! and rotation from the singular value decomposition of `[a b]`.

use std::f64::consts::{FRAC_PI_2, FRAC_PI_4, PI};

use super::path::{Pt, Seg};

/// An arc of an ellipse (a circle when `rx == ry`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArcSeg {
    /// Radius along the rotated x axis.
    pub rx: f64,
    /// Radius along the rotated y axis.
    pub ry: f64,
    /// Rotation of the ellipse's x axis in radians, in `(−π/4, π/4]`.
    pub rot: f64,
    /// SVG large-arc flag.
    pub large: bool,
    /// SVG sweep flag (positive-angle direction).
    pub sweep: bool,
    /// End point.
    pub to: Pt,
    /// Centre of the ellipse.
    pub center: Pt,
    /// Swept parametric angle in radians, positive.
    pub angle: f64,
}

impl ArcSeg {
    /// The point of the ellipse at parametric angle `t`.
    pub fn point(&self, t: f64) -> Pt {
        let (s, c) = self.rot.sin_cos();
        let (x, y) = (self.rx * t.cos(), self.ry * t.sin());
        Pt::new(self.center.x + c * x - s * y, self.center.y + s * x + c * y)
    }

    /// The parametric angle of `p` (a point on, or near, the ellipse).
    pub fn param(&self, p: Pt) -> f64 {
        let (s, c) = self.rot.sin_cos();
        let d = p.sub(self.center);
        let (x, y) = (c * d.x + s * d.y, -s * d.x + c * d.y);
        (y / self.ry.max(f64::MIN_POSITIVE)).atan2(x / self.rx.max(f64::MIN_POSITIVE))
    }

    /// The point halfway along the arc from `from`.
    pub fn midpoint(&self, from: Pt) -> Pt {
        let dir = if self.sweep { 1.0 } else { -1.0 };
        self.point(self.param(from) + dir * self.angle / 2.0)
    }

    /// Whether the two arcs lie on the same ellipse (within `tol`) and turn the same way.
    fn same_ellipse(&self, o: &ArcSeg, tol: f64) -> bool {
        if self.sweep != o.sweep
            || self.center.dist(o.center) > tol
            || (self.rx - o.rx).abs() > tol
            || (self.ry - o.ry).abs() > tol
        {
            return false;
        }
        // The rotation only matters as far as it moves points: by |Δrot| · |rx − ry|.
        let d = (self.rot - o.rot).abs();
        d.min(PI - d) * (self.rx - self.ry).abs() <= tol
    }
}

/// The rotation and radii of the ellipse `{c + a cos t + b sin t}` with conjugate
/// semi-diameters `a`, `b`: `(rx, ry, rot)`, `rot` in `(−π/4, π/4]`.
fn ellipse_axes(a: Pt, b: Pt) -> (f64, f64, f64) {
    // Singular values of the 2x2 matrix [a b] (columns).
    let (m00, m01, m10, m11) = (a.x, b.x, a.y, b.y);
    let e = (m00 + m11) / 2.0;
    let f = (m00 - m11) / 2.0;
    let g = (m10 + m01) / 2.0;
    let h = (m10 - m01) / 2.0;
    let q = e.hypot(h);
    let r = f.hypot(g);
    let (sx, sy) = (q + r, (q - r).abs());
    let rot = (g.atan2(f) + h.atan2(e)) / 2.0;
    normalise_rotation(sx, sy, rot)
}

/// The same ellipse with its rotation in `(−π/4, π/4]` (swapping the radii for quarter turns).
pub(crate) fn normalise_rotation(rx: f64, ry: f64, rot: f64) -> (f64, f64, f64) {
    let mut rot = rot.rem_euclid(PI);
    if rot > PI / 2.0 {
        rot -= PI;
    }
    if rot > FRAC_PI_4 + 1e-12 {
        (ry, rx, rot - FRAC_PI_2)
    } else if rot <= -FRAC_PI_4 + 1e-12 {
        (ry, rx, rot + FRAC_PI_2)
    } else {
        (rx, ry, rot)
    }
}

/// If the cubic `p0 c1 c2 p3` is the standard Bézier approximation of a circular arc (as
/// produced for SVG arcs and circles), returns that arc.
fn cubic_as_circle_arc(p0: Pt, c1: Pt, c2: Pt, p3: Pt, tol: f64) -> Option<ArcSeg> {
    let t0 = c1.sub(p0);
    let t1 = p3.sub(c2);
    let chord = p3.sub(p0);
    let (l0, l1, lc) = (t0.len(), t1.len(), chord.len());
    if l0 <= tol || l1 <= tol || lc <= tol {
        return None;
    }
    let cross = t0.cross(chord);
    let cos_phi = (t0.dot(chord) / (l0 * lc)).clamp(-1.0, 1.0);
    let phi = cos_phi.acos();
    if !(1e-3..=FRAC_PI_2 - 1e-6).contains(&phi) {
        return None;
    }
    let theta = 2.0 * phi;
    let r = lc / (2.0 * phi.sin());
    let sweep = cross > 0.0;
    let n0 = if sweep {
        Pt::new(-t0.y, t0.x)
    } else {
        Pt::new(t0.y, -t0.x)
    }
    .scale(1.0 / l0);
    let center = p0.add(n0.scale(r));
    if (p3.dist(center) - r).abs() > tol {
        return None;
    }
    let k = r * 4.0 / 3.0 * (theta / 4.0).tan();
    // Control points may be off by twice the tolerance: the curve moves less than half that.
    if (l0 - k).abs() > 2.0 * tol || (l1 - k).abs() > 2.0 * tol {
        return None;
    }
    // The end tangent must be perpendicular to the end radius.
    if (t1.dot(p3.sub(center)) / l1).abs() > tol {
        return None;
    }
    Some(ArcSeg {
        rx: r,
        ry: r,
        rot: 0.0,
        large: false,
        sweep,
        to: p3,
        center,
        angle: theta,
    })
}

/// `(4/3 · tan(θ/4)) / tan(θ/2)`: the ratio `|d0 + d1| / |p3 − p0|` of an arc of angle θ
/// (see the module docs); decreasing from 2/3 at 0 to 0 at π.
fn arm_ratio(theta: f64) -> f64 {
    4.0 / 3.0 * (theta / 4.0).tan() / (theta / 2.0).tan()
}

/// If the cubic `p0 c1 c2 p3` is the affine image of the standard approximation of a circular
/// arc of at most 90° (an elliptical arc as usvg writes it), returns that arc.
fn cubic_as_ellipse_arc(p0: Pt, c1: Pt, c2: Pt, p3: Pt, tol: f64) -> Option<ArcSeg> {
    let d0 = c1.sub(p0);
    let d1 = p3.sub(c2);
    let chord = p3.sub(p0);
    let lc = chord.len();
    if d0.len() <= tol || d1.len() <= tol || lc <= tol {
        return None;
    }
    let s = d0.add(d1);
    if s.cross(chord).abs() / lc > tol {
        return None;
    }
    let ratio = s.dot(chord) / (lc * lc);
    // Arcs of 1° to 90° (usvg splits longer arcs).
    let (mut lo, mut hi) = (1f64.to_radians(), FRAC_PI_2 + 1e-6);
    if !(arm_ratio(hi)..=arm_ratio(lo)).contains(&ratio) {
        return None;
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if arm_ratio(mid) > ratio {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let theta = (lo + hi) / 2.0;
    let kappa = 4.0 / 3.0 * (theta / 4.0).tan();
    let (sin, cos) = theta.sin_cos();
    let b = d0.scale(1.0 / kappa);
    let a = d0.scale(cos).sub(d1).scale(1.0 / (kappa * sin));
    let center = p0.sub(a);
    // Rebuild the cubic from the ellipse and check it.
    let end = center.add(a.scale(cos)).add(b.scale(sin));
    let tangent = b.scale(cos).sub(a.scale(sin));
    let c2r = end.sub(tangent.scale(kappa));
    if end.dist(p3) > tol || c2r.dist(c2) > 2.0 * tol {
        return None;
    }
    let (rx, ry, rot) = ellipse_axes(a, b);
    if !(rx.is_finite() && ry.is_finite() && ry > tol) {
        return None;
    }
    Some(ArcSeg {
        rx,
        ry,
        rot,
        large: false,
        sweep: a.cross(b) > 0.0,
        to: p3,
        center,
        angle: theta,
    })
}

/// The end point of a segment, given the subpath start.
fn end_point(s: &Seg, start: Pt) -> Pt {
    match *s {
        Seg::Move(p) | Seg::Line(p) | Seg::Quad(_, p) | Seg::Cubic(_, _, p) => p,
        Seg::Arc(a) => a.to,
        Seg::Close => start,
    }
}

/// Replaces runs of cubics that approximate one circle or ellipse by SVG arcs (`A`), which
/// cost far fewer tokens. A lone cubic becomes an arc only on a circle (an elliptical arc has
/// two more numbers than a cubic). `tol` is the allowed geometric deviation in user units.
pub(crate) fn recover_arcs(segs: &[Seg], tol: f64) -> Vec<Seg> {
    let mut out = Vec::with_capacity(segs.len());
    let mut cur = Pt::new(0.0, 0.0);
    let mut start = cur;
    let mut i = 0;
    let detect = |p0: Pt, s: &Seg| -> Option<ArcSeg> {
        let Seg::Cubic(c1, c2, p) = *s else {
            return None;
        };
        cubic_as_circle_arc(p0, c1, c2, p, tol).or_else(|| cubic_as_ellipse_arc(p0, c1, c2, p, tol))
    };
    while i < segs.len() {
        let s = segs[i];
        if let Some(first) = detect(cur, &s) {
            let arc_start = cur;
            let mut total = first.angle;
            let mut end = first.to;
            let mut j = i + 1;
            while j < segs.len() {
                let Some(next) = detect(end, &segs[j]) else {
                    break;
                };
                if !first.same_ellipse(&next, tol) || total + next.angle > 2.0 * PI + 1e-3 {
                    break;
                }
                total += next.angle;
                end = next.to;
                j += 1;
            }
            let circle = (first.rx - first.ry).abs() <= tol;
            if circle || j > i + 1 {
                push_arc(&mut out, arc_start, first, total, end);
                cur = end;
                i = j;
                continue;
            }
        }
        match s {
            Seg::Move(p) => {
                start = p;
                cur = p;
            }
            _ => cur = end_point(&s, start),
        }
        out.push(s);
        i += 1;
    }
    out
}

fn push_arc(out: &mut Vec<Seg>, from: Pt, proto: ArcSeg, total: f64, end: Pt) {
    let mk = |angle: f64, to: Pt| ArcSeg {
        large: angle > PI + 1e-9,
        to,
        angle,
        ..proto
    };
    if total > PI && from.dist(end) < 0.25 * proto.rx.min(proto.ry) {
        // Near-full or full turns: the end points are too close to fix the ellipse, so split
        // in two halves that are not ambiguous.
        let whole = mk(total, end);
        let mid = whole.midpoint(from);
        out.push(Seg::Arc(mk(total / 2.0, mid)));
        out.push(Seg::Arc(mk(total / 2.0, end)));
    } else {
        out.push(Seg::Arc(mk(total, end)));
    }
}

/// If the path is exactly one full ellipse (after arc recovery), returns its centre, radii and
/// rotation (`rx == ry` within `tol` for a circle).
pub(crate) fn as_ellipse(segs: &[Seg], tol: f64) -> Option<(Pt, f64, f64, f64)> {
    let mut it = segs.iter();
    let Some(Seg::Move(_)) = it.next() else {
        return None;
    };
    let mut total = 0.0;
    let mut first: Option<ArcSeg> = None;
    for s in it {
        match s {
            Seg::Arc(a) => {
                match &first {
                    Some(f) if !f.same_ellipse(a, tol) => return None,
                    Some(_) => {}
                    None => first = Some(*a),
                }
                total += a.angle;
            }
            Seg::Close => {}
            _ => return None,
        }
    }
    let f = first?;
    ((total - 2.0 * PI).abs() < 1e-3).then_some((f.center, f.rx, f.ry, f.rot))
}

/// The centre and (possibly enlarged) radii an SVG renderer computes for an arc from `s` to
/// `e` (SVG 1.1 implementation notes F.6.5; radii scaled up when too small).
pub(crate) fn arc_center(
    s: Pt,
    e: Pt,
    rx: f64,
    ry: f64,
    rot: f64,
    large: bool,
    sweep: bool,
) -> (Pt, f64, f64) {
    let (sin, cos) = rot.sin_cos();
    let (hx, hy) = ((s.x - e.x) / 2.0, (s.y - e.y) / 2.0);
    let x1 = cos * hx + sin * hy;
    let y1 = -sin * hx + cos * hy;
    let mid = Pt::new((s.x + e.x) / 2.0, (s.y + e.y) / 2.0);
    if rx <= 0.0 || ry <= 0.0 {
        return (mid, rx, ry);
    }
    let lambda = x1 * x1 / (rx * rx) + y1 * y1 / (ry * ry);
    if lambda >= 1.0 {
        let k = lambda.sqrt();
        return (mid, rx * k, ry * k);
    }
    let num = rx * rx * ry * ry - rx * rx * y1 * y1 - ry * ry * x1 * x1;
    let den = rx * rx * y1 * y1 + ry * ry * x1 * x1;
    if den <= 0.0 {
        return (mid, rx, ry);
    }
    let mut coef = (num / den).max(0.0).sqrt();
    if large == sweep {
        coef = -coef;
    }
    let (cx1, cy1) = (coef * rx * y1 / ry, -coef * ry * x1 / rx);
    (
        Pt::new(mid.x + cos * cx1 - sin * cy1, mid.y + sin * cx1 + cos * cy1),
        rx,
        ry,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cubics the way kurbo writes an arc of the ellipse (c, rx, ry, rot) from t0 over `sweep`
    /// radians in `n` equal parts.
    fn kurbo_like(c: Pt, rx: f64, ry: f64, rot: f64, t0: f64, sweep: f64, n: usize) -> Vec<Seg> {
        let e = ArcSeg {
            rx,
            ry,
            rot,
            large: false,
            sweep: true,
            to: c,
            center: c,
            angle: 0.0,
        };
        let deriv = |t: f64| {
            let (s, co) = rot.sin_cos();
            let (x, y) = (-rx * t.sin(), ry * t.cos());
            Pt::new(co * x - s * y, s * x + co * y)
        };
        let step = sweep / n as f64;
        let k = 4.0 / 3.0 * (step / 4.0).tan();
        let mut segs = vec![Seg::Move(e.point(t0))];
        for i in 0..n {
            let (a, b) = (t0 + step * i as f64, t0 + step * (i + 1) as f64);
            let (p0, p3) = (e.point(a), e.point(b));
            segs.push(Seg::Cubic(
                p0.add(deriv(a).scale(k)),
                p3.sub(deriv(b).scale(k)),
                p3,
            ));
        }
        segs
    }

    #[test]
    fn recovers_rotated_ellipses_and_elliptical_arcs() {
        let c = Pt::new(10.0, 12.0);
        for (rx, ry, rot) in [
            (6.0, 3.0, 0.0),
            (6.0, 3.0, 0.5),
            (2.0, 5.0, -0.3),
            (4.0, 4.0, 0.0),
        ] {
            let mut segs = kurbo_like(c, rx, ry, rot, 0.3, 2.0 * PI, 4);
            segs.push(Seg::Close);
            let arcs = recover_arcs(&segs, 1e-6);
            let (cc, ex, ey, er) = as_ellipse(&arcs, 1e-6).expect("an ellipse");
            let (nx, ny, nr) = normalise_rotation(rx, ry, rot);
            assert!(cc.dist(c) < 1e-6, "{cc:?}");
            assert!(
                (ex - nx).abs() < 1e-6 && (ey - ny).abs() < 1e-6,
                "{ex} {ey}"
            );
            if (rx - ry).abs() > 1e-9 {
                assert!((er - nr).abs() < 1e-6, "{er} vs {nr}");
            }
            // Half an ellipse in three cubics is one arc of 180°.
            let half = kurbo_like(c, rx, ry, rot, 1.0, PI, 3);
            let arcs = recover_arcs(&half, 1e-6);
            assert_eq!(arcs.len(), 2, "{arcs:?}");
            let Seg::Arc(a) = arcs[1] else {
                panic!("not an arc: {arcs:?}")
            };
            assert!((a.angle - PI).abs() < 1e-6);
        }
    }

    #[test]
    fn a_lone_elliptical_cubic_stays_a_cubic() {
        let segs = kurbo_like(Pt::new(0.0, 0.0), 6.0, 3.0, 0.2, 0.0, 1.0, 1);
        let arcs = recover_arcs(&segs, 1e-6);
        assert!(matches!(arcs[1], Seg::Cubic(..)), "{arcs:?}");
        // An arbitrary cubic is no arc.
        let segs = [
            Seg::Move(Pt::new(0.0, 0.0)),
            Seg::Cubic(Pt::new(1.0, 3.0), Pt::new(5.0, -2.0), Pt::new(6.0, 1.0)),
            Seg::Cubic(Pt::new(7.0, 3.0), Pt::new(8.0, 0.0), Pt::new(9.0, 1.0)),
        ];
        let arcs = recover_arcs(&segs, 1e-6);
        assert!(arcs.iter().all(|s| !matches!(s, Seg::Arc(_))), "{arcs:?}");
    }

    #[test]
    fn renderer_centre_matches_f65() {
        // A half circle: centre on the chord; an arc with too small radii is scaled up.
        let (c, rx, _) = arc_center(
            Pt::new(0.0, 0.0),
            Pt::new(10.0, 0.0),
            5.0,
            5.0,
            0.0,
            false,
            true,
        );
        assert!(c.dist(Pt::new(5.0, 0.0)) < 1e-9 && (rx - 5.0).abs() < 1e-9);
        let (c, rx, ry) = arc_center(
            Pt::new(0.0, 0.0),
            Pt::new(10.0, 0.0),
            1.0,
            2.0,
            0.0,
            false,
            true,
        );
        assert!(
            c.dist(Pt::new(5.0, 0.0)) < 1e-9 && (rx - 5.0).abs() < 1e-9,
            "{rx}"
        );
        assert!((ry - 10.0).abs() < 1e-9);
        // Quarter of an ellipse rotated by 30°.
        let e = ArcSeg {
            rx: 6.0,
            ry: 2.0,
            rot: 30f64.to_radians(),
            large: false,
            sweep: true,
            to: Pt::new(0.0, 0.0),
            center: Pt::new(3.0, 4.0),
            angle: 0.0,
        };
        let (s, t) = (e.point(0.2), e.point(0.2 + FRAC_PI_2));
        let (c, _, _) = arc_center(s, t, 6.0, 2.0, e.rot, false, true);
        assert!(c.dist(e.center) < 1e-9, "{c:?}");
    }
}
