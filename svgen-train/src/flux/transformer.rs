//! `FluxTransformer2DModel`: the FLUX.1 rectified-flow transformer (diffusers'
//! `transformer_flux.py`): text and image tokens in double-stream blocks (separate weights, joint
//! attention), then one concatenated sequence in single-stream blocks (parallel attention and
//! MLP), 3-axis RoPE, adaptive norms driven by the timestep, pooled-CLIP (and, for guidance-
//! distilled checkpoints, guidance) embedding. Key names as in diffusers.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use svgen_eval::weights::{Weights, DIFFUSERS_STEM};

use super::config::FluxTransformerConfig;
use super::layers::{
    joint_attention, layer_norm, modulate, AdaNorm, FeedForward, QkvProjection, Rope, TimeTextEmbed,
};
use crate::cpu;
use crate::diffusion::folder::{missing_folder, require};
use crate::error::{Result, TrainError};

/// The eps of every LayerNorm of the model.
const NORM_EPS: f64 = 1e-6;
/// RoPE base.
pub const ROPE_THETA: f64 = 10_000.0;

/// `FluxTransformerBlock`: the double-stream (MMDiT) block.
#[derive(Module, Debug)]
pub struct FluxTransformerBlock<B: Backend> {
    /// `norm1` (6 vectors).
    pub norm1: AdaNorm<B>,
    /// `norm1_context` (6 vectors).
    pub norm1_context: AdaNorm<B>,
    /// `attn.to_q/k/v`, `attn.norm_q/k`.
    pub attn_image: QkvProjection<B>,
    /// `attn.add_q/k/v_proj`, `attn.norm_added_q/k`.
    pub attn_context: QkvProjection<B>,
    /// `attn.to_out.0`.
    pub to_out: Linear<B>,
    /// `attn.to_add_out`.
    pub to_add_out: Linear<B>,
    /// `ff`.
    pub ff: FeedForward<B>,
    /// `ff_context`.
    pub ff_context: FeedForward<B>,
}

impl<B: Backend> FluxTransformerBlock<B> {
    fn load(w: &Weights, prefix: &str, d: usize, heads: usize, device: &B::Device) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        let attn = p("attn");
        Ok(Self {
            norm1: AdaNorm::load(w, &p("norm1"), d, 6, device)?,
            norm1_context: AdaNorm::load(w, &p("norm1_context"), d, 6, device)?,
            attn_image: QkvProjection::load(
                w,
                &attn,
                ["to_q", "to_k", "to_v", "norm_q", "norm_k"],
                d,
                heads,
                device,
            )?,
            attn_context: QkvProjection::load(
                w,
                &attn,
                [
                    "add_q_proj",
                    "add_k_proj",
                    "add_v_proj",
                    "norm_added_q",
                    "norm_added_k",
                ],
                d,
                heads,
                device,
            )?,
            to_out: w.linear(&format!("{attn}.to_out.0"), d, d, true, device)?,
            to_add_out: w.linear(&format!("{attn}.to_add_out"), d, d, true, device)?,
            ff: FeedForward::load(w, &p("ff"), d, device)?,
            ff_context: FeedForward::load(w, &p("ff_context"), d, device)?,
        })
    }

    /// Image tokens `x` `[B, S, d]`, text tokens `c` `[B, T, d]`, `silu(temb)` `[B, d]`, RoPE of
    /// the `T + S` positions; returns the new `(c, x)`.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        c: Tensor<B, 3>,
        silu_temb: &Tensor<B, 2>,
        rope: &Rope<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let t_len = c.dims()[1];
        let s_len = x.dims()[1];
        let m = self.norm1.vectors(silu_temb.clone());
        let mc = self.norm1_context.vectors(silu_temb.clone());
        // (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)
        let nx = modulate(layer_norm(x.clone(), NORM_EPS), m[0].clone(), m[1].clone());
        let nc = modulate(
            layer_norm(c.clone(), NORM_EPS),
            mc[0].clone(),
            mc[1].clone(),
        );
        let [q, k, v] = self.attn_image.forward(nx);
        let [cq, ck, cv] = self.attn_context.forward(nc);
        let q = rope.apply(Tensor::cat(vec![cq, q], 1));
        let k = rope.apply(Tensor::cat(vec![ck, k], 1));
        let v = Tensor::cat(vec![cv, v], 1);
        let o = joint_attention(q, k, v);
        let c_attn = self.to_add_out.forward(o.clone().narrow(1, 0, t_len));
        let x_attn = self.to_out.forward(o.narrow(1, t_len, s_len));

        let x = x + x_attn * m[2].clone().unsqueeze_dim(1);
        let nx = modulate(layer_norm(x.clone(), NORM_EPS), m[3].clone(), m[4].clone());
        let x = x + self.ff.forward(nx) * m[5].clone().unsqueeze_dim(1);

        let c = c + c_attn * mc[2].clone().unsqueeze_dim(1);
        let nc = modulate(
            layer_norm(c.clone(), NORM_EPS),
            mc[3].clone(),
            mc[4].clone(),
        );
        let c = c + self.ff_context.forward(nc) * mc[5].clone().unsqueeze_dim(1);
        (c, x)
    }
}

