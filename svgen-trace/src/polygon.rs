//! The optimal polygon (paper §2.2) and vertex adjustment (§2.3.1).
//!
//! For a closed lattice path of `n` points the stages are:
//! 1. prefix sums of `x, y, x², xy, y²` ([`Sums`]) so that least-squares fits of any sub-path
//!    cost O(1);
//! 2. `lon[i]`: the furthest point reachable from `i` by a *straight* sub-path (one that does
//!    not use all four directions and stays within distance ½ of a line);
//! 3. the best polygon: among polygons whose edges are straight sub-paths, the one with the
//!    fewest edges and, among those, the smallest total penalty (dynamic programming);
//! 4. vertex adjustment: every polygon vertex moves, inside the unit square around its lattice
//!    point, to the point closest (in the least-squares sense) to the two adjacent fitted lines.

use std::hint::select_unpredictable;

/// Cumulative sums over a path, relative to its first point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sum {
    /// Σx
    pub x: f64,
    /// Σy
    pub y: f64,
    /// Σx²
    pub x2: f64,
    /// Σxy
    pub xy: f64,
    /// Σy²
    pub y2: f64,
}

/// Prefix sums (`n + 1` entries) of a closed path.
#[derive(Debug, Clone)]
pub struct Sums {
    /// `sums[i]` holds the sums over points `0..i`.
    pub sums: Vec<Sum>,
    /// The first point, origin of the sums.
    pub origin: (i32, i32),
}

/// A 2-d point with `f64` coordinates (internal, potrace coordinates).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct P2 {
    /// x
    pub x: f64,
    /// y
    pub y: f64,
}

impl P2 {
    /// A point.
    pub const fn new(x: f64, y: f64) -> P2 {
        P2 { x, y }
    }
}

#[inline]
fn xprod(a: (i64, i64), b: (i64, i64)) -> i64 {
    a.0 * b.1 - a.1 * b.0
}

#[inline]
fn md(a: i64, n: i64) -> i64 {
    a.rem_euclid(n)
}

/// Whether `b` lies in the cyclic interval `[a, c)` (with `a <= c` meaning the plain interval).
#[inline]
fn cyclic(a: i64, b: i64, c: i64) -> bool {
    if a <= c {
        a <= b && b < c
    } else {
        a <= b || b < c
    }
}

