//! Predicted device memory of a FLUX generation, from the component shapes alone: weights (by
//! dtype), and the live activations of the three phases (prompt encoding, denoising, VAE
//! decoding), with or without the text encoders freed after encoding.
//!
//! The activation model is inference without autograd: a transformer block keeps its residual
//! stream, the normalised input, q/k/v (plus their f32 rotary copies), the attention output, the
//! MLP hidden state (`4d`) and, in single-stream blocks, the concatenation (`5d`) at once; the
//! attention score matrix `[B, heads, N, N]` (f32, score and softmax) is counted only when the
//! backend materialises it (Burn's generic attention does; a fused kernel does not). The VAE
//! decoder's widest point is its full-resolution up block (four `[C, H, W]` f32 tensors), plus the
//! mid-block attention scores at `H/8 × W/8` when materialised.
//!
//! ```
//! use svgen_train::flux::memory::{predict_memory, FluxMemoryShapes};
//! let schnell = FluxMemoryShapes::flux_1_schnell();
//! let m = predict_memory(&schnell, 1024, 1024, 1, 256, false);
//! assert!(m.transformer_weights > 23_000_000_000); // 11.9B parameters in bf16
//! assert!(m.peak_free_encoders < m.peak_keep_encoders);
//! ```

use crate::diffusion::vae::AutoencoderKLConfig;
use crate::t5::{T5Config, T5FeedForward};

use super::config::FluxTransformerConfig;

/// The shapes and dtypes a prediction needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FluxMemoryShapes {
    /// The transformer.
    pub transformer: FluxTransformerConfig,
    /// Bytes per transformer weight and activation (2 for bf16).
    pub transformer_bytes: u64,
    /// The T5 encoder.
    pub t5: T5Config,
    /// Bytes per T5 weight (2 for bf16).
    pub t5_bytes: u64,
    /// CLIP text model: vocabulary, width, MLP width, layers, positions.
    pub clip: [u64; 5],
    /// Bytes per CLIP weight (4: svgen-eval's CLIP runs in f32).
    pub clip_bytes: u64,
    /// The VAE (f32).
    pub vae: AutoencoderKLConfig,
}

impl FluxMemoryShapes {
    /// FLUX.1-schnell as published, with svgen's default dtypes on GPU: bf16 transformer and T5,
    /// f32 CLIP-L and VAE.
    pub fn flux_1_schnell() -> Self {
        Self {
            transformer: FluxTransformerConfig::default(),
            transformer_bytes: 2,
            t5: T5Config::t5_v1_1_xxl(),
            t5_bytes: 2,
            clip: [49408, 768, 3072, 12, 77],
            clip_bytes: 4,
            vae: flux_vae_config(),
        }
    }
}

/// FLUX.1's `vae/config.json`.
pub fn flux_vae_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig {
        down_block_types: vec!["DownEncoderBlock2D".into(); 4],
        up_block_types: vec!["UpDecoderBlock2D".into(); 4],
        block_out_channels: vec![128, 256, 512, 512],
        layers_per_block: 2,
        latent_channels: 16,
        sample_size: 1024,
        scaling_factor: 0.3611,
        shift_factor: Some(0.1159),
        use_quant_conv: false,
        use_post_quant_conv: false,
        ..AutoencoderKLConfig::default()
    }
}

/// Parameters of a T5 encoder.
pub fn t5_params(c: &T5Config) -> u64 {
    let (d, inner, ff) = (c.d_model as u64, c.inner_dim() as u64, c.d_ff as u64);
    let ffn = match c.feed_forward {
        T5FeedForward::GatedGelu => 3 * d * ff,
        T5FeedForward::Relu => 2 * d * ff,
    };
    let layer = 4 * d * inner + ffn + 2 * d;
    c.vocab_size as u64 * d
        + c.num_layers as u64 * layer
        + (c.relative_attention_num_buckets * c.num_heads) as u64
        + d
}

/// Parameters of a CLIP text model `[vocab, width, mlp, layers, positions]`.
pub fn clip_text_params([vocab, d, ff, layers, pos]: [u64; 5]) -> u64 {
    let layer = 4 * (d * d + d) + 4 * d + (d * ff + ff) + (ff * d + d);
    vocab * d + pos * d + layers * layer + 2 * d
}

/// Parameters of an `AutoencoderKL`.
pub fn autoencoder_params(c: &AutoencoderKLConfig) -> u64 {
    let conv = |i: u64, o: u64, k: u64| i * o * k * k + o;
    let resnet = |i: u64, o: u64| {
        2 * i + conv(i, o, 3) + 2 * o + conv(o, o, 3) + if i != o { conv(i, o, 1) } else { 0 }
    };
    let attn = |ch: u64| 2 * ch + 4 * (ch * ch + ch);
    let boc: Vec<u64> = c.block_out_channels.iter().map(|&x| x as u64).collect();
    let (l, n, layers) = (
        c.latent_channels as u64,
        boc.len(),
        c.layers_per_block as u64,
    );
    let top = boc[n - 1];
    let mid = 2 * resnet(top, top)
        + if c.mid_block_add_attention {
            attn(top)
        } else {
            0
        };
    let mut enc = conv(c.in_channels as u64, boc[0], 3) + mid + 2 * top + conv(top, 2 * l, 3);
    let mut prev = boc[0];
    for (i, &ch) in boc.iter().enumerate() {
        enc += resnet(prev, ch) + (layers - 1) * resnet(ch, ch);
        if i + 1 < n {
            enc += conv(ch, ch, 3);
        }
        prev = ch;
    }
    let mut dec = conv(l, top, 3) + mid + 2 * boc[0] + conv(boc[0], c.out_channels as u64, 3);
    let mut prev = top;
    for (i, &ch) in boc.iter().rev().enumerate() {
        dec += resnet(prev, ch) + layers * resnet(ch, ch);
        if i + 1 < n {
            dec += conv(ch, ch, 3);
        }
        prev = ch;
    }
    let quant = if c.use_quant_conv {
        conv(2 * l, 2 * l, 1)
    } else {
        0
    } + if c.use_post_quant_conv {
        conv(l, l, 1)
    } else {
        0
    };
    enc + dec + quant
}

