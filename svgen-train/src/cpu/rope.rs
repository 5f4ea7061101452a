//! The rotary position embedding of FLUX (`apply_rotary_emb` with interleaved channel pairs) on
//! host memory: the inference fast path of [`Rope::apply`](crate::flux::layers::Rope::apply).
//!
//! The generic path swaps each channel pair through a `flip` of a 5-dimensional view and
//! multiplies with broadcast tables: Burn's CPU ops then spend their time in strided iteration
//! and in the copies that make the views contiguous. Here each pair `(x₀, x₁)` of every head is
//! rotated in one pass: `(x₀·cos₀ + x₁·sin₀, x₁·cos₁ + x₀·sin₁)`, with the tables of
//! [`Rope`](crate::flux::layers::Rope) (`sin` carries the rotation's sign: `-sin` at even channels).
//!
//! Used only when the backend is exactly [`burn::backend::Flex`] with `f32` data (see
//! [`is_flex`](crate::cpu::is_flex)); other backends and half precision keep the generic ops.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu::on_host;

/// Rotates `x` `[batch, n, heads, d]` (row-major, `d` even) in place with the tables `cos` and
/// `sin` `[n, d]`.
///
/// # Panics
/// If `d` is odd or a length disagrees with `n`, `heads` and `d`.
///
/// ```
/// // one position, one head, d = 2: a rotation by 90° maps (1, 0) to (0, 1)
/// let mut x = vec![1.0f32, 0.0];
/// svgen_train::cpu::rope::rotate_in_place(&mut x, &[0.0, 0.0], &[-1.0, 1.0], 1, 1, 2);
/// assert_eq!(x, [0.0, 1.0]);
/// ```
pub fn rotate_in_place(x: &mut [f32], cos: &[f32], sin: &[f32], n: usize, heads: usize, d: usize) {
    assert!(d.is_multiple_of(2), "rope: odd head dimension {d}");
    assert_eq!(cos.len(), n * d, "rope: cos table length");
    assert_eq!(sin.len(), n * d, "rope: sin table length");
    assert!(
        n > 0 && x.len().is_multiple_of(n * heads * d),
        "rope: input length"
    );
    // one task per (batch, position): its `heads` rows share the tables' row
    x.par_chunks_mut(heads * d)
        .enumerate()
        .for_each(|(i, row)| {
            let t = i % n;
            let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
            for head in row.chunks_exact_mut(d) {
                for ((p, c), s) in head
                    .chunks_exact_mut(2)
                    .zip(c.chunks_exact(2))
                    .zip(s.chunks_exact(2))
                {
                    let (x0, x1) = (p[0], p[1]);
                    p[0] = x0 * c[0] + x1 * s[0];
                    p[1] = x1 * c[1] + x0 * s[1];
                }
            }
        });
}

/// [`rotate_in_place`] on tensors: `x` `[B, N, heads, d]`, tables `[1, N, 1, d]`. `None` (take
/// the generic ops) unless the backend is exactly Flex with `f32` data and the shapes agree.
pub(crate) fn forward<B: Backend>(
    x: &Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    let [_, n, heads, d] = x.dims();
    if cos.dims() != [1, n, 1, d] || sin.dims() != [1, n, 1, d] || !d.is_multiple_of(2) || n == 0 {
        return None;
    }
    on_host([x, cos, sin], x.dims(), &x.device(), |[mut x, c, s]| {
        rotate_in_place(&mut x, &c, &s, n, heads, d);
        x
    })
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorData};
    use svgen_core::compare::{assert_close, Tolerance};

    use crate::flux::layers::Rope;

    /// FLUX-style ids: text tokens at 0, then image tokens on a `rows × cols` grid.
    fn ids(text: usize, rows: usize, cols: usize) -> Vec<[f64; 3]> {
        let mut ids = vec![[0.0; 3]; text];
        for r in 0..rows {
            for c in 0..cols {
                ids.push([0.0, r as f64, c as f64]);
            }
        }
        ids
    }

    #[test]
    fn fast_path_matches_the_generic_ops_and_the_complex_rotation() {
        // odd sequence (7 text + 3·5 image tokens), 3 heads, head_dim 16 = 4 + 6 + 6
        let (b, heads, axes) = (2usize, 3usize, [4usize, 6, 6]);
        let pos = ids(7, 3, 5);
        let (n, d) = (pos.len(), axes.iter().sum::<usize>());
        let x: Vec<f32> = (0..b * n * heads * d)
            .map(|i| ((i * 7919) % 2003) as f32 / 500.0 - 2.0)
            .collect();
        let dev = Default::default();
        let shape = [b, n, heads, d];
        let fast = Rope::<Flex>::new(&pos, &axes, 10_000.0, &dev)
            .apply(Tensor::from_data(TensorData::new(x.clone(), shape), &dev));
        // Autodiff<Flex> takes the generic ops
        let generic = Rope::<Autodiff<Flex>>::new(&pos, &axes, 10_000.0, &dev)
            .apply(Tensor::from_data(TensorData::new(x.clone(), shape), &dev));
        let fast = fast.into_data().into_vec::<f32>().expect("f32");
        let generic = generic.into_data().into_vec::<f32>().expect("f32");
        assert_close(
            "rope fast vs generic",
            &fast,
            &generic,
            Tolerance::absolute(1e-6),
        );
        // the definition: pair (x₀, x₁) as x₀ + i·x₁ times e^{i·pos·θ}, in f64
        let mut reference = vec![0.0f32; x.len()];
        for (j, (row, out)) in x
            .chunks_exact(d)
            .zip(reference.chunks_exact_mut(d))
            .enumerate()
        {
            let t = j / heads % n;
            let mut c0 = 0;
            for (axis, &dim) in axes.iter().enumerate() {
                for i in 0..dim / 2 {
                    let angle = pos[t][axis] / 10_000f64.powf((2 * i) as f64 / dim as f64);
                    let (s, c) = angle.sin_cos();
                    let (x0, x1) = (row[c0 + 2 * i] as f64, row[c0 + 2 * i + 1] as f64);
                    out[c0 + 2 * i] = (x0 * c - x1 * s) as f32;
                    out[c0 + 2 * i + 1] = (x1 * c + x0 * s) as f32;
                }
                c0 += dim;
            }
        }
        assert_close(
            "rope vs definition",
            &fast,
            &reference,
            Tolerance::absolute(1e-5),
        );
    }
}
