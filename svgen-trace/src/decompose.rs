//! Path decomposition (paper §2.1): the boundaries between black and white pixels are split
//! into closed paths, and the nesting of these paths is recovered.
//!
//! Coordinates here are potrace's: `x` to the right, `y` **up**, pixel `(x, y)` covering the
//! unit square `[x, x+1] × [y, y+1]`, path vertices on the integer lattice. Image row `r` of a
//! [`Bitmap`] of height `h` is potrace row `h - 1 - r`.
//!
//! The decomposition repeatedly finds the first black pixel in reading order (top row first,
//! left to right) of a working copy of the bitmap, walks around the boundary of its region
//! keeping black on the left, and inverts the interior of the walked path in the working copy.
//! A path is *positive* (an outline) if its first pixel is black in the original bitmap and
//! *negative* (a hole) otherwise. Paths enclosing at most `turdsize` pixels are dropped.

use crate::bitmap::{Bitmap, WORD_BITS};
use crate::params::TurnPolicy;
use crate::path::Sign;

/// A closed lattice path produced by decomposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPath {
    /// Outline (`+`) or hole (`-`).
    pub sign: Sign,
    /// Number of pixels enclosed by the path (always positive).
    pub area: i64,
    /// The lattice vertices in walking order (black on the left), potrace coordinates. The
    /// first vertex is the top-left corner of the path's first pixel; consecutive vertices
    /// differ by one unit step and the path closes from the last vertex back to the first.
    pub points: Vec<(i32, i32)>,
    /// Index of the innermost path enclosing this one, if any.
    pub parent: Option<usize>,
}

/// Splits `bitmap` into closed paths, in potrace's order, with their nesting.
pub fn decompose(bitmap: &Bitmap, turdsize: u32, policy: TurnPolicy) -> Vec<RawPath> {
    let mut work = bitmap.clone();
    let h = i64::from(bitmap.height());
    let mut paths = Vec::new();
    let mut row = 0usize;
    let mut word = 0usize;
    while let Some((x, r)) = find_next(&work, &mut row, &mut word) {
        // Potrace coordinates of the pixel and the path's first vertex (its top-left corner).
        let yp = h - 1 - r as i64;
        let sign = if bitmap.get(x as i64, r as i64) {
            Sign::Plus
        } else {
            Sign::Minus
        };
        let (points, area) = walk(&work, x as i32, (yp + 1) as i32, sign, policy);
        xor_interior(&mut work, &points);
        if area > i64::from(turdsize) {
            paths.push(RawPath {
                sign,
                area,
                points,
                parent: None,
            });
        }
    }
    assign_parents(&mut paths);
    paths
}

/// Finds the first black pixel at or after word `*word` of image row `*row`, in reading order.
/// Returns `(x, row)` in image coordinates and leaves the cursor on that word.
fn find_next(bm: &Bitmap, row: &mut usize, word: &mut usize) -> Option<(usize, usize)> {
    let h = bm.height() as usize;
    while *row < h {
        let words = bm.row(*row);
        while *word < words.len() {
            let w = words[*word];
            if w != 0 {
                return Some((*word * WORD_BITS + w.leading_zeros() as usize, *row));
            }
            *word += 1;
        }
        *word = 0;
        *row += 1;
    }
    None
}

/// Reads pixel `(x, y)` of `bm` in potrace coordinates (outside = white).
#[inline]
fn pixel(bm: &Bitmap, x: i32, y: i32) -> bool {
    bm.get(i64::from(x), i64::from(bm.height()) - 1 - i64::from(y))
}

