//! A dependency-light PNG loss curve (train in blue, validation in orange, light grid).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Result, TrainError};

const W: u32 = 640;
const H: u32 = 400;
const M: f64 = 30.0;

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0i64, 0i64), (1, 0), (0, 1)] {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < W && (py as u32) < H {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
    }
}

/// Draws the loss curves into a PNG. Non-finite points are skipped.
pub fn loss_curve_png(
    path: impl AsRef<Path>,
    train: &[(f64, f64)],
    val: &[(f64, f64)],
) -> Result<()> {
    let path = path.as_ref();
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let pts = train
        .iter()
        .chain(val)
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let grid = Rgb([225, 225, 225]);
    for k in 0..=4 {
        let y = M + (H as f64 - 2.0 * M) * k as f64 / 4.0;
        line(&mut img, (M, y), (W as f64 - M, y), grid);
    }
    let axis = Rgb([0, 0, 0]);
    line(&mut img, (M, M), (M, H as f64 - M), axis);
    line(
        &mut img,
        (M, H as f64 - M),
        (W as f64 - M, H as f64 - M),
        axis,
    );
    if x0 <= x1 {
        let sx = if x1 > x0 { x1 - x0 } else { 1.0 };
        let sy = if y1 > y0 { y1 - y0 } else { 1.0 };
        let map = |(x, y): (f64, f64)| {
            (
                M + (x - x0) / sx * (W as f64 - 2.0 * M),
                H as f64 - M - (y - y0) / sy * (H as f64 - 2.0 * M),
            )
        };
        for (series, colour) in [(train, Rgb([31, 119, 180])), (val, Rgb([255, 127, 14]))] {
            let s: Vec<_> = series
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(map)
                .collect();
            for w in s.windows(2) {
                line(&mut img, w[0], w[1], colour);
            }
            if s.len() == 1 {
                line(&mut img, s[0], s[0], colour);
            }
        }
    }
    img.save(path)
        .map_err(|e| TrainError::io(path, std::io::Error::other(e.to_string())))
}
