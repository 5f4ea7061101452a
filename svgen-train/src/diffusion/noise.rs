//! Seeded Gaussian noise for the pipelines: deterministic in the seed on every backend and
//! machine (a host [`StdRng`] and Box–Muller; not bit-compatible with `torch.randn`, so parity
//! tests pass explicit latents).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` standard-normal `f32` values from `rng` (Box–Muller on `f64` uniforms).
pub fn randn_host(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A tensor of standard-normal values, deterministic in `seed` on every backend and machine (host
/// [`StdRng`] + Box–Muller; not bit-compatible with `torch.randn`).
///
/// ```
/// use svgen_train::diffusion::noise::randn;
/// use svgen_train::CpuBackend;
/// let a = randn::<CpuBackend, 4>(42, [1, 4, 8, 8], &Default::default());
/// let b = randn::<CpuBackend, 4>(42, [1, 4, 8, 8], &Default::default());
/// assert_eq!(a.into_data(), b.into_data());
/// ```
pub fn randn<B: Backend, const D: usize>(
    seed: u64,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::from_data(TensorData::new(randn_host(&mut rng, n), shape), device)
}