/// Walks the boundary starting at vertex `(x0, y0)` heading down, black on the left.
/// Returns the vertices and the enclosed area.
fn walk(bm: &Bitmap, x0: i32, y0: i32, sign: Sign, policy: TurnPolicy) -> (Vec<(i32, i32)>, i64) {
    let (mut x, mut y) = (x0, y0);
    let (mut dx, mut dy) = (0i32, -1i32);
    let mut area = 0i64;
    let mut points = Vec::new();
    loop {
        points.push((x, y));
        x += dx;
        y += dy;
        area += i64::from(x) * i64::from(dy);
        if x == x0 && y == y0 {
            break;
        }
        // The two pixels ahead of the vertex: ahead-left must be black and ahead-right white
        // to go straight on. For a step (dx, dy) the pixel ahead-left has its lower-left corner
        // at (x + (dx - dy - 1) / 2, y + (dx + dy - 1) / 2); ahead-right is its mirror image.
        let right = pixel(bm, x + (dx + dy - 1) / 2, y + (dy - dx - 1) / 2);
        let left = pixel(bm, x + (dx - dy - 1) / 2, y + (dx + dy - 1) / 2);
        let turn_right = if right && !left {
            // Two diagonal pixels meet at this vertex: resolve by policy.
            Some(match policy {
                TurnPolicy::Right => true,
                TurnPolicy::Left => false,
                TurnPolicy::Black => sign == Sign::Plus,
                TurnPolicy::White => sign == Sign::Minus,
                TurnPolicy::Random => detrand(x, y),
                TurnPolicy::Majority => majority(bm, x, y),
                TurnPolicy::Minority => !majority(bm, x, y),
            })
        } else if right {
            Some(true)
        } else if !left {
            Some(false)
        } else {
            None // straight on
        };
        match turn_right {
            Some(true) => (dx, dy) = (dy, -dx),
            Some(false) => (dx, dy) = (-dy, dx),
            None => {}
        }
    }
    (points, area)
}

/// Whether black is in the majority around vertex `(x, y)`: pixels on square rings of growing
/// radius (2, 3, 4) are counted, +1 for black and -1 for white, until one colour wins; a tie
/// at every radius counts as white.
fn majority(bm: &Bitmap, x: i32, y: i32) -> bool {
    for r in 2..5 {
        let mut balance = 0i32;
        let mut add = |px: i32, py: i32| balance += if pixel(bm, px, py) { 1 } else { -1 };
        for a in (1 - r)..r {
            add(x + a, y + r - 1);
            add(x + r - 1, y + a - 1);
            add(x + a - 1, y - r);
            add(x - r, y + a);
        }
        if balance != 0 {
            return balance > 0;
        }
    }
    false
}

/// Potrace's deterministic pseudo-random turn choice at vertex `(x, y)`: a multiplicative hash
/// of the position, reduced to one bit through a non-linear byte map (the lowest bit of the
/// inverse in GF(2⁸)).
fn detrand(x: i32, y: i32) -> bool {
    let z = ((0x04b3_e375u32.wrapping_mul(x as u32)) ^ y as u32).wrapping_mul(0x05a8_ef93);
    let b = z.to_le_bytes();
    (INV_LOW_BIT[b[0] as usize]
        ^ INV_LOW_BIT[b[1] as usize]
        ^ INV_LOW_BIT[b[2] as usize]
        ^ INV_LOW_BIT[b[3] as usize])
        != 0
}

/// Lowest bit of the multiplicative inverse of each byte in GF(2⁸) modulo x⁸+x⁴+x³+x+1
/// (0 maps to 0).
static INV_LOW_BIT: [u8; 256] = inverse_low_bits();

const fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

const fn inverse_low_bits() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut a = 1usize;
    while a < 256 {
        let mut b = 1usize;
        while b < 256 {
            if gf_mul(a as u8, b as u8) == 1 {
                t[a] = (b & 1) as u8;
                break;
            }
            b += 1;
        }
        a += 1;
    }
    t
}

/// Inverts the interior of a closed path in the working bitmap: every vertical edge flips the
/// pixels between it and a fixed reference column, so pixels crossed an odd number of times
/// (the interior) end up inverted.
fn xor_interior(bm: &mut Bitmap, points: &[(i32, i32)]) {
    let h = bm.height() as i64;
    let xref = points[0].0 as usize;
    let n = points.len();
    for i in 0..n {
        let (x, y) = points[i];
        let (_, y1) = points[(i + 1) % n];
        if y1 != y {
            // The edge spans potrace row min(y, y1) = image row h - 1 - min(y, y1).
            let r = (h - 1 - i64::from(y.min(y1))) as usize;
            let x = x as usize;
            bm.xor_span(r, x.min(xref), x.max(xref));
        }
    }
}

