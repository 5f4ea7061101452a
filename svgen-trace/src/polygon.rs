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
fn sign(v: i64) -> i64 {
    v.signum()
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

/// `lon[i]` for every point: the furthest `k` (cyclically) such that points `i..=k` form a
/// straight sub-path — more precisely potrace's conservative version that allows one step
/// back from the first violation.
pub fn calc_lon(pt: &[(i32, i32)]) -> Vec<usize> {
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
    let mut clip0 = vec![0usize; n];
    for i in 0..n {
        let mut c = (lon[(i + n - 1) % n] + n - 1) % n;
        if c == i {
            c = (i + 1) % n;
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
    fn sums_are_prefix_sums() {
        let pt = rect(2, 1);
        let s = Sums::new(&pt);
        assert_eq!(s.sums.len(), pt.len() + 1);
        let sx: i32 = pt.iter().map(|p| p.0 - pt[0].0).sum();
        assert_eq!(s.sums[pt.len()].x, f64::from(sx));
    }
}
