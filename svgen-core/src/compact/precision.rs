//! The precision rule of [`Precision::Auto`](super::Precision::Auto): how far a coordinate may
//! move, per shape, from the viewBox size, the target render size and the thickness of what the
//! shape paints. See the module docs of [`compact`](super) for the rule in words.

use super::path::{Pt, Seg};

/// The largest displacement of any point, in pixels of a rendering whose larger side is
/// `render_size` px.
pub const MAX_ERROR_PX: f64 = 0.25;

/// The largest displacement of any point as a fraction of the thickness of what a shape paints
/// (its stroke width, or twice its filled area over its outline length). Ink IoU changes by about
/// twice the mean edge displacement over the thickness, so 1/200 keeps even a thin shape's own
/// IoU within about 0.5 % of the original.
pub const THICKNESS_FRACTION: f64 = 1.0 / 200.0;

/// Finest precision ever used, as a fraction of the larger viewBox side: degenerate shapes (zero
/// area, zero width) do not ask for more decimals than this.
pub const MIN_RELATIVE_TOLERANCE: f64 = 1e-6;

/// Decimals (at most 8) whose rounding (half a unit of the last place) stays within `tol`.
pub(crate) fn decimals_for(tol: f64) -> u32 {
    if !(tol.is_finite() && tol > 0.0) {
        return 8;
    }
    // The unit of the last place is the largest power of ten not above twice the tolerance.
    let d = -(2.0 * tol).log10();
    (d - 1e-9).ceil().clamp(0.0, 8.0) as u32
}

/// The tolerance in user units of a drawing whose larger side is `side` user units, rendered
/// with that side at `render_size` px.
pub(crate) fn render_tolerance(side: f64, render_size: u32) -> f64 {
    let px = side / f64::from(render_size.max(1));
    let t = px * MAX_ERROR_PX;
    if t.is_finite() && t > 0.0 {
        t
    } else {
        1e-3
    }
}

/// Points along the segments, curves sampled, one polygon per subpath (implicitly closed).
fn polygons(segs: &[Seg]) -> Vec<Vec<Pt>> {
    const STEPS: usize = 8;
    let mut out: Vec<Vec<Pt>> = Vec::new();
    let mut cur = Pt::new(0.0, 0.0);
    let mut start = cur;
    for s in segs {
        match *s {
            Seg::Move(p) => {
                out.push(vec![p]);
                cur = p;
                start = p;
            }
            Seg::Line(p) => {
                push(&mut out, cur, p);
                cur = p;
            }
            Seg::Quad(c, p) => {
                for i in 1..=STEPS {
                    let t = i as f64 / STEPS as f64;
                    let u = 1.0 - t;
                    let q = Pt::new(
                        u * u * cur.x + 2.0 * u * t * c.x + t * t * p.x,
                        u * u * cur.y + 2.0 * u * t * c.y + t * t * p.y,
                    );
                    push(&mut out, cur, q);
                }
                cur = p;
            }
            Seg::Cubic(c1, c2, p) => {
                for i in 1..=STEPS {
                    let t = i as f64 / STEPS as f64;
                    let u = 1.0 - t;
                    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
                    let q = Pt::new(
                        a * cur.x + b * c1.x + c * c2.x + d * p.x,
                        a * cur.y + b * c1.y + c * c2.y + d * p.y,
                    );
                    push(&mut out, cur, q);
                }
                cur = p;
            }
            Seg::Arc(a) => {
                let t0 = a.param(cur);
                let dir = if a.sweep { 1.0 } else { -1.0 };
                for i in 1..=STEPS {
                    let q = a.point(t0 + dir * a.angle * i as f64 / STEPS as f64);
                    push(&mut out, cur, q);
                }
                cur = a.to;
            }
            Seg::Close => {
                push(&mut out, cur, start);
                cur = start;
            }
        }
    }
    out
}

fn push(out: &mut Vec<Vec<Pt>>, cur: Pt, p: Pt) {
    match out.last_mut() {
        Some(poly) => poly.push(p),
        None => out.push(vec![cur, p]),
    }
}

fn signed_area(poly: &[Pt]) -> f64 {
    let n = poly.len();
    (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a.x * b.y - b.x * a.y
        })
        .sum::<f64>()
        / 2.0
}

fn perimeter(poly: &[Pt], closed: bool) -> f64 {
    let n = poly.len();
    let m = if closed { n } else { n.saturating_sub(1) };
    (0..m)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            (a.x - b.x).hypot(a.y - b.y)
        })
        .sum()
}

