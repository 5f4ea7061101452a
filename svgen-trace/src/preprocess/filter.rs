//! The low-pass and high-pass filters of mkbitmap (`-b`, `-f`): a separable two-sided
//! exponential blur computed with first-order recursions (see the [module docs](super) for how it
//! compares with mkbitmap's own filter).

use super::check_radius;
use super::greymap::Greymap;
use crate::TraceError;

impl Greymap {
    /// Low-pass filter: a separable, symmetric exponential blur whose standard deviation is
    /// `radius` pixels (edges replicated). `radius` 0 leaves the image unchanged.
    pub fn blur(&self, radius: f64) -> Result<Greymap, TraceError> {
        check_radius("blur", radius)?;
        let mut out = self.clone();
        if radius > 0.0 && !self.data.is_empty() {
            exp_blur_2d(
                &mut out.data,
                self.width as usize,
                self.height as usize,
                radius,
            );
        }
        Ok(out)
    }

    /// High-pass filter (mkbitmap `-f radius`): the image minus its [blur](Greymap::blur), plus
    /// 0.5, clamped to `[0, 1]`. Flat areas become 0.5 whatever their brightness, which removes
    /// uneven lighting and background gradients while keeping detail of about `radius` pixels.
    pub fn highpass(&self, radius: f64) -> Result<Greymap, TraceError> {
        let low = self.blur(radius)?;
        let data = self
            .data
            .iter()
            .zip(&low.data)
            .map(|(&v, &l)| (v - l + 0.5).clamp(0.0, 1.0))
            .collect();
        Ok(Greymap {
            width: self.width,
            height: self.height,
            data,
        })
    }
}

/// Blurs a `w × h` image in place with the two-sided exponential kernel `c·a^|k|` along x and
/// then y, with `a` chosen so that the kernel's variance `2a / (1 - a)²` equals `sigma²`.
fn exp_blur_2d(data: &mut [f32], w: usize, h: usize, sigma: f64) {
    let s2 = sigma * sigma;
    let b = 1.0 + 1.0 / s2;
    let a = b - (b * b - 1.0).sqrt();
    let mut line = vec![0f64; w.max(h)];
    let mut fwd = vec![0f64; w.max(h)];
    for y in 0..h {
        let row = &mut data[y * w..(y + 1) * w];
        for (l, &v) in line.iter_mut().zip(row.iter()) {
            *l = f64::from(v);
        }
        exp_blur_1d(&mut line[..w], &mut fwd[..w], a);
        for (v, &l) in row.iter_mut().zip(line.iter()) {
            *v = l as f32;
        }
    }
    for x in 0..w {
        for y in 0..h {
            line[y] = f64::from(data[y * w + x]);
        }
        exp_blur_1d(&mut line[..h], &mut fwd[..h], a);
        for y in 0..h {
            data[y * w + x] = line[y] as f32;
        }
    }
}

/// One line of [`exp_blur_2d`]: forward and backward first-order recursions whose sum (minus
/// the doubly counted centre) is `Σ a^|n-m| x[m]`, with the edges replicated to infinity.
fn exp_blur_1d(line: &mut [f64], fwd: &mut [f64], a: f64) {
    let n = line.len();
    if n == 0 {
        return;
    }
    let norm = (1.0 - a) / (1.0 + a);
    let mut acc = line[0] / (1.0 - a);
    for i in 0..n {
        acc = line[i] + a * acc;
        fwd[i] = acc;
    }
    let mut acc = line[n - 1] / (1.0 - a);
    for i in (0..n).rev() {
        let x = line[i];
        acc = x + a * acc;
        line[i] = norm * (fwd[i] + acc - x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_blur_preserves_constants_and_mean() {
        let mut line = vec![0.3f64; 17];
        let mut fwd = vec![0f64; 17];
        exp_blur_1d(&mut line, &mut fwd, 0.6);
        assert!(line.iter().all(|v| (v - 0.3).abs() < 1e-12));
        // Impulse response: symmetric, sums to 1 (far from the edges), variance = sigma^2.
        let sigma: f64 = 3.0;
        let b = 1.0 + 1.0 / (sigma * sigma);
        let a = b - (b * b - 1.0).sqrt();
        let n = 401;
        let mut line = vec![0f64; n];
        line[200] = 1.0;
        let mut fwd = vec![0f64; n];
        exp_blur_1d(&mut line, &mut fwd, a);
        let sum: f64 = line.iter().sum();
        let var: f64 = line
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 - 200.0).powi(2) * v)
            .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        assert!((var - 9.0).abs() < 1e-6, "{var}");
        assert!((line[190] - line[210]).abs() < 1e-15);
    }
}