/// Sets [`RawPath::parent`] to the innermost enclosing path.
///
/// For each path, the horizontal line through the middle of its first pixel is crossed by the
/// vertical edges of the other paths; since boundaries never cross, the crossings left of the
/// pixel nest like parentheses and the innermost open one is the parent.
fn assign_parents(paths: &mut [RawPath]) {
    if paths.len() < 2 {
        return;
    }
    // Potrace row of each path's first pixel.
    let query_row = |p: &RawPath| p.points[0].1 - 1;
    let mut rows: Vec<i32> = paths.iter().map(query_row).collect();
    rows.sort_unstable();
    rows.dedup();
    // (row, x, path) for every vertical edge on a row that holds a query.
    let mut edges: Vec<(i32, i32, u32)> = Vec::new();
    for (id, p) in paths.iter().enumerate() {
        let n = p.points.len();
        for i in 0..n {
            let (x, y) = p.points[i];
            let y1 = p.points[(i + 1) % n].1;
            if y1 != y {
                let r = y.min(y1);
                if rows.binary_search(&r).is_ok() {
                    edges.push((r, x, id as u32));
                }
            }
        }
    }
    edges.sort_unstable();
    let mut queries: Vec<(i32, i32, usize)> = paths
        .iter()
        .enumerate()
        .map(|(id, p)| (query_row(p), p.points[0].0, id))
        .collect();
    queries.sort_unstable();
    let mut stack: Vec<u32> = Vec::new();
    let mut e = 0usize;
    let mut current_row = i32::MIN;
    for (row, qx, id) in queries {
        if row != current_row {
            current_row = row;
            stack.clear();
            while e < edges.len() && edges[e].0 < row {
                e += 1;
            }
        }
        while e < edges.len() && edges[e].0 == row && edges[e].1 < qx {
            let pid = edges[e].2;
            if stack.last() == Some(&pid) {
                stack.pop();
            } else {
                stack.push(pid);
            }
            e += 1;
        }
        paths[id].parent = stack.last().map(|&p| p as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(rows: &[&str]) -> Bitmap {
        Bitmap::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
            rows[y as usize].as_bytes()[x as usize] == b'#'
        })
        .unwrap()
    }

    #[test]
    fn single_pixel() {
        let paths = decompose(&bm(&["#"]), 0, TurnPolicy::Minority);
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].points, vec![(0, 1), (0, 0), (1, 0), (1, 1)]);
        assert_eq!(paths[0].area, 1);
        assert_eq!(paths[0].sign, Sign::Plus);
        // turdsize 1 removes it
        assert!(decompose(&bm(&["#"]), 1, TurnPolicy::Minority).is_empty());
    }

    #[test]
    fn ring_has_hole_child() {
        let b = bm(&["#####", "#...#", "#...#", "#####"]);
        let paths = decompose(&b, 0, TurnPolicy::Minority);
        assert_eq!(paths.len(), 2);
        assert_eq!(
            (paths[0].sign, paths[0].area, paths[0].parent),
            (Sign::Plus, 20, None)
        );
        assert_eq!(
            (paths[1].sign, paths[1].area, paths[1].parent),
            (Sign::Minus, 6, Some(0))
        );
    }

    #[test]
    fn nested_islands() {
        let b = bm(&[
            "#######", "#.....#", "#.###.#", "#.#.#.#", "#.###.#", "#.....#", "#######", ".......",
            "##.....",
        ]);
        let paths = decompose(&b, 0, TurnPolicy::Minority);
        let summary: Vec<_> = paths.iter().map(|p| (p.sign, p.parent)).collect();
        assert_eq!(
            summary,
            vec![
                (Sign::Plus, None),
                (Sign::Minus, Some(0)),
                (Sign::Plus, Some(1)),
                (Sign::Minus, Some(2)),
                (Sign::Plus, None)
            ]
        );
    }

    #[test]
    fn diagonal_pair_policies() {
        // Two pixels touching at a corner: joined or separate depending on the policy.
        let b = bm(&["#.", ".#"]);
        assert_eq!(decompose(&b, 0, TurnPolicy::Black).len(), 1);
        assert_eq!(decompose(&b, 0, TurnPolicy::White).len(), 2);
        assert_eq!(
            decompose(&b, 0, TurnPolicy::Left).len() + decompose(&b, 0, TurnPolicy::Right).len(),
            3
        );
    }

    #[test]
    fn detrand_table_is_gf_inverse() {
        // inverses in GF(2^8): 2 -> 0x8d, 3 -> 0xf6, 0x53 -> 0xca
        assert_eq!(&INV_LOW_BIT[0..4], &[0, 1, 1, 0]);
        assert_eq!(INV_LOW_BIT[0x53], 0);
        assert_eq!(gf_mul(0x53, 0xca), 1);
    }

    #[test]
    fn empty_and_full() {
        assert!(decompose(&bm(&["...", "..."]), 0, TurnPolicy::Minority).is_empty());
        let full = decompose(&bm(&["###", "###"]), 0, TurnPolicy::Minority);
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].area, 6);
    }
}
