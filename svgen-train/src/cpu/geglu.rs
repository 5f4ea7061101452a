//! The GEGLU product `hidden · gelu(gate)` on host memory: the inference fast path of Stable
//! Diffusion's [`FeedForward::forward`](crate::sd::blocks::FeedForward::forward) on the CPU
//! backend.
//!
//! Used only when the backend is exactly [`burn::backend::Flex`] with `f32` data (see
//! [`is_flex`](crate::cpu::is_flex); `forward` returns `None` otherwise); `Autodiff<Flex>` (training) and GPU backends
//! keep Burn's `gelu` and multiply. Burn's CPU `gelu` evaluates a scalar library `erf` per
//! element; here the exact (erf) GELU uses [`erf_f32`], a rational-exponential approximation
//! that vectorises, and the product is fused into the same pass, split over rayon.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu::{exp_f32, on_host};

/// Elements per rayon task.
const CHUNK: usize = 4096;

/// `hidden[i] · gelu(gate[i])` with the exact GELU `x·(1 + erf(x/√2))/2`.
///
/// # Panics
/// If the slices differ in length.
///
/// ```
/// use svgen_train::cpu::geglu::geglu;
/// let y = geglu(&[2.0, 2.0], &[0.0, 1.0]);
/// assert!(y[0].abs() < 1e-7 && (y[1] - 2.0 * 0.841_344_7).abs() < 1e-6);
/// ```
pub fn geglu(hidden: &[f32], gate: &[f32]) -> Vec<f32> {
    assert_eq!(hidden.len(), gate.len(), "geglu: length mismatch");
    let mut y = vec![0.0f32; hidden.len()];
    y.par_chunks_mut(CHUNK)
        .zip(hidden.par_chunks(CHUNK).zip(gate.par_chunks(CHUNK)))
        .for_each(|(y, (h, g))| {
            for ((o, &h), &g) in y.iter_mut().zip(h).zip(g) {
                *o = h * (0.5 * g * (1.0 + erf_f32(g * core::f32::consts::FRAC_1_SQRT_2)));
            }
        });
    y
}

/// [`geglu`] on tensors of one shape. `None` (take Burn's `gelu` and multiply) unless the
/// backend is exactly Flex with `f32` data.
pub(crate) fn forward<B: Backend>(
    hidden: &Tensor<B, 2>,
    gate: &Tensor<B, 2>,
) -> Option<Tensor<B, 2>> {
    on_host([hidden, gate], gate.dims(), &gate.device(), |[h, g]| {
        geglu(&h, &g)
    })
}

/// `erf(x)` for `f32` without branches (so loops over it vectorise): Abramowitz & Stegun
/// 7.1.26, `1 - t·P(t)·e^{-x²}` with `t = 1/(1 + p·|x|)` and the sign restored, absolute
/// error below 6e-7 (the approximation's 1.5e-7 plus f32 rounding near `1 - t·P(t)·e^{-x²}`).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_f32(-ax * ax);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{activation, Tensor, TensorData};
    use svgen_core::compare::{assert_close, Tolerance};

    #[test]
    fn erf_matches_the_series_reference() {
        // reference: erf by its Maclaurin series in f64 (|x| ≤ 3.5, where the largest term is
        // ~2e4, so the sum is good to ~1e-11)
        let reference = |x: f64| -> f64 {
            let (mut term, mut sum, mut n) = (x, x, 0.0f64);
            while term.abs() > 1e-18 {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / core::f64::consts::PI.sqrt()
        };
        let mut worst = 0.0f64;
        for i in -3500..=3500 {
            let x = i as f32 / 1000.0;
            worst = worst.max((erf_f32(x) as f64 - reference(x as f64)).abs());
        }
        // beyond 3.5, 1 - erf(x) < 7.5e-7
        for i in 0..=1000 {
            let x = 3.5 + i as f32 / 100.0;
            worst = worst.max((erf_f32(x) as f64 - 1.0).abs() - 7.5e-7);
            worst = worst.max((erf_f32(-x) as f64 + 1.0).abs() - 7.5e-7);
        }
        assert!(worst < 6e-7, "worst absolute error {worst}");
        assert!(erf_f32(0.0).abs() < 2e-7);
        assert!((erf_f32(10.0) - 1.0).abs() < 1e-7 && (erf_f32(-10.0) + 1.0).abs() < 1e-7);
    }

    #[test]
    fn geglu_matches_burn_gelu() {
        let dev = Default::default();
        let n = 3 * CHUNK + 17;
        let h: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 53) % 211) as f32 / 21.0 - 5.0)
            .collect();
        let fast = geglu(&h, &g);
        let th = Tensor::<Flex, 1>::from_data(TensorData::new(h, [n]), &dev);
        let tg = Tensor::<Flex, 1>::from_data(TensorData::new(g, [n]), &dev);
        let want: Vec<f32> = (th * activation::gelu(tg))
            .into_data()
            .into_vec()
            .expect("f32");
        assert_close("geglu", &fast, &want, Tolerance::absolute(2e-6));
    }
}
