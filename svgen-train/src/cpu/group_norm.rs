//! GroupNorm on host memory: the inference fast path of Stable Diffusion's
//! [`GroupNorm::forward`](crate::sd::blocks::GroupNorm::forward) on the CPU backend.
//!
//! Used only when the backend is exactly [`burn::backend::Flex`] with `f32` data (see
//! [`is_flex`](crate::cpu::is_flex); `forward` returns `None` otherwise); `Autodiff<Flex>` (training) and GPU backends
//! keep the generic tensor-op version. On Flex the generic version spends most of its time in
//! broadcast binary ops (strided iteration); here each (sample, group) slice is read twice
//! (mean, then centred variance, accumulated in `f64`) and written once with the affine
//! transform folded into a per-channel scale and shift. Work is split over rayon by
//! (sample, group).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu::on_host;

/// `torch.nn.GroupNorm` (biased variance, affine) on `x` `[batch, channels, spatial]`,
/// row-major, with `gamma`/`beta` `[channels]`; returns the normalised data in the same layout.
///
/// # Panics
/// If `groups` is zero or does not divide `channels`, or if a slice length does not match
/// (callers pass the data of tensors whose dims they just read).
///
/// ```
/// use svgen_train::cpu::group_norm::group_norm;
/// // one sample, two channels in one group, two positions: values 0, 1, 2, 3
/// let y = group_norm(&[0.0, 1.0, 2.0, 3.0], 1, 2, 2, 1, &[1.0, 1.0], &[0.0, 0.0], 0.0);
/// let want = [-1.3416408, -0.4472136, 0.4472136, 1.3416408];
/// assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Vec<f32> {
    assert!(
        groups > 0 && channels.is_multiple_of(groups),
        "group_norm: {groups} groups for {channels} channels"
    );
    assert_eq!(
        x.len(),
        batch * channels * spatial,
        "group_norm: input length"
    );
    assert_eq!(gamma.len(), channels, "group_norm: weight length");
    assert_eq!(beta.len(), channels, "group_norm: bias length");
    let per_group = channels / groups;
    let len = per_group * spatial;
    let mut y = vec![0.0f32; x.len()];
    if len == 0 {
        return y;
    }
    y.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(i, (yg, xg))| {
            let mean = block_sum::<false>(xg, 0.0) / len as f64;
            let var = block_sum::<true>(xg, mean) / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let c0 = (i % groups) * per_group;
            for (ch, (yc, xc)) in yg
                .chunks_exact_mut(spatial)
                .zip(xg.chunks_exact(spatial))
                .enumerate()
            {
                let scale = rstd * gamma[c0 + ch] as f64;
                let shift = beta[c0 + ch] as f64 - mean * scale;
                let (scale, shift) = (scale as f32, shift as f32);
                for (o, &v) in yc.iter_mut().zip(xc) {
                    *o = v * scale + shift;
                }
            }
        });
    y
}

/// [`group_norm`] on tensors: `x` `[batch, channels, h, w]`, `gamma` and `beta` `[channels]`.
/// `None` (take the generic ops) unless the backend is exactly Flex with `f32` data and `groups`
/// divides `channels`.
pub(crate) fn forward<B: Backend>(
    x: &Tensor<B, 4>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    groups: usize,
    eps: f64,
) -> Option<Tensor<B, 4>> {
    let [b, c, h, w] = x.dims();
    if groups == 0 || !c.is_multiple_of(groups) {
        return None;
    }
    on_host(
        [x, gamma, beta],
        [b, c, h, w],
        &x.device(),
        |[x, gamma, beta]| group_norm(&x, b, c, h * w, groups, &gamma, &beta, eps),
    )
}

/// `Σ x` (`SQUARED = false`) or `Σ (x - center)²` (`SQUARED = true`): summed in `f32` lanes over
/// short blocks, accumulated across blocks in `f64`.
fn block_sum<const SQUARED: bool>(x: &[f32], center: f64) -> f64 {
    const BLOCK: usize = 256;
    let c = center as f32;
    let term = |v: f32| {
        if SQUARED {
            (v - c) * (v - c)
        } else {
            v
        }
    };
    let mut total = 0.0f64;
    for block in x.chunks(BLOCK) {
        let mut lanes = [0.0f32; 8];
        let mut chunks = block.chunks_exact(8);
        for chunk in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l += term(v);
            }
        }
        let s: f32 =
            lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| term(v)).sum::<f32>();
        total += s as f64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_group_normalises_to_the_bias() {
        let y = group_norm(&[4.0; 8], 1, 2, 4, 1, &[2.0, 3.0], &[0.5, -0.5], 1e-5);
        assert!(y[..4].iter().all(|&v| (v - 0.5).abs() < 1e-6));
        assert!(y[4..].iter().all(|&v| (v + 0.5).abs() < 1e-6));
    }
}