/// Floor division for a positive divisor.
#[inline]
fn floordiv(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

impl Sums {
    /// Computes the prefix sums of `pt`.
    pub fn new(pt: &[(i32, i32)]) -> Sums {
        let origin = pt[0];
        let mut sums = Vec::with_capacity(pt.len() + 1);
        let mut acc = Sum::default();
        sums.push(acc);
        for &(px, py) in pt {
            let x = f64::from(px - origin.0);
            let y = f64::from(py - origin.1);
            acc.x += x;
            acc.y += y;
            acc.x2 += x * x;
            acc.xy += x * y;
            acc.y2 += y * y;
            sums.push(acc);
        }
        Sums { sums, origin }
    }
}

/// One corner of a path as [`calc_lon`] walks it: its coordinates, the direction of the
/// straight run from it to the next corner, and its index unwrapped (plus `n` per lap).
#[derive(Clone, Copy)]
struct Corner {
    x: i32,
    y: i32,
    /// Direction bit (see [`dir_bit`]) of the run from this corner to the next.
    dir: u32,
    unwrapped: usize,
}

/// The direction of the step from `a` to `b` as one of four bits, indexed as in potrace:
/// `(3 + 3·sign(dx) + sign(dy)) / 2`.
#[inline]
fn dir_bit(a: (i32, i32), b: (i32, i32)) -> u32 {
    let sx = i32::from(b.0.cmp(&a.0) as i8);
    let sy = i32::from(b.1.cmp(&a.1) as i8);
    1 << ((3 + 3 * sx + sy) / 2)
}

/// How the straightness walk from a point ended.
enum WalkEnd {
    /// All four directions used: the last corner reached is the pivot.
    Found,
    /// The corner after the last one reached left the cone of directions (or the walk came
    /// full circle); the pivot lies on the run between them.
    Failed,
    /// The walk reached the clipping bound, so the clipped result is known without the pivot.
    Clipped,
}

/// `lon[i]` for every point: the furthest `k` (cyclically) such that points `i..=k` form a
/// straight sub-path — more precisely potrace's conservative version that allows one step
/// back from the first violation, clipped so that it never decreases going forwards.
///
/// For every `i` the walk visits the corners after `i` until the sub-path stops being straight
/// (all four directions used, or a point outside the cone of admissible directions), which
/// makes it the hot loop of the whole tracer on smooth outlines. Potrace computes every pivot,
/// then clips; here:
/// * since `nc` (next corner) maps every corner to the next one, the corners are laid out once
///   in walking order, twice over so that no walk wraps, and each walk reads them one after
///   the other instead of chasing links with a dependent load per step;
/// * the clip is applied during the walks (from the last point backwards): once a walk passes
///   the clipped value of the next point, its own pivot lies beyond it and `lon[i]` is that
///   value, so the rest of the walk is skipped (about a fifth of the steps on smooth shapes);
/// * the direction counters are a bit mask, and the cone updates conditional moves.
pub fn calc_lon(pt: &[(i32, i32)]) -> Vec<usize> {
    let n = pt.len();
    if n == 0 {
        return Vec::new();
    }
    let ni = n as i64;
    // nc[i] ("next corner"), computed backwards: i + 1 when pt[i] differs in both coordinates
    // from pt[nc[i + 1]], else nc[i + 1]. The walk jumps from corner to corner rather than from
    // point to point, since the straightness constraints only change there. So nc[i] is the
    // smallest corner after i (0 past the last one), the corners in walking order are 0
    // followed by the distinct values of nc ascending, and nc maps each to the next one
    // cyclically; only that order is kept. `lon[i]` holds how many corners lie after i until
    // the walk from i replaces it.
    let mut lon = vec![0usize; n];
    // (Written without a branch on the corner test, which follows the shape.)
    let mut order = vec![0usize; n + 1];
    let mut corners_after = 0usize;
    let mut k = 0usize;
    for i in (0..n).rev() {
        let (a, b) = (pt[i], pt[k]);
        let corner = (a.0 != b.0) & (a.1 != b.1);
        k = select_unpredictable(corner, i + 1, k);
        order[corners_after + 1] = k;
        corners_after += usize::from(corner);
        lon[i] = corners_after;
    }
    order.truncate(corners_after + 1);
    order[1..].reverse();
    let len = order.len();
    // Corner `order[p % len]` at position p, for p in 0..=2·len; corner 0 ends each lap.
    let mut corners: Vec<Corner> = Vec::with_capacity(2 * len + 1);
    for lap in 0..2 {
        for (p, &c) in order.iter().enumerate() {
            let next = order.get(p + 1).copied().unwrap_or(0);
            corners.push(Corner {
                x: pt[c].0,
                y: pt[c].1,
                dir: dir_bit(pt[c], pt[next]),
                unwrapped: if p == 0 { lap * n } else { c + lap * n },
            });
        }
    }
    corners.push(Corner {
        unwrapped: 2 * n,
        ..corners[0]
    });
    // The clipped lon of the point after i (none yet for the last point).
    let mut j = usize::MAX;
    for i in (0..n).rev() {
        // nc[i] is at position len - (corners after i), or at len (corner 0 after the last
        // corner) when there are none.
        let start = len - lon[i];
        // Walk positions unwrapped like `Corner::unwrapped`: reaching `bound` means the
        // pivot is at or beyond j, which the clip then returns (with j = i + 1 at once).
        let bound = if j == usize::MAX {
            usize::MAX
        } else if j > i {
            j
        } else {
            j + n
        };
        if bound == i + 1 {
            lon[i] = j;
            continue;
        }
        // The walk: the corners from nc[i] once round the path, back to nc[i]. The corners
        // partition the path and the run ending at nc[i] holds i, so arriving at nc[i] again
        // is where potrace's walk stops having come full circle (`!cyclic(k, i, k1)`).
        let walk = &corners[start..=start + len];
        let (ix, iy) = (i64::from(pt[i].0), i64::from(pt[i].1));
        let i1 = if i + 1 == n { 0 } else { i + 1 };
        // Directions used so far: the first step, then each run between corners walked.
        let nci = if start == len { 0 } else { order[start] };
        let mut dirs = dir_bit(pt[i], pt[i1]) | dir_bit(pt[i], pt[nci]);
        // The allowed cone of directions, as two bounding vectors.
        let (mut c0x, mut c0y, mut c1x, mut c1y) = (0i64, 0i64, 0i64, 0i64);
        // Walking from corner k1 to corner k = walk[q] (k1 = i for q = 0).
        let mut q = 0usize;
        let end = loop {
            if dirs == 0b1111 {
                break WalkEnd::Found;
            }
            if q == len {
                break WalkEnd::Failed;
            }
            let ck = walk[q];
            let (cx, cy) = (i64::from(ck.x) - ix, i64::from(ck.y) - iy);
            let (t0, t1) = (c0x * cy - c0y * cx, c1x * cy - c1y * cx);
            if (t0 < 0) | (t1 > 0) {
                break WalkEnd::Failed;
            }
            if (cx.abs() > 1) | (cy.abs() > 1) {
                // The bounds move to cur + (±1, ±1) when that tightens them. With
                // off = cur + (dx, dy), xprod(c, off) = xprod(c, cur) + c.x·dy - c.y·dx, and
                // whether it tightens depends on the shape, not on a pattern a branch predictor
                // could learn: conditional moves instead of branches (and `|`, `&` rather than
                // `||`, `&&`, which compile to branches).
                let pm = |c: bool, v: i64| select_unpredictable(c, v, -v);
                let dx = (cy > 0) | ((cy == 0) & (cx < 0));
                let dy = (cx < 0) | ((cx == 0) & (cy < 0));
                let tighter = t0 + pm(dy, c0x) - pm(dx, c0y) >= 0;
                c0x = select_unpredictable(tighter, cx + pm(dx, 1), c0x);
                c0y = select_unpredictable(tighter, cy + pm(dy, 1), c0y);
                let dx = (cy < 0) | ((cy == 0) & (cx < 0));
                let dy = (cx > 0) | ((cx == 0) & (cy < 0));
                let tighter = t1 + pm(dy, c1x) - pm(dx, c1y) <= 0;
                c1x = select_unpredictable(tighter, cx + pm(dx, 1), c1x);
                c1y = select_unpredictable(tighter, cy + pm(dy, 1), c1y);
            }
            dirs |= ck.dir;
            q += 1;
            // ck is the new k1. The pivot never lies before the last corner reached (all
            // later cone updates keep the points reached inside the cone).
            if ck.unwrapped >= bound {
                break WalkEnd::Clipped;
            }
        };
        // (Positions wrap with a comparison: a division per point is measurable here.)
        let wrap = |v: usize| if v >= len { v - len } else { v };
        let k1 = if q == 0 {
            i
        } else {
            order[wrap(wrap(start + q - 1))]
        };
        let pivot = match end {
            WalkEnd::Clipped => {
                lon[i] = j;
                continue;
            }
            WalkEnd::Found => k1,
            WalkEnd::Failed => {
                // k1 satisfied the constraints, k did not: find the last point on the
                // straight run from k1 towards k that still does.
                let k = order[wrap(wrap(start + q))];
                let (pk, pk1) = (pt[k], pt[k1]);
                let dk = (
                    i64::from((pk.0 - pk1.0).signum()),
                    i64::from((pk.1 - pk1.1).signum()),
                );
                let cur = (i64::from(pk1.0) - ix, i64::from(pk1.1) - iy);
                let a = xprod((c0x, c0y), cur);
                let b = xprod((c0x, c0y), dk);
                let c = xprod((c1x, c1y), cur);
                let d = xprod((c1x, c1y), dk);
                let mut step = i64::MAX;
                if b < 0 {
                    step = floordiv(a, -b);
                }
                if d > 0 {
                    step = step.min(floordiv(-c, d));
                }
                let k = k1 as i64 + step;
                if (0..ni).contains(&k) {
                    k as usize
                } else {
                    md(k, ni) as usize
                }
            }
        };
        // Potrace's clip: lon[i] = pivk[i] when it lies before lon[i + 1] (cyclically).
        if j == usize::MAX || cyclic(i as i64 + 1, pivot as i64, j as i64) {
            j = pivot;
        }
        lon[i] = j;
    }
    let mut i = n as i64 - 1;
    while i >= 0 && cyclic(md(i + 1, ni), j as i64, lon[i as usize] as i64) {
        lon[i as usize] = j;
        i -= 1;
    }
    lon
}

/// The penalty of the polygon edge from point `i` to point `j` (`j` may exceed `n` to wrap):
/// the root of the summed squared distances of the sub-path's points from the edge, scaled by
/// its length.
fn penalty3(pt: &[(i32, i32)], sums: &Sums, i: usize, j: usize) -> f64 {
    let n = pt.len();
    let s = &sums.sums;
    let (j, wrap) = if j >= n { (j - n, true) } else { (j, false) };
    let (x, y, x2, xy, y2, k) = if wrap {
        (
            s[j + 1].x - s[i].x + s[n].x,
            s[j + 1].y - s[i].y + s[n].y,
            s[j + 1].x2 - s[i].x2 + s[n].x2,
            s[j + 1].xy - s[i].xy + s[n].xy,
            s[j + 1].y2 - s[i].y2 + s[n].y2,
            (j + 1 + n - i) as f64,
        )
    } else {
        (
            s[j + 1].x - s[i].x,
            s[j + 1].y - s[i].y,
            s[j + 1].x2 - s[i].x2,
            s[j + 1].xy - s[i].xy,
            s[j + 1].y2 - s[i].y2,
            (j + 1 - i) as f64,
        )
    };
    let (o0, o1) = (f64::from(pt[0].0), f64::from(pt[0].1));
    let (pi, pj) = (pt[i], pt[j]);
    let px = f64::from(pi.0 + pj.0) / 2.0 - o0;
    let py = f64::from(pi.1 + pj.1) / 2.0 - o1;
    let ey = f64::from(pj.0 - pi.0);
    let ex = -f64::from(pj.1 - pi.1);
    let a = (x2 - 2.0 * x * px) / k + px * px;
    let b = (xy - x * py - y * px) / k + px * py;
    let c = (y2 - 2.0 * y * py) / k + py * py;
    let s = ex * ex * a + 2.0 * ex * ey * b + ey * ey * c;
    s.sqrt()
}

/// The optimal polygon: indices of the path points that are its vertices, in order.
pub fn best_polygon(pt: &[(i32, i32)], sums: &Sums, lon: &[usize]) -> Vec<usize> {
    let n = pt.len();
    // clip0[i]: the furthest vertex an edge starting at i may reach (n = wraps past the end).
    // (Indices wrap with a comparison rather than `%`: a division per point is measurable.)
    let wrap = |v: usize| if v >= n { v - n } else { v };
    let mut clip0 = vec![0usize; n];
    for i in 0..n {
        let mut c = wrap(lon[if i == 0 { n - 1 } else { i - 1 }] + n - 1);
        if c == i {
            c = wrap(i + 1);
        }
        clip0[i] = if c < i { n } else { c };
    }
    // clip1[j]: the smallest i from which an edge can reach j.
    let mut clip1 = vec![0usize; n + 1];
    let mut j = 1usize;
    for (i, &c) in clip0.iter().enumerate() {
        while j <= c {
            clip1[j] = i;
            j += 1;
        }
    }
    // seg0[j]: the furthest point reachable with j edges from 0; m = fewest edges to reach n.
    let mut seg0 = Vec::new();
    let mut i = 0usize;
    while i < n {
        seg0.push(i);
        i = clip0[i];
    }
    seg0.push(n);
    let m = seg0.len() - 1;
    // seg1[j]: the nearest point from which n is reachable with m - j edges.
    let mut seg1 = vec![0usize; m + 1];
    let mut i = n;
    for j in (1..=m).rev() {
        seg1[j] = i;
        i = clip1[i];
    }
    seg1[0] = 0;
    let mut pen = vec![0f64; n + 1];
    let mut prev = vec![0usize; n + 1];
    for j in 1..=m {
        for i in seg1[j]..=seg0[j] {
            let mut best = -1.0f64;
            for k in (clip1[i]..=seg0[j - 1]).rev() {
                let this = penalty3(pt, sums, k, i) + pen[k];
                if best < 0.0 || this < best {
                    prev[i] = k;
                    best = this;
                }
            }
            pen[i] = best;
        }
    }
    let mut po = vec![0usize; m];
    let mut i = n;
    for j in (0..m).rev() {
        i = prev[i];
        po[j] = i;
    }
    po
}

/// Least-squares line through points `i..=j` (indices may wrap): centre and unit direction.
fn point_slope(sums: &Sums, n: usize, i: i64, j: i64) -> (P2, P2) {
    let s = &sums.sums;
    let n_i = n as i64;
    let (mut i, mut j, mut r) = (i, j, 0i64);
    while j >= n_i {
        j -= n_i;
        r += 1;
    }
    while i >= n_i {
        i -= n_i;
        r -= 1;
    }
    while j < 0 {
        j += n_i;
        r -= 1;
    }
    while i < 0 {
        i += n_i;
        r += 1;
    }
    let (iu, ju) = (i as usize, j as usize);
    let rf = r as f64;
    let x = s[ju + 1].x - s[iu].x + rf * s[n].x;
    let y = s[ju + 1].y - s[iu].y + rf * s[n].y;
    let x2 = s[ju + 1].x2 - s[iu].x2 + rf * s[n].x2;
    let xy = s[ju + 1].xy - s[iu].xy + rf * s[n].xy;
    let y2 = s[ju + 1].y2 - s[iu].y2 + rf * s[n].y2;
    let k = (j + 1 - i + r * n_i) as f64;
    let ctr = P2::new(x / k, y / k);
    let mut a = (x2 - x * x / k) / k;
    let b = (xy - x * y / k) / k;
    let mut c = (y2 - y * y / k) / k;
    // the larger eigenvalue of the covariance matrix
    let lambda2 = (a + c + ((a - c) * (a - c) + 4.0 * b * b).sqrt()) / 2.0;
    a -= lambda2;
    c -= lambda2;
    let (l, dir) = if a.abs() >= c.abs() {
        let l = (a * a + b * b).sqrt();
        (l, P2::new(-b / l, a / l))
    } else {
        let l = (c * c + b * b).sqrt();
        (l, P2::new(-c / l, b / l))
    };
    let dir = if l == 0.0 { P2::default() } else { dir };
    (ctr, dir)
}

type Quad = [[f64; 3]; 3];

fn quadform(q: &Quad, w: P2) -> f64 {
    let v = [w.x, w.y, 1.0];
    let mut sum = 0.0;
    for i in 0..3 {
        for j in 0..3 {
            sum += v[i] * q[i][j] * v[j];
        }
    }
    sum
}

/// Vertex adjustment: the optimal polygon's vertices moved to best fit the path, each within
/// the unit square centred on its lattice point. Returned in potrace coordinates.
pub fn adjust_vertices(pt: &[(i32, i32)], sums: &Sums, po: &[usize]) -> Vec<P2> {
    let n = pt.len();
    let m = po.len();
    let (x0, y0) = (f64::from(sums.origin.0), f64::from(sums.origin.1));
    // the least-squares line of every polygon edge, as a quadratic form of squared distance
    let mut q: Vec<Quad> = Vec::with_capacity(m);
    for i in 0..m {
        let mut j = po[(i + 1) % m] as i64;
        j = (j - po[i] as i64).rem_euclid(n as i64) + po[i] as i64;
        let (ctr, dir) = point_slope(sums, n, po[i] as i64, j);
        let d = dir.x * dir.x + dir.y * dir.y;
        let mut qi = [[0.0; 3]; 3];
        if d != 0.0 {
            let v = [dir.y, -dir.x, 0.0];
            let v = [v[0], v[1], -v[1] * ctr.y - v[0] * ctr.x];
            for (l, row) in qi.iter_mut().enumerate() {
                for (k, e) in row.iter_mut().enumerate() {
                    *e = v[l] * v[k] / d;
                }
            }
        }
        q.push(qi);
    }
    let mut vertex = Vec::with_capacity(m);
    for i in 0..m {
        let s = P2::new(f64::from(pt[po[i]].0) - x0, f64::from(pt[po[i]].1) - y0);
        let j = (i + m - 1) % m;
        let mut qm: Quad = [[0.0; 3]; 3];
        for l in 0..3 {
            for k in 0..3 {
                qm[l][k] = q[j][l][k] + q[i][l][k];
            }
        }
        let w = loop {
            let det = qm[0][0] * qm[1][1] - qm[0][1] * qm[1][0];
            if det != 0.0 {
                break P2::new(
                    (-qm[0][2] * qm[1][1] + qm[1][2] * qm[0][1]) / det,
                    (qm[0][2] * qm[1][0] - qm[1][2] * qm[0][0]) / det,
                );
            }
            // Singular (parallel lines): add a line through the lattice point orthogonal to
            // them, which picks the point of the valley nearest to it.
            let v01 = if qm[0][0] > qm[1][1] {
                [-qm[0][1], qm[0][0]]
            } else if qm[1][1] != 0.0 {
                [-qm[1][1], qm[1][0]]
            } else {
                [1.0, 0.0]
            };
            let d = v01[0] * v01[0] + v01[1] * v01[1];
            let v = [v01[0], v01[1], -v01[1] * s.y - v01[0] * s.x];
            for l in 0..3 {
                for k in 0..3 {
                    qm[l][k] += v[l] * v[k] / d;
                }
            }
        };
        if (w.x - s.x).abs() <= 0.5 && (w.y - s.y).abs() <= 0.5 {
            vertex.push(P2::new(w.x + x0, w.y + y0));
            continue;
        }
        // The minimum lies outside the unit square: take the best point on its boundary.
        let mut min = quadform(&qm, s);
        let mut best = s;
        if qm[0][0] != 0.0 {
            for z in 0..2 {
                let wy = s.y - 0.5 + f64::from(z);
                let wx = -(qm[0][1] * wy + qm[0][2]) / qm[0][0];
                let cand = quadform(&qm, P2::new(wx, wy));
                if (wx - s.x).abs() <= 0.5 && cand < min {
                    min = cand;
                    best = P2::new(wx, wy);
                }
            }
        }
        if qm[1][1] != 0.0 {
            for z in 0..2 {
                let wx = s.x - 0.5 + f64::from(z);
                let wy = -(qm[1][0] * wx + qm[1][2]) / qm[1][1];
                let cand = quadform(&qm, P2::new(wx, wy));
                if (wy - s.y).abs() <= 0.5 && cand < min {
                    min = cand;
                    best = P2::new(wx, wy);
                }
            }
        }
        for l in 0..2 {
            for k in 0..2 {
                let w = P2::new(s.x - 0.5 + f64::from(l), s.y - 0.5 + f64::from(k));
                let cand = quadform(&qm, w);
                if cand < min {
                    min = cand;
                    best = w;
                }
            }
        }
        vertex.push(P2::new(best.x + x0, best.y + y0));
    }
    vertex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(v: i64) -> i64 {
        v.signum()
    }

    /// The straightforward transcription of potrace's `calc_lon` (with four direction
    /// counters), kept to check the register-friendly [`calc_lon`] against.
    fn calc_lon_reference(pt: &[(i32, i32)]) -> Vec<usize> {
        let n = pt.len() as i64;
        let p = |i: i64| {
            let (x, y) = pt[i as usize];
            (i64::from(x), i64::from(y))
        };
        // nc[i] ("next corner"), computed backwards: i + 1 when pt[i] differs in both coordinates
        // from pt[nc[i + 1]], else nc[i + 1]. The walk below jumps from corner to corner rather
        // than from point to point, since the straightness constraints only change there.
        let mut nc = vec![0i64; n as usize];
        let mut k = 0i64;
        for i in (0..n).rev() {
            let (a, b) = (p(i), p(k));
            if a.0 != b.0 && a.1 != b.1 {
                k = i + 1;
            }
            nc[i as usize] = k;
        }
        let mut pivk = vec![0i64; n as usize];
        for i in (0..n).rev() {
            let mut ct = [0u32; 4];
            let step = |a: (i64, i64), b: (i64, i64)| {
                ((3 + 3 * sign(b.0 - a.0) + sign(b.1 - a.1)) / 2) as usize
            };
            ct[step(p(i), p(md(i + 1, n)))] += 1;
            // The allowed cone of directions, as two bounding vectors.
            let mut c0 = (0i64, 0i64);
            let mut c1 = (0i64, 0i64);
            let mut k = nc[i as usize];
            let mut k1 = i;
            let found = 'walk: loop {
                ct[step(p(k1), p(k))] += 1;
                if ct.iter().all(|&c| c > 0) {
                    break 'walk Some(k1);
                }
                let pi = p(i);
                let pk = p(k);
                let cur = (pk.0 - pi.0, pk.1 - pi.1);
                if xprod(c0, cur) < 0 || xprod(c1, cur) > 0 {
                    break 'walk None;
                }
                if cur.0.abs() > 1 || cur.1.abs() > 1 {
                    let off = (
                        cur.0
                            + if cur.1 >= 0 && (cur.1 > 0 || cur.0 < 0) {
                                1
                            } else {
                                -1
                            },
                        cur.1
                            + if cur.0 <= 0 && (cur.0 < 0 || cur.1 < 0) {
                                1
                            } else {
                                -1
                            },
                    );
                    if xprod(c0, off) >= 0 {
                        c0 = off;
                    }
                    let off = (
                        cur.0
                            + if cur.1 <= 0 && (cur.1 < 0 || cur.0 < 0) {
                                1
                            } else {
                                -1
                            },
                        cur.1
                            + if cur.0 >= 0 && (cur.0 > 0 || cur.1 < 0) {
                                1
                            } else {
                                -1
                            },
                    );
                    if xprod(c1, off) <= 0 {
                        c1 = off;
                    }
                }
                k1 = k;
                k = nc[k1 as usize];
                if !cyclic(k, i, k1) {
                    break 'walk None;
                }
            };
            pivk[i as usize] = match found {
                Some(piv) => piv,
                None => {
                    // k1 satisfied the constraints, k did not: find the last point on the straight
                    // run from k1 towards k that still does.
                    let (pk, pk1, pi) = (p(k), p(k1), p(i));
                    let dk = (sign(pk.0 - pk1.0), sign(pk.1 - pk1.1));
                    let cur = (pk1.0 - pi.0, pk1.1 - pi.1);
                    let a = xprod(c0, cur);
                    let b = xprod(c0, dk);
                    let c = xprod(c1, cur);
                    let d = xprod(c1, dk);
                    let mut j = i64::MAX;
                    if b < 0 {
                        j = floordiv(a, -b);
                    }
                    if d > 0 {
                        j = j.min(floordiv(-c, d));
                    }
                    md(k1 + j, n)
                }
            };
        }
        // lon[i] = pivk[i] clipped so that lon is monotone (cyclically).
        let mut lon = vec![0usize; n as usize];
        let mut j = pivk[(n - 1) as usize];
        lon[(n - 1) as usize] = j as usize;
        for i in (0..n - 1).rev() {
            if cyclic(i + 1, pivk[i as usize], j) {
                j = pivk[i as usize];
            }
            lon[i as usize] = j as usize;
        }
        let mut i = n - 1;
        while i >= 0 && cyclic(md(i + 1, n), j, lon[i as usize] as i64) {
            lon[i as usize] = j as usize;
            i -= 1;
        }
        lon
    }

    /// The lattice boundary of a w×h rectangle, walked counter-clockwise from its top-left.
    fn rect(w: i32, h: i32) -> Vec<(i32, i32)> {
        let mut p = Vec::new();
        for y in (1..=h).rev() {
            p.push((0, y));
        }
        for x in 0..w {
            p.push((x, 0));
        }
        for y in 0..h {
            p.push((w, y));
        }
        for x in (1..=w).rev() {
            p.push((x, h));
        }
        p
    }

    #[test]
    fn rectangle_polygon_is_its_four_corners() {
        let pt = rect(6, 4);
        let sums = Sums::new(&pt);
        let lon = calc_lon(&pt);
        let po = best_polygon(&pt, &sums, &lon);
        assert_eq!(po.len(), 4);
        let corners: Vec<_> = po.iter().map(|&i| pt[i]).collect();
        for c in [(0, 0), (6, 0), (6, 4), (0, 4)] {
            assert!(corners.contains(&c), "{corners:?}");
        }
        let v = adjust_vertices(&pt, &sums, &po);
        for (p, &i) in v.iter().zip(&po) {
            assert!((p.x - f64::from(pt[i].0)).abs() < 1e-9);
            assert!((p.y - f64::from(pt[i].1)).abs() < 1e-9);
        }
    }

    #[test]
    fn calc_lon_matches_the_reference_walk() {
        use crate::decompose::decompose;
        use crate::{Bitmap, TurnPolicy};
        // Blobs of random density and smoothness: many short and long straight runs.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut paths = 0;
        for case in 0..12u64 {
            let (w, h) = (40 + (case * 17 % 90) as u32, 30 + (case * 29 % 70) as u32);
            let cell = 1 + (case % 6) as u32;
            let cols = w / cell + 1;
            let bits: Vec<bool> = (0..cols * (h / cell + 1))
                .map(|_| next() % 3 == 0)
                .collect();
            let bm =
                Bitmap::from_fn(w, h, |x, y| bits[(y / cell * cols + x / cell) as usize]).unwrap();
            for policy in [TurnPolicy::Minority, TurnPolicy::Black, TurnPolicy::Right] {
                for raw in decompose(&bm, 0, policy) {
                    assert_eq!(calc_lon(&raw.points), calc_lon_reference(&raw.points));
                    paths += 1;
                }
            }
        }
        assert!(paths > 500, "{paths}");
        // A large smooth outline (long walks) and one away from the origin, partly negative.
        let disc = Bitmap::from_fn(300, 300, |x, y| {
            let (dx, dy) = (f64::from(x) - 150.3, f64::from(y) - 149.1);
            dx * dx + dy * dy < 140.0 * 140.0
        })
        .unwrap();
        for raw in decompose(&disc, 0, TurnPolicy::Minority) {
            assert_eq!(calc_lon(&raw.points), calc_lon_reference(&raw.points));
            let shifted: Vec<(i32, i32)> = raw
                .points
                .iter()
                .map(|&(x, y)| (x - 200, y - 1000))
                .collect();
            assert_eq!(calc_lon(&shifted), calc_lon_reference(&shifted));
        }
    }

    #[test]
    fn sums_are_prefix_sums() {
        let pt = rect(2, 1);
        let s = Sums::new(&pt);
        assert_eq!(s.sums.len(), pt.len() + 1);
        let sx: i32 = pt.iter().map(|p| p.0 - pt[0].0).sum();
        assert_eq!(s.sums[pt.len()].x, f64::from(sx));
    }
}
