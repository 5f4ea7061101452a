//! Smoothing with corner detection (paper §2.3.2–2.3.3) and curve optimisation (§2.4).
//!
//! A polygon with `m` vertices becomes a closed curve of `m` segments: segment `j` runs from
//! the midpoint of edge `j-1 → j` to the midpoint of edge `j → j+1`. Where the polygon turns
//! sharply (`alpha ≥ alphamax`) the segment is a *corner* (two straight lines through vertex
//! `j`), otherwise a cubic Bézier whose control points lie on the two edges at a distance set
//! by `alpha`. Curve optimisation then joins runs of consecutive Bézier segments that bend the
//! same way into single segments when the result stays within `opttolerance` of the original.

use crate::polygon::P2;

/// A segment of a [`Curve`] (potrace coordinates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seg {
    /// Straight to `vertex`, then straight to `end`.
    Corner {
        /// The corner point.
        vertex: P2,
        /// End point.
        end: P2,
    },
    /// A cubic Bézier from the previous end point.
    Bezier {
        /// First control point.
        c1: P2,
        /// Second control point.
        c2: P2,
        /// End point.
        end: P2,
    },
}

impl Seg {
    /// The end point of the segment.
    pub fn end(&self) -> P2 {
        match *self {
            Seg::Corner { end, .. } | Seg::Bezier { end, .. } => end,
        }
    }
}

/// A smoothed closed curve with the per-vertex data curve optimisation needs.
#[derive(Debug, Clone, Default)]
pub struct Curve {
    /// The segments; the curve starts at the end point of the last one.
    pub segs: Vec<Seg>,
    /// The (adjusted) polygon vertex each segment belongs to.
    pub vertex: Vec<P2>,
    /// The clamped smoothness `alpha` of each segment.
    pub alpha: Vec<f64>,
}

#[inline]
fn sign(v: f64) -> i32 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

#[inline]
fn interval(lambda: f64, a: P2, b: P2) -> P2 {
    P2::new(a.x + lambda * (b.x - a.x), a.y + lambda * (b.y - a.y))
}

/// Twice the signed area of the triangle `p0 p1 p2`.
#[inline]
fn dpara(p0: P2, p1: P2, p2: P2) -> f64 {
    (p1.x - p0.x) * (p2.y - p0.y) - (p2.x - p0.x) * (p1.y - p0.y)
}

/// The denominator of the smoothing formula: the `p0 p2` chord measured with the L∞-orthogonal
/// unit direction.
#[inline]
fn ddenom(p0: P2, p2: P2) -> f64 {
    let rx = -f64::from(sign(p2.y - p0.y));
    let ry = f64::from(sign(p2.x - p0.x));
    ry * (p2.x - p0.x) - rx * (p2.y - p0.y)
}

#[inline]
fn cprod(p0: P2, p1: P2, p2: P2, p3: P2) -> f64 {
    (p1.x - p0.x) * (p3.y - p2.y) - (p3.x - p2.x) * (p1.y - p0.y)
}

#[inline]
fn iprod(p0: P2, p1: P2, p2: P2) -> f64 {
    (p1.x - p0.x) * (p2.x - p0.x) + (p1.y - p0.y) * (p2.y - p0.y)
}

#[inline]
fn iprod1(p0: P2, p1: P2, p2: P2, p3: P2) -> f64 {
    (p1.x - p0.x) * (p3.x - p2.x) + (p1.y - p0.y) * (p3.y - p2.y)
}

#[inline]
fn ddist(p: P2, q: P2) -> f64 {
    ((p.x - q.x) * (p.x - q.x) + (p.y - q.y) * (p.y - q.y)).sqrt()
}

fn bezier(t: f64, p0: P2, p1: P2, p2: P2, p3: P2) -> P2 {
    let s = 1.0 - t;
    P2::new(
        s * s * s * p0.x + 3.0 * (s * s * t) * p1.x + 3.0 * (t * t * s) * p2.x + t * t * t * p3.x,
        s * s * s * p0.y + 3.0 * (s * s * t) * p1.y + 3.0 * (t * t * s) * p2.y + t * t * t * p3.y,
    )
}

