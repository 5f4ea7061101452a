//! Despeckling: flipping small black components and small enclosed white holes.

use crate::Bitmap;

/// Removes speckles: black components (8-connected) and white components (4-connected, the
/// dual connectivity) with fewer than `min_pixels` pixels are flipped to the surrounding colour.
/// White components touching the image border are background and always kept. Black speckles
/// are removed first, then white holes are filled. Returns the number of pixels flipped.
///
/// ```
/// use svgen_trace::{preprocess::despeckle, Bitmap};
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// // A 6x6 black square with a one-pixel hole, and a lone black pixel.
/// let mut bm = Bitmap::from_fn(12, 8, |x, y| {
///     (x < 6 && y < 6 && (x, y) != (2, 2)) || (x, y) == (10, 7)
/// })?;
/// assert_eq!(despeckle(&mut bm, 2), 2);
/// assert_eq!(bm.count_black(), 36);
/// # Ok(()) }
/// ```
pub fn despeckle(bitmap: &mut Bitmap, min_pixels: u32) -> u64 {
    if min_pixels <= 1 {
        return 0;
    }
    let mut flipped = remove_components(bitmap, true, min_pixels as usize);
    flipped += remove_components(bitmap, false, min_pixels as usize);
    flipped
}

fn remove_components(bm: &mut Bitmap, black: bool, min: usize) -> u64 {
    let (w, h) = (bm.width() as usize, bm.height() as usize);
    if w == 0 || h == 0 {
        return 0;
    }
    let mut seen = vec![false; w * h];
    let mut stack: Vec<(u32, u32)> = Vec::new();
    let mut comp: Vec<(u32, u32)> = Vec::with_capacity(min);
    let mut flipped = 0u64;
    let neighbours: &[(i64, i64)] = if black {
        &[
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ]
    } else {
        &[(0, -1), (-1, 0), (1, 0), (0, 1)]
    };
    for y0 in 0..h {
        for x0 in 0..w {
            if seen[y0 * w + x0] || bm.get(x0 as i64, y0 as i64) != black {
                continue;
            }
            seen[y0 * w + x0] = true;
            stack.push((x0 as u32, y0 as u32));
            comp.clear();
            let mut size = 0usize;
            let mut touches_border = false;
            while let Some((x, y)) = stack.pop() {
                size += 1;
                if size < min {
                    comp.push((x, y));
                }
                let (xi, yi) = (i64::from(x), i64::from(y));
                if xi == 0 || yi == 0 || xi + 1 == w as i64 || yi + 1 == h as i64 {
                    touches_border = true;
                }
                for &(dx, dy) in neighbours {
                    let (nx, ny) = (xi + dx, yi + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let i = ny as usize * w + nx as usize;
                    if !seen[i] && bm.get(nx, ny) == black {
                        seen[i] = true;
                        stack.push((nx as u32, ny as u32));
                    }
                }
            }
            let keep = size >= min || (!black && touches_border);
            if !keep {
                for &(x, y) in &comp {
                    bm.set(x, y, !black);
                }
                flipped += comp.len() as u64;
            }
        }
    }
    flipped
}
