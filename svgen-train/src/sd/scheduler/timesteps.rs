//! Inference timesteps: the `leading`, `trailing` and `linspace` spacings and the numpy
//! helpers they are defined with.

use super::config::TimestepSpacing;

/// The `n` descending inference timesteps of DDIM and the Euler samplers for `spacing`
/// (`t_train` training timesteps, `steps_offset` `offset`); `linspace` maps the values of the
/// `linspace` spacing.
pub(super) fn spaced_timesteps(
    spacing: TimestepSpacing,
    n: usize,
    t_train: usize,
    offset: f64,
    linspace: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let tf = t_train as f64;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, tf - 1.0, n)
            .into_iter()
            .rev()
            .map(linspace)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t_train / n;
            (0..n).rev().map(|i| (i * ratio) as f64 + offset).collect()
        }
        TimestepSpacing::Trailing => np_arange_down(tf, 0.0, -(tf / n as f64))
            .into_iter()
            .map(|x| round_even(x) - 1.0)
            .collect(),
    }
}

/// `np.round`: round half to even.
pub(super) fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.arange(start, stop, step)` for a negative float step.
pub(super) fn np_arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// `np.linspace(start, stop, num)` (float64; the last value is exactly `stop`).
pub(super) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub(super) fn interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let lo = x.floor() as usize;
    let frac = x - lo as f64;
    let (a, b) = (f64::from(fp[lo]), f64::from(fp[lo + 1]));
    if frac == 0.0 {
        a
    } else {
        a + (b - a) * frac
    }
}