/// The parameter `t ∈ [0, 1]` where the Bézier `p0..p3` is parallel to `q0 q1`, or `None`.
fn tangent(p0: P2, p1: P2, p2: P2, p3: P2, q0: P2, q1: P2) -> Option<f64> {
    let a0 = cprod(p0, p1, q0, q1);
    let b0 = cprod(p1, p2, q0, q1);
    let c0 = cprod(p2, p3, q0, q1);
    let a = a0 - 2.0 * b0 + c0;
    let b = -2.0 * a0 + 2.0 * b0;
    let c = a0;
    let d = b * b - 4.0 * a * c;
    if a == 0.0 || d < 0.0 {
        return None;
    }
    let s = d.sqrt();
    let r1 = (-b + s) / (2.0 * a);
    let r2 = (-b - s) / (2.0 * a);
    if (0.0..=1.0).contains(&r1) {
        Some(r1)
    } else if (0.0..=1.0).contains(&r2) {
        Some(r2)
    } else {
        None
    }
}

/// Smoothing and corner detection: turns the adjusted polygon into a curve.
pub fn smooth(vertex: &[P2], alphamax: f64) -> Curve {
    let m = vertex.len();
    let mut segs = vec![
        Seg::Corner {
            vertex: P2::default(),
            end: P2::default()
        };
        m
    ];
    let mut alphas = vec![0.0; m];
    for i in 0..m {
        let j = (i + 1) % m;
        let k = (i + 2) % m;
        let end = interval(0.5, vertex[k], vertex[j]);
        let denom = ddenom(vertex[i], vertex[k]);
        let mut alpha = if denom != 0.0 {
            let dd = (dpara(vertex[i], vertex[j], vertex[k]) / denom).abs();
            let a = if dd > 1.0 { 1.0 - 1.0 / dd } else { 0.0 };
            a / 0.75
        } else {
            4.0 / 3.0
        };
        if alpha >= alphamax {
            segs[j] = Seg::Corner {
                vertex: vertex[j],
                end,
            };
        } else {
            alpha = alpha.clamp(0.55, 1.0);
            segs[j] = Seg::Bezier {
                c1: interval(0.5 + 0.5 * alpha, vertex[i], vertex[j]),
                c2: interval(0.5 + 0.5 * alpha, vertex[k], vertex[j]),
                end,
            };
        }
        alphas[j] = alpha;
    }
    Curve {
        segs,
        vertex: vertex.to_vec(),
        alpha: alphas,
    }
}

/// A candidate joined segment.
#[derive(Clone, Copy, Default)]
struct Opti {
    pen: f64,
    c0: P2,
    c1: P2,
    alpha: f64,
}

const COS179: f64 = -0.999_847_695_156_391_3;

/// Tries to replace segments `i+1 ..= j` by one Bézier; returns it with its penalty, or
/// `None` if the segments are not joinable within `opttolerance`.
fn opti_penalty(
    curve: &Curve,
    i: usize,
    j: usize,
    opttolerance: f64,
    convc: &[i32],
    areac: &[f64],
) -> Option<Opti> {
    let m = curve.segs.len();
    let v = &curve.vertex;
    let end = |k: usize| curve.segs[k].end();
    if i == j {
        return None;
    }
    // Convexity, no corners, and no turn of 179° or more.
    let i1 = (i + 1) % m;
    let conv = convc[i1];
    if conv == 0 {
        return None;
    }
    let d = ddist(v[i], v[i1]);
    let mut k = i1;
    while k != j {
        let k1 = (k + 1) % m;
        let k2 = (k + 2) % m;
        if convc[k1] != conv {
            return None;
        }
        if sign(cprod(v[i], v[i1], v[k1], v[k2])) != conv {
            return None;
        }
        if iprod1(v[i], v[i1], v[k1], v[k2]) < d * ddist(v[k1], v[k2]) * COS179 {
            return None;
        }
        k = k1;
    }
    // The curve to approximate runs from p0 to p3 with tangents towards p1 and p2.
    let p0 = end(i % m);
    let mut p1 = v[(i + 1) % m];
    let mut p2 = v[j % m];
    let p3 = end(j % m);
    let mut area = areac[j] - areac[i];
    area -= dpara(v[0], end(i), end(j)) / 2.0;
    if i >= j {
        area += areac[m];
    }
    let a1 = dpara(p0, p1, p2);
    let a2 = dpara(p0, p1, p3);
    let a3 = dpara(p0, p2, p3);
    let a4 = a1 + a3 - a2;
    if a2 == a1 {
        return None;
    }
    let t = a3 / (a3 - a4);
    let s = a2 / (a2 - a1);
    let a = a2 * t / 2.0;
    if a == 0.0 {
        return None;
    }
    let r = area / a;
    let alpha = 2.0 - (4.0 - r / 0.3).sqrt();
    let c0 = interval(t * alpha, p0, p1);
    let c1 = interval(s * alpha, p3, p2);
    p1 = c0;
    p2 = c1;
    let mut pen = 0.0;
    // Tangency with the polygon edges.
    let mut k = (i + 1) % m;
    while k != j {
        let k1 = (k + 1) % m;
        let t = tangent(p0, p1, p2, p3, v[k], v[k1])?;
        let pt = bezier(t, p0, p1, p2, p3);
        let d = ddist(v[k], v[k1]);
        if d == 0.0 {
            return None;
        }
        let d1 = dpara(v[k], v[k1], pt) / d;
        if d1.abs() > opttolerance {
            return None;
        }
        if iprod(v[k], v[k1], pt) < 0.0 || iprod(v[k1], v[k], pt) < 0.0 {
            return None;
        }
        pen += d1 * d1;
        k = k1;
    }
    // Distance to the original curve at the segment joins.
    let mut k = i;
    while k != j {
        let k1 = (k + 1) % m;
        let t = tangent(p0, p1, p2, p3, end(k), end(k1))?;
        let pt = bezier(t, p0, p1, p2, p3);
        let d = ddist(end(k), end(k1));
        if d == 0.0 {
            return None;
        }
        let mut d1 = dpara(end(k), end(k1), pt) / d;
        let mut d2 = dpara(end(k), end(k1), v[k1]) / d;
        d2 *= 0.75 * curve.alpha[k1];
        if d2 < 0.0 {
            d1 = -d1;
            d2 = -d2;
        }
        if d1 < d2 - opttolerance {
            return None;
        }
        if d1 < d2 {
            pen += (d1 - d2) * (d1 - d2);
        }
        k = k1;
    }
    Some(Opti { pen, c0, c1, alpha })
}