/// `FluxSingleTransformerBlock`: attention and MLP in parallel over the joint sequence.
#[derive(Module, Debug)]
pub struct FluxSingleTransformerBlock<B: Backend> {
    /// `norm` (3 vectors).
    pub norm: AdaNorm<B>,
    /// `attn.to_q/k/v`, `attn.norm_q/k`.
    pub attn: QkvProjection<B>,
    /// `proj_mlp`.
    pub proj_mlp: Linear<B>,
    /// `proj_out` (over the concatenated attention output and MLP hidden state).
    pub proj_out: Linear<B>,
}

impl<B: Backend> FluxSingleTransformerBlock<B> {
    fn load(w: &Weights, prefix: &str, d: usize, heads: usize, device: &B::Device) -> Result<Self> {
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(Self {
            norm: AdaNorm::load(w, &p("norm"), d, 3, device)?,
            attn: QkvProjection::load(
                w,
                &p("attn"),
                ["to_q", "to_k", "to_v", "norm_q", "norm_k"],
                d,
                heads,
                device,
            )?,
            proj_mlp: w.linear(&p("proj_mlp"), d, 4 * d, true, device)?,
            proj_out: w.linear(&p("proj_out"), 5 * d, d, true, device)?,
        })
    }

    fn forward(&self, h: Tensor<B, 3>, silu_temb: &Tensor<B, 2>, rope: &Rope<B>) -> Tensor<B, 3> {
        // (shift, scale, gate)
        let m = self.norm.vectors(silu_temb.clone());
        let nh = modulate(layer_norm(h.clone(), NORM_EPS), m[0].clone(), m[1].clone());
        let mlp = cpu::activation::gelu_tanh(self.proj_mlp.forward(nh.clone()));
        let [q, k, v] = self.attn.forward(nh);
        let o = joint_attention(rope.apply(q), rope.apply(k), v);
        let out = self.proj_out.forward(Tensor::cat(vec![o, mlp], 2));
        h + out * m[2].clone().unsqueeze_dim(1)
    }
}

