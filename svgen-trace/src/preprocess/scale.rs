//! Integer up-scaling with mkbitmap's sampling (`-s`, `-1` / `-3`): output row `j` counted from
//! the bottom samples the input at `j / s` rows from the bottom, columns left to right.

use serde::{Deserialize, Serialize};

use super::greymap::Greymap;
use crate::bitmap::{check_size, DEFAULT_PIXEL_LIMIT};
use crate::TraceError;

impl Greymap {
    /// Enlarges by an integer `factor` with mkbitmap's sampling (see the module docs),
    /// limited to [`DEFAULT_PIXEL_LIMIT`] output pixels.
    pub fn scale(&self, factor: u32, interpolation: Interpolation) -> Result<Greymap, TraceError> {
        self.scale_with_limit(factor, interpolation, DEFAULT_PIXEL_LIMIT)
    }

    /// Like [`Greymap::scale`] with an explicit output pixel limit, checked before allocating.
    pub fn scale_with_limit(
        &self,
        factor: u32,
        interpolation: Interpolation,
        max_pixels: u64,
    ) -> Result<Greymap, TraceError> {
        if factor == 0 {
            return Err(TraceError::InvalidParam {
                name: "scale",
                reason: "must be at least 1".into(),
            });
        }
        let too_large = || TraceError::TooLarge {
            width: u64::from(self.width) * u64::from(factor),
            height: u64::from(self.height) * u64::from(factor),
            limit: max_pixels,
        };
        let nw = self.width.checked_mul(factor).ok_or_else(too_large)?;
        let nh = self.height.checked_mul(factor).ok_or_else(too_large)?;
        check_size(nw, nh, max_pixels)?;
        if factor == 1 {
            return Ok(self.clone());
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let (nw, nh) = (nw as usize, nh as usize);
        // Horizontal pass: h rows of nw samples, left to right.
        let xtaps = taps(w, nw, factor, interpolation, false);
        let mut tmp = vec![0f32; nw * h];
        for y in 0..h {
            let src = &self.data[y * w..(y + 1) * w];
            let dst = &mut tmp[y * nw..(y + 1) * nw];
            for (d, t) in dst.iter_mut().zip(&xtaps) {
                *d = t.apply(|i| src[i]);
            }
        }
        // Vertical pass, sampled from the bottom row upwards as mkbitmap does.
        let ytaps = taps(h, nh, factor, interpolation, true);
        let mut data = vec![0f32; nw * nh];
        for (j, t) in ytaps.iter().enumerate() {
            let dst = &mut data[j * nw..(j + 1) * nw];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = t.apply(|i| tmp[i * nw + x]);
            }
        }
        Ok(Greymap {
            width: nw as u32,
            height: nh as u32,
            data,
        })
    }
}

/// Interpolation used by [`Greymap::scale`] (mkbitmap `-1` / `-3`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interpolation {
    /// Linear interpolation (mkbitmap `-1`).
    Linear,
    /// Catmull–Rom cubic interpolation (mkbitmap `-3`, its default); may overshoot `[0, 1]`.
    #[default]
    Cubic,
}

/// Source indices and weights of one output sample.
struct Taps {
    idx: [usize; 4],
    w: [f32; 4],
}

impl Taps {
    #[inline]
    fn apply(&self, f: impl Fn(usize) -> f32) -> f32 {
        self.w
            .iter()
            .zip(&self.idx)
            .map(|(&w, &i)| if w == 0.0 { 0.0 } else { w * f(i) })
            .sum()
    }
}

fn taps(n: usize, out_n: usize, factor: u32, interp: Interpolation, from_end: bool) -> Vec<Taps> {
    let last = n as i64 - 1;
    let clamp = |i: i64| -> usize {
        let i = i.clamp(0, last) as usize;
        if from_end {
            n - 1 - i
        } else {
            i
        }
    };
    (0..out_n)
        .map(|j| {
            // Position counted from the start (or from the end when `from_end`).
            let jj = if from_end { out_n - 1 - j } else { j };
            let i0 = (jj / factor as usize) as i64;
            let f = (jj % factor as usize) as f64 / f64::from(factor);
            match interp {
                Interpolation::Linear => Taps {
                    idx: [clamp(i0), clamp(i0 + 1), 0, 0],
                    w: [(1.0 - f) as f32, f as f32, 0.0, 0.0],
                },
                Interpolation::Cubic => Taps {
                    idx: [clamp(i0 - 1), clamp(i0), clamp(i0 + 1), clamp(i0 + 2)],
                    w: [
                        catmull_rom(f + 1.0) as f32,
                        catmull_rom(f) as f32,
                        catmull_rom(1.0 - f) as f32,
                        catmull_rom(2.0 - f) as f32,
                    ],
                },
            }
        })
        .collect()
}

/// The Catmull–Rom kernel (Keys' cubic with a = -1/2).
fn catmull_rom(t: f64) -> f64 {
    let t = t.abs();
    if t < 1.0 {
        (1.5 * t - 2.5) * t * t + 1.0
    } else if t < 2.0 {
        ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catmull_rom_interpolates() {
        assert_eq!(catmull_rom(0.0), 1.0);
        assert_eq!(catmull_rom(1.0), 0.0);
        assert_eq!(catmull_rom(2.0), 0.0);
        for f in [0.1, 0.25, 0.5, 0.9] {
            let s =
                catmull_rom(f + 1.0) + catmull_rom(f) + catmull_rom(1.0 - f) + catmull_rom(2.0 - f);
            assert!((s - 1.0).abs() < 1e-12);
        }
    }
}