/// Curve optimisation: the fewest segments (then the least penalty) that approximate the
/// curve within `opttolerance`.
pub fn optimize(curve: &Curve, opttolerance: f64) -> Curve {
    let m = curve.segs.len();
    let v = &curve.vertex;
    let convc: Vec<i32> = (0..m)
        .map(|i| match curve.segs[i] {
            Seg::Bezier { .. } => sign(dpara(v[(i + m - 1) % m], v[i], v[(i + 1) % m])),
            Seg::Corner { .. } => 0,
        })
        .collect();
    // areac[i]: area enclosed by the curve's first i segments and the chords to vertex 0.
    let mut areac = vec![0.0; m + 1];
    let mut area = 0.0;
    let p0 = v[0];
    for i in 0..m {
        let i1 = (i + 1) % m;
        if let Seg::Bezier { .. } = curve.segs[i1] {
            let alpha = curve.alpha[i1];
            let (ci, ci1) = (curve.segs[i].end(), curve.segs[i1].end());
            area += 0.3 * alpha * (4.0 - alpha) * dpara(ci, v[i1], ci1) / 2.0;
            area += dpara(p0, ci, ci1) / 2.0;
        }
        areac[i + 1] = area;
    }
    let mut pt = vec![0usize; m + 1];
    let mut pen = vec![0.0; m + 1];
    let mut len = vec![0usize; m + 1];
    let mut opt = vec![Opti::default(); m + 1];
    for j in 1..=m {
        pt[j] = j - 1;
        pen[j] = pen[j - 1];
        len[j] = len[j - 1] + 1;
        for i in (0..j.saturating_sub(1)).rev() {
            let Some(o) = opti_penalty(curve, i, j % m, opttolerance, &convc, &areac) else {
                break;
            };
            if len[j] > len[i] + 1 || (len[j] == len[i] + 1 && pen[j] > pen[i] + o.pen) {
                pt[j] = i;
                pen[j] = pen[i] + o.pen;
                len[j] = len[i] + 1;
                opt[j] = o;
            }
        }
    }
    let om = len[m];
    let mut segs = vec![curve.segs[0]; om];
    let mut vertex = vec![P2::default(); om];
    let mut alpha = vec![0.0; om];
    let mut j = m;
    for i in (0..om).rev() {
        let jm = j % m;
        if pt[j] == j - 1 {
            segs[i] = curve.segs[jm];
            vertex[i] = v[jm];
            alpha[i] = curve.alpha[jm];
        } else {
            let o = opt[j];
            segs[i] = Seg::Bezier {
                c1: o.c0,
                c2: o.c1,
                end: curve.segs[jm].end(),
            };
            vertex[i] = v[jm];
            alpha[i] = o.alpha;
        }
        j = pt[j];
    }
    Curve {
        segs,
        vertex,
        alpha,
    }
}