/// Predicted bytes (see the [module](self) docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Transformer weights.
    pub transformer_weights: u64,
    /// T5 weights.
    pub t5_weights: u64,
    /// CLIP weights.
    pub clip_weights: u64,
    /// VAE weights.
    pub vae_weights: u64,
    /// Live activations while encoding prompts.
    pub encode_activations: u64,
    /// Live activations in the widest transformer block.
    pub denoise_activations: u64,
    /// Live activations at the VAE decoder's widest point (one image at a time).
    pub decode_activations: u64,
    /// Peak with every model resident throughout.
    pub peak_keep_encoders: u64,
    /// Peak when the text encoders are freed after encoding.
    pub peak_free_encoders: u64,
}

/// Predicts the memory of generating `batch` images of `width × height` with T5 limit `max_seq`
/// (true CFG doubles `batch`); `materialised_attention`: whether the backend's attention keeps
/// the `[B, heads, N, N]` scores.
pub fn predict_memory(
    s: &FluxMemoryShapes,
    width: u64,
    height: u64,
    batch: u64,
    max_seq: u64,
    materialised_attention: bool,
) -> MemoryEstimate {
    let t = &s.transformer;
    let transformer_weights = t.num_params() * s.transformer_bytes;
    let t5_weights = t5_params(&s.t5) * s.t5_bytes;
    let clip_weights = clip_text_params(s.clip) * s.clip_bytes;
    let vae_weights = autoencoder_params(&s.vae) * 4;

    // Encoding: T5's widest point (hidden, normed, q, k, v, attention out, 2 × d_ff) and its
    // score matrix with the position bias.
    let (d5, ff5, h5) = (s.t5.d_model as u64, s.t5.d_ff as u64, s.t5.num_heads as u64);
    let encode_activations =
        batch * max_seq * (6 * d5 + 2 * ff5) * s.t5_bytes + 3 * batch * h5 * max_seq * max_seq * 4;

    let f = 16u64; // VAE factor 8 × 2 × 2 packing
    let tokens = (height / f) * (width / f) + max_seq;
    let d = t.inner_dim() as u64;
    let heads = t.num_attention_heads as u64;
    let scores = if materialised_attention {
        2 * batch * heads * tokens * tokens * 4
    } else {
        0
    };
    let denoise_activations = batch * tokens * d * (16 * s.transformer_bytes + 2 * 4) + scores;

    // The full-resolution up block sees the upsampled second-level channels.
    let c0 = s.vae.block_out_channels.get(1).copied().unwrap_or(128) as u64;
    let full = height * width;
    let latent_tokens = full / 64;
    let decode_activations = 4 * c0 * full * 4
        + if materialised_attention {
            2 * latent_tokens * latent_tokens * 4
        } else {
            0
        };

    let weights = transformer_weights + t5_weights + clip_weights + vae_weights;
    let peak_keep_encoders = weights
        + encode_activations
            .max(denoise_activations)
            .max(decode_activations);
    let peak_free_encoders = (weights + encode_activations)
        .max(transformer_weights + vae_weights + denoise_activations.max(decode_activations));
    MemoryEstimate {
        transformer_weights,
        t5_weights,
        clip_weights,
        vae_weights,
        encode_activations,
        denoise_activations,
        decode_activations,
        peak_keep_encoders,
        peak_free_encoders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_published_checkpoints() {
        // From the checkpoints' safetensors headers (FLUX.1-schnell).
        assert_eq!(
            FluxTransformerConfig::default().num_params(),
            11_901_408_320
        );
        assert_eq!(t5_params(&T5Config::t5_v1_1_xxl()), 4_762_310_656);
        assert_eq!(clip_text_params([49408, 768, 3072, 12, 77]), 123_060_480);
        assert_eq!(autoencoder_params(&flux_vae_config()), 83_819_683);
    }

    #[test]
    fn freeing_the_encoders_lowers_the_peak_and_resolution_raises_it() {
        let s = FluxMemoryShapes::flux_1_schnell();
        let big = predict_memory(&s, 1024, 1024, 1, 256, true);
        let small = predict_memory(&s, 512, 512, 1, 256, true);
        assert!(big.peak_free_encoders < big.peak_keep_encoders);
        assert!(small.peak_keep_encoders < big.peak_keep_encoders);
        assert!(big.denoise_activations > 4 * small.denoise_activations / 2);
    }
}