/// The FLUX transformer, generic over the backend.
///
/// ```no_run
/// use svgen_train::flux::FluxTransformer2DModel;
/// use svgen_train::burn::tensor::DType;
/// type B = svgen_train::CpuBackend;
/// let device = Default::default();
/// // bf16 where the backend computes in it (CUDA); f32 on the CPU.
/// let t = FluxTransformer2DModel::<B>::from_pretrained("flux-schnell/transformer", None, &device)?;
/// assert_eq!(t.config().latent_channels(), 16);
/// # Ok::<(), svgen_train::TrainError>(())
/// ```
#[derive(Module, Debug)]
pub struct FluxTransformer2DModel<B: Backend> {
    /// `time_text_embed`.
    pub time_text_embed: TimeTextEmbed<B>,
    /// `context_embedder`.
    pub context_embedder: Linear<B>,
    /// `x_embedder`.
    pub x_embedder: Linear<B>,
    /// `transformer_blocks`.
    pub transformer_blocks: Vec<FluxTransformerBlock<B>>,
    /// `single_transformer_blocks`.
    pub single_transformer_blocks: Vec<FluxSingleTransformerBlock<B>>,
    /// `norm_out` (`AdaLayerNormContinuous`: scale, then shift).
    pub norm_out: AdaNorm<B>,
    /// `proj_out`.
    pub proj_out: Linear<B>,
    #[module(skip)]
    config: FluxTransformerConfig,
}