/// Even-odd point-in-polygon test.
fn contains(poly: &[Pt], p: Pt) -> bool {
    let n = poly.len();
    let mut inside = false;
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// At most this many subpaths are tested against each other for nesting...
const MAX_NESTING_TESTS: usize = 128;

/// ...and at most this many point-in-polygon edge tests are made.
const MAX_NESTING_WORK: usize = 1 << 20;

/// The thickness of a filled shape: twice its filled area over the length of its outline (the
/// width of a long thin band, the radius of a disc). Subpaths inside an odd number of others
/// count as holes, so a thin ring is seen as thin. Returns infinity for a shape without outline.
pub(crate) fn fill_thickness(segs: &[Seg]) -> f64 {
    let polys: Vec<Vec<Pt>> = polygons(segs)
        .into_iter()
        .filter(|p| p.len() >= 2)
        .collect();
    let areas: Vec<f64> = polys.iter().map(|p| signed_area(p).abs()).collect();
    let outline: f64 = polys.iter().map(|p| perimeter(p, true)).sum();
    if !(outline.is_finite() && outline > 0.0) {
        return f64::INFINITY;
    }
    let mut area = 0.0;
    let points: usize = polys.iter().map(Vec::len).sum();
    if polys.len() <= MAX_NESTING_TESTS && points.saturating_mul(polys.len()) <= MAX_NESTING_WORK {
        for (i, p) in polys.iter().enumerate() {
            let depth = polys
                .iter()
                .enumerate()
                .filter(|(j, q)| *j != i && contains(q, p[0]))
                .count();
            area += if depth % 2 == 0 { areas[i] } else { -areas[i] };
        }
    }
    if area.is_nan() || area <= 0.0 {
        // Not properly nested (or too many subpaths): the thinnest subpath that paints
        // anything decides; a fill without area paints nothing.
        return polys
            .iter()
            .zip(&areas)
            .map(|(p, a)| (a, perimeter(p, true)))
            .filter(|(a, per)| **a > 1e-9 * per * per)
            .map(|(a, per)| 2.0 * a / per)
            .fold(f64::INFINITY, f64::min);
    }
    2.0 * area / outline
}

/// The outline length of the segments (open subpaths not closed), for tests and diagnostics.
#[cfg(test)]
pub(crate) fn outline_length(segs: &[Seg]) -> f64 {
    polygons(segs).iter().map(|p| perimeter(p, false)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_tolerance() {
        assert_eq!(decimals_for(0.005), 2);
        assert_eq!(decimals_for(0.0049), 3);
        assert_eq!(decimals_for(0.5), 0);
        assert_eq!(decimals_for(3.0), 0);
        assert_eq!(decimals_for(0.0), 8);
        assert_eq!(decimals_for(f64::NAN), 8);
        assert_eq!(decimals_for(1e-12), 8);
    }

    fn rect(x: f64, y: f64, w: f64, h: f64, ccw: bool) -> Vec<Seg> {
        let mut pts = vec![Pt::new(x + w, y), Pt::new(x + w, y + h), Pt::new(x, y + h)];
        if ccw {
            pts.reverse();
        }
        let mut v = vec![Seg::Move(Pt::new(x, y))];
        v.extend(pts.into_iter().map(Seg::Line));
        v.push(Seg::Close);
        v
    }

    #[test]
    fn thickness_of_bands_discs_and_rings() {
        // A 20 x 1 band: 2 * 20 / 42.
        let t = fill_thickness(&rect(0.0, 0.0, 20.0, 1.0, false));
        assert!((t - 40.0 / 42.0).abs() < 1e-9, "{t}");
        // A square ring 10 wide with a hole 9 wide (0.5 thick): area 19, outline 76.
        let mut ring = rect(0.0, 0.0, 10.0, 10.0, false);
        ring.extend(rect(0.5, 0.5, 9.0, 9.0, true));
        let t = fill_thickness(&ring);
        assert!((t - 2.0 * 19.0 / 76.0).abs() < 1e-9, "{t}");
        // The same ring without nesting would look 5 thick: the hole matters.
        assert!(t < 0.6);
        assert_eq!(
            fill_thickness(&[Seg::Move(Pt::new(1.0, 1.0))]),
            f64::INFINITY
        );
        assert!((outline_length(&rect(0.0, 0.0, 2.0, 1.0, false)) - 6.0).abs() < 1e-9);
    }
}
