//! SiLU and the tanh-approximated GELU on host memory: the inference fast paths of the
//! activations of FLUX (its feed-forwards and single-stream MLP, `gelu(approximate="tanh")`),
//! T5 (`gelu_new`) and the Stable Diffusion / FLUX UNet and VAE ResNet blocks (SiLU).
//!
//! Burn's CPU ops evaluate a scalar library call per element (`expf` for the sigmoid of SiLU;
//! `tanhf`, itself an `expm1f`, and `powf` for the cube of GELU's argument). Both are rewritten
//! around one exponential, evaluated with the vectorising [`exp_f32`]:
//! - `silu(x) = x·σ(x) = x / (1 + e^{-x})`;
//! - `gelu_tanh(x) = ½x·(1 + tanh(u)) = x·σ(2u) = x / (1 + e^{-2u})`, with
//!   `u = √(2/π)·(x + 0.044715·x³)` (the identity `1 + tanh(u) = 2σ(2u)`).
//!
//! The error is that of [`exp_f32`] (below 3e-7 relative) plus one division: a few ulps of the
//! library result. NaN inputs give NaN (the factor `x`); `±∞` give `+∞` and `-0`.
//!
//! Used only when the backend is exactly [`burn::backend::Flex`] with `f32` data (see
//! [`is_flex`](crate::cpu::is_flex)); `Autodiff<Flex>` (training), GPU backends and half
//! precision keep Burn's ops.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu::{exp_f32, on_host};

/// Elements per rayon task.
const CHUNK: usize = 8192;
/// `√(2/π)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `x·σ(x)` in place.
///
/// ```
/// let mut x = vec![0.0f32, 1.0, -1.0];
/// svgen_train::cpu::activation::silu_in_place(&mut x);
/// assert!(x[0] == 0.0 && (x[1] - 0.731_058_6).abs() < 1e-6 && (x[2] + 0.268_941_4).abs() < 1e-6);
/// ```
pub fn silu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            let x = *v;
            // `exp_f32` saturates at e^88, so `-∞` alone would give `-∞ / 1.6e38`.
            let y = x / (1.0 + exp_f32(-x));
            *v = if x == f32::NEG_INFINITY { -0.0 } else { y };
        }
    });
}

/// The tanh-approximated GELU (`torch.nn.GELU(approximate="tanh")`, HF's `gelu_new` /
/// `gelu_pytorch_tanh`) in place.
///
/// ```
/// let mut x = vec![0.0f32, 1.0, -3.0];
/// svgen_train::cpu::activation::gelu_tanh_in_place(&mut x);
/// assert!(x[0] == 0.0 && (x[1] - 0.841_192).abs() < 1e-6 && (x[2] + 0.003_637_4).abs() < 1e-6);
/// ```
pub fn gelu_tanh_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            let x = *v;
            let two_u = 2.0 * SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            let y = x / (1.0 + exp_f32(-two_u));
            *v = if x == f32::NEG_INFINITY { -0.0 } else { y };
        }
    });
}

/// SiLU of a tensor of any rank: the host kernel on Flex `f32`, else Burn's
/// [`activation::silu`].
pub(crate) fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let fast = on_host([&x], x.dims(), &x.device(), |[mut v]| {
        silu_in_place(&mut v);
        v
    });
    fast.unwrap_or_else(|| activation::silu(x))
}

/// The tanh GELU of a tensor of any rank: the host kernel on Flex `f32`, else Burn's
/// [`activation::gelu_approximate`].
pub(crate) fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let fast = on_host([&x], x.dims(), &x.device(), |[mut v]| {
        gelu_tanh_in_place(&mut v);
        v
    });
    fast.unwrap_or_else(|| activation::gelu_approximate(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;
    use svgen_core::compare::{assert_close, Tolerance};

    /// Inputs over the range activations take, with both tails and exact zero.
    fn inputs() -> Vec<f32> {
        let mut x: Vec<f32> = (0..3 * CHUNK + 17)
            .map(|i| ((i * 7919) % 20_001) as f32 / 1000.0 - 10.0)
            .collect();
        x.extend([0.0, -0.0, 30.0, -30.0, 90.0, -90.0, 1e-20, -1e-20]);
        x
    }

    fn reference(x: &[f32], f: impl Fn(f64) -> f64) -> Vec<f32> {
        x.iter().map(|&v| f(v as f64) as f32).collect()
    }

    #[test]
    fn silu_matches_the_f64_definition() {
        let x = inputs();
        let mut y = x.clone();
        silu_in_place(&mut y);
        let r = reference(&x, |v| v / (1.0 + (-v).exp()));
        // a few ulps of max(1, |value|)
        assert_close("silu", &y, &r, Tolerance::relative(1e-6));
    }

    #[test]
    fn gelu_tanh_matches_the_f64_definition() {
        let x = inputs();
        let mut y = x.clone();
        gelu_tanh_in_place(&mut y);
        let c = (2.0 / core::f64::consts::PI).sqrt();
        let r = reference(&x, |v| {
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        });
        assert_close("gelu_tanh", &y, &r, Tolerance::relative(1e-6));
    }

    #[test]
    fn nan_and_infinities() {
        let mut s = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        silu_in_place(&mut s);
        assert!(s[0].is_nan() && s[1] == f32::INFINITY && s[2] == 0.0);
        let mut g = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        gelu_tanh_in_place(&mut g);
        assert!(g[0].is_nan() && g[1] == f32::INFINITY && g[2] == 0.0);
    }

    #[test]
    fn tensor_paths_match_burn_on_flex_and_fall_back_elsewhere() {
        let dev = Default::default();
        let x = inputs();
        let shape = [x.len() / 5, 5];
        let n = shape[0] * shape[1];
        let t = Tensor::<Flex, 2>::from_data(TensorData::new(x[..n].to_vec(), shape), &dev);
        let vals = |t: Tensor<Flex, 2>| t.into_data().into_vec::<f32>().expect("f32");
        let burn_silu = vals(activation::silu(t.clone()));
        let burn_gelu = vals(activation::gelu_approximate(t.clone()));
        let tol = Tolerance::relative(1e-5);
        assert_close("silu vs burn", &vals(silu(t.clone())), &burn_silu, tol);
        assert_close("gelu_tanh vs burn", &vals(gelu_tanh(t)), &burn_gelu, tol);
        // Autodiff<Flex> keeps Burn's ops (and its graph): the gradient of silu exists.
        let a = Tensor::<Autodiff<Flex>, 1>::from_data(TensorData::new(vec![0.5f32], [1]), &dev)
            .require_grad();
        let g = silu(a.clone()).sum().backward();
        let grad = a
            .grad(&g)
            .expect("grad")
            .into_data()
            .into_vec::<f32>()
            .expect("f32");
        let s = 1.0 / (1.0 + (-0.5f64).exp());
        assert_close(
            "silu grad",
            &grad,
            &[(s * (1.0 + 0.5 * (1.0 - s))) as f32],
            tol,
        );
    }
}