impl<B: Backend> FluxTransformer2DModel<B> {
    /// Loads `config.json` and `diffusion_pytorch_model.safetensors` (or its shard index) from a
    /// diffusers `transformer/` folder, the weights held in `dtype` (`None`: the device's default
    /// float type; `Some(DType::BF16)` halves the memory of the 12B model where the backend
    /// computes in bf16).
    ///
    /// # Errors
    /// [`TrainError::MissingFolder`]; config errors naming the key (`_class_name`,
    /// `axes_dims_rope`, ...); missing, wrong-shaped or unused tensors naming the key and file.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: Option<DType>,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(missing_folder(dir));
        }
        let config = FluxTransformerConfig::from_file(&require(dir, "config.json")?)?;
        let mut w = Weights::open(dir, DIFFUSERS_STEM)?.frozen();
        if let Some(d) = dtype {
            w = w.with_dtype(d);
        }
        let model = Self::load(config, &w, device)?;
        w.finish()?;
        Ok(model)
    }

    /// Builds the model from `config`, taking every tensor from `w` by diffusers key.
    ///
    /// # Errors
    /// As [`FluxTransformer2DModel::from_pretrained`].
    pub fn load(config: FluxTransformerConfig, w: &Weights, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let d = config.inner_dim();
        let heads = config.num_attention_heads;
        let transformer_blocks = (0..config.num_layers)
            .map(|i| {
                FluxTransformerBlock::load(w, &format!("transformer_blocks.{i}"), d, heads, device)
            })
            .collect::<Result<Vec<_>>>()?;
        let single_transformer_blocks = (0..config.num_single_layers)
            .map(|i| {
                FluxSingleTransformerBlock::load(
                    w,
                    &format!("single_transformer_blocks.{i}"),
                    d,
                    heads,
                    device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            time_text_embed: TimeTextEmbed::load(
                w,
                d,
                config.pooled_projection_dim,
                config.guidance_embeds,
                device,
            )?,
            context_embedder: w.linear(
                "context_embedder",
                config.joint_attention_dim,
                d,
                true,
                device,
            )?,
            x_embedder: w.linear("x_embedder", config.in_channels, d, true, device)?,
            transformer_blocks,
            single_transformer_blocks,
            norm_out: AdaNorm::load(w, "norm_out", d, 2, device)?,
            proj_out: w.linear("proj_out", d, config.out_channels(), true, device)?,
            config,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &FluxTransformerConfig {
        &self.config
    }

    /// The dtype the weights (and activations) are held in.
    pub fn dtype(&self) -> DType {
        self.x_embedder.weight.val().dtype()
    }

    /// The rotary tables for text position ids (`txt_ids`, all zero in FLUX) followed by image
    /// position ids (`img_ids`: `[0, row, column]` of each packed latent).
    pub fn rope(&self, txt_ids: &[[f64; 3]], img_ids: &[[f64; 3]], device: &B::Device) -> Rope<B> {
        let ids: Vec<[f64; 3]> = txt_ids.iter().chain(img_ids).copied().collect();
        Rope::new(&ids, &self.config.axes_dims_rope, ROPE_THETA, device)
    }

    /// The velocity prediction `[B, S, out_channels]` (f32) for packed latents `hidden_states`
    /// `[B, S, in_channels]`, T5 embeddings `encoder_hidden_states` `[B, T, joint_attention_dim]`,
    /// pooled CLIP embeddings `[B, pooled_projection_dim]`, `timestep` `[B]` in `[0, 1]` (the
    /// pipeline's `t / 1000`), RoPE of the `T + S` positions ([`FluxTransformer2DModel::rope`]),
    /// and `guidance` `[B]` for guidance-distilled models.
    ///
    /// # Errors
    /// [`TrainError::InvalidArgument`] naming the input whose shape disagrees with the config or
    /// the others, or a missing / unexpected `guidance`.
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Tensor<B, 3>,
        pooled_projections: Tensor<B, 2>,
        timestep: Tensor<B, 1>,
        rope: &Rope<B>,
        guidance: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 3>> {
        let c = &self.config;
        let [b, s, ch] = hidden_states.dims();
        let [bc, t, jd] = encoder_hidden_states.dims();
        let bad = |m: String| Err(TrainError::InvalidArgument(m));
        if b == 0 || s == 0 || ch != c.in_channels {
            return bad(format!(
                "`hidden_states` has shape [{b}, {s}, {ch}], expected [B > 0, S > 0, {}]",
                c.in_channels
            ));
        }
        if bc != b || jd != c.joint_attention_dim {
            return bad(format!(
                "`encoder_hidden_states` has shape [{bc}, {t}, {jd}], expected [{b}, T, {}]",
                c.joint_attention_dim
            ));
        }
        if pooled_projections.dims() != [b, c.pooled_projection_dim] {
            return bad(format!(
                "`pooled_projections` has shape {:?}, expected [{b}, {}]",
                pooled_projections.dims(),
                c.pooled_projection_dim
            ));
        }
        if timestep.dims() != [b] {
            return bad(format!(
                "`timestep` has shape {:?}, expected [{b}]",
                timestep.dims()
            ));
        }
        if rope.len() != t + s {
            return bad(format!(
                "the rotary embedding covers {} positions, the sequence has {t} + {s}",
                rope.len()
            ));
        }
        match (&guidance, c.guidance_embeds) {
            (Some(g), true) if g.dims() == [b] => {}
            (None, false) => {}
            (Some(g), true) => {
                return bad(format!(
                    "`guidance` has shape {:?}, expected [{b}]",
                    g.dims()
                ))
            }
            (None, true) => {
                return bad("this transformer has a guidance embedding: pass `guidance`".into())
            }
            (Some(_), false) => {
                return bad(
                    "this transformer has no guidance embedding (FLUX.1-schnell): pass no \
                     `guidance`"
                        .into(),
                )
            }
        }
        let dtype = self.dtype();
        let x = self.x_embedder.forward(hidden_states.cast(dtype));
        let temb = self
            .time_text_embed
            .forward(timestep, guidance, pooled_projections.cast(dtype));
        let silu_temb = cpu::activation::silu(temb);
        let mut ctx = self
            .context_embedder
            .forward(encoder_hidden_states.cast(dtype));
        let mut x = x;
        for blk in &self.transformer_blocks {
            (ctx, x) = blk.forward(x, ctx, &silu_temb, rope);
        }
        let mut h = Tensor::cat(vec![ctx, x], 1);
        for blk in &self.single_transformer_blocks {
            h = blk.forward(h, &silu_temb, rope);
        }
        let x = h.narrow(1, t, s);
        // AdaLayerNormContinuous chunks (scale, shift).
        let m = self.norm_out.vectors(silu_temb);
        let x = modulate(layer_norm(x, NORM_EPS), m[1].clone(), m[0].clone());
        Ok(self.proj_out.forward(x).cast(DType::F32))
    }
}
