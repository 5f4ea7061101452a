//! `UNet2DConditionModel`: the Stable Diffusion noise predictor, configured from a diffusers
//! `unet/config.json` and loaded from `diffusion_pytorch_model.safetensors` with diffusers' key names.
//!
//! Supported blocks: `CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`, `UpBlock2D` (SD1.x and SD2.x UNets); anything else is a typed error naming
//! the config key and value.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::diffusion::blocks::{
    open_diffusers_weights, timestep_embedding, Attention, Conv2d, Downsample2D, GroupNorm,
    ResnetBlock2D, ResnetSpec, TimestepEmbedding, Transformer2DModel, TransformerSpec, Upsample2D,
    WeightSource,
};
use crate::diffusion::folder::missing_folder;
use crate::error::{Result, TrainError};
use crate::nn::lora::LoraLinear;
use crate::sd::config::UNet2DConditionConfig;

/// One down block: `CrossAttnDownBlock2D` (with `attentions`) or `DownBlock2D` (without).
#[derive(Module, Debug)]
pub struct UNetDownBlock<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions` (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// `downsamplers.0` (absent in the last block).
    pub downsampler: Option<Downsample2D<B>>,
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct UNetMidBlock<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions`.
    pub attentions: Vec<Transformer2DModel<B>>,
}

/// One up block: `CrossAttnUpBlock2D` (with `attentions`) or `UpBlock2D` (without). Each resnet
/// takes the previous output concatenated with a skip connection from the down path.
#[derive(Module, Debug)]
pub struct UNetUpBlock<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions` (empty for `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// `upsamplers.0` (absent in the last block).
    pub upsampler: Option<Upsample2D<B>>,
}

/// The Stable Diffusion UNet (diffusers `UNet2DConditionModel`), generic over the backend.
///
/// ```no_run
/// use svgen_train::sd::unet::UNet2DConditionModel;
/// use svgen_train::burn::tensor::Tensor;
/// type B = svgen_train::CpuBackend;
/// let device = Default::default();
/// let unet = UNet2DConditionModel::<B>::from_pretrained("sd15/unet", &device)?;
/// let sample = Tensor::<B, 4>::zeros([1, 4, 64, 64], &device);
/// let t = Tensor::<B, 1>::from_floats([999.0], &device);
/// let text = Tensor::<B, 3>::zeros([1, 77, 768], &device);
/// let noise_pred = unet.forward(sample, t, text); // [1, 4, 64, 64]
/// # Ok::<(), svgen_train::TrainError>(())
/// ```
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `time_embedding`.
    pub time_embedding: TimestepEmbedding<B>,
    /// `down_blocks`.
    pub down_blocks: Vec<UNetDownBlock<B>>,
    /// `mid_block`.
    pub mid_block: Option<UNetMidBlock<B>>,
    /// `up_blocks`.
    pub up_blocks: Vec<UNetUpBlock<B>>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
    /// The architecture.
    #[module(skip)]
    config: UNet2DConditionConfig,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Loads `config.json` and `diffusion_pytorch_model.safetensors` (or its sharded index) from a
    /// diffusers `unet/` folder. Missing folder / file, unsupported options, missing, wrong-shaped
    /// or left-over (not in the configured architecture) tensors are typed errors naming the
    /// path, key or value.
    pub fn from_pretrained(unet_dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = unet_dir.as_ref();
        if !dir.is_dir() {
            return Err(missing_folder(dir));
        }
        let config = UNet2DConditionConfig::from_file(&dir.join("config.json"))?;
        let mut weights = open_diffusers_weights(dir)?;
        let model = Self::load(config, &mut weights, device)?;
        weights.finish()?;
        Ok(model)
    }

    /// Builds the model from `config` with every tensor taken from `src` by diffusers key.
    pub fn load(
        config: UNet2DConditionConfig,
        src: &mut dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let cfg = &config;
        let n = cfg.block_out_channels.len();
        let boc = &cfg.block_out_channels;
        let groups = cfg.groups()?;
        let heads = cfg.heads_per_block()?;
        let layers = cfg.layers_per_block.resolve("layers_per_block", n)?;
        let cross = cfg.cross_attention_dim.resolve("cross_attention_dim", n)?;
        let tlayers = cfg
            .transformer_layers_per_block
            .resolve("transformer_layers_per_block", n)?;
        let temb = cfg.time_embed_dim();
        let resnet = |c_in: usize, c_out: usize, scale: f64| ResnetSpec {
            c_in,
            c_out,
            temb: Some(temb),
            groups,
            eps: cfg.norm_eps,
            output_scale_factor: scale,
        };
        let tspec = |channels: usize, i: usize| TransformerSpec {
            channels,
            heads: heads[i],
            layers: tlayers[i],
            cross_dim: cross[i],
            groups,
            linear_projection: cfg.use_linear_projection,
        };

        let k_in = cfg.conv_in_kernel;
        let conv_in = Conv2d::load(
            src,
            "conv_in",
            [cfg.in_channels, boc[0], k_in],
            1,
            (k_in - 1) / 2,
            device,
        )?;
        let time_embedding = TimestepEmbedding::load(src, "time_embedding", boc[0], temb, device)?;

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = boc[i];
            let cross_attn = kind == "CrossAttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers[i] {
                let c = if j == 0 { in_ch } else { out_ch };
                resnets.push(ResnetBlock2D::load(
                    src,
                    &format!("down_blocks.{i}.resnets.{j}"),
                    resnet(c, out_ch, cfg.resnet_out_scale_factor),
                    device,
                )?);
                if cross_attn {
                    attentions.push(Transformer2DModel::load(
                        src,
                        &format!("down_blocks.{i}.attentions.{j}"),
                        tspec(out_ch, i),
                        device,
                    )?);
                }
            }
            let downsampler = if i + 1 < n {
                Some(Downsample2D::load(
                    src,
                    &format!("down_blocks.{i}.downsamplers.0"),
                    out_ch,
                    cfg.downsample_padding,
                    device,
                )?)
            } else {
                None
            };
            down_blocks.push(UNetDownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let mid_block = match cfg.mid_block_type {
            Some(_) => {
                let c = boc[n - 1];
                let scale = cfg.mid_block_scale_factor;
                let mut resnets = vec![ResnetBlock2D::load(
                    src,
                    "mid_block.resnets.0",
                    resnet(c, c, scale),
                    device,
                )?];
                let attentions = vec![Transformer2DModel::load(
                    src,
                    "mid_block.attentions.0",
                    tspec(c, n - 1),
                    device,
                )?];
                resnets.push(ResnetBlock2D::load(
                    src,
                    "mid_block.resnets.1",
                    resnet(c, c, scale),
                    device,
                )?);
                Some(UNetMidBlock {
                    resnets,
                    attentions,
                })
            }
            None => None,
        };

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev_out = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let down_index = n - 1 - i; // per-block lists are reversed for the up path
            let num_layers = layers[down_index] + 1;
            let cross_attn = kind == "CrossAttnUpBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..num_layers {
                let skip = if j + 1 == num_layers { in_ch } else { out_ch };
                let c = if j == 0 { prev_out } else { out_ch };
                resnets.push(ResnetBlock2D::load(
                    src,
                    &format!("up_blocks.{i}.resnets.{j}"),
                    resnet(c + skip, out_ch, cfg.resnet_out_scale_factor),
                    device,
                )?);
                if cross_attn {
                    attentions.push(Transformer2DModel::load(
                        src,
                        &format!("up_blocks.{i}.attentions.{j}"),
                        tspec(out_ch, down_index),
                        device,
                    )?);
                }
            }
            let upsampler = if i + 1 < n {
                Some(Upsample2D::load(
                    src,
                    &format!("up_blocks.{i}.upsamplers.0"),
                    out_ch,
                    device,
                )?)
            } else {
                None
            };
            up_blocks.push(UNetUpBlock {
                resnets,
                attentions,
                upsampler,
            });
        }

        let conv_norm_out =
            GroupNorm::load(src, "conv_norm_out", groups, boc[0], cfg.norm_eps, device)?;
        let k_out = cfg.conv_out_kernel;
        let conv_out = Conv2d::load(
            src,
            "conv_out",
            [boc[0], cfg.out_channels, k_out],
            1,
            (k_out - 1) / 2,
            device,
        )?;
        Ok(Self {
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            config,
        })
    }

    /// The architecture this model was built from.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// Checks that `forward`'s input shapes fit this model: `sample` `[B, in_channels, h, w]`
    /// with `h, w > 0`, `timestep` `[B]` or `[1]`, `encoder_hidden_states` `[B, T > 0,
    /// cross_attention_dim]`. The error names the input and the shape found.
    pub fn check_inputs(
        &self,
        sample: [usize; 4],
        timestep: [usize; 1],
        context: [usize; 3],
    ) -> Result<()> {
        let bad = |m: String| Err(TrainError::InvalidArgument(m));
        let [b, c, h, w] = sample;
        if b == 0 || c != self.config.in_channels || h == 0 || w == 0 {
            return bad(format!(
                "UNet `sample` has shape {sample:?}, expected [B > 0, {}, h > 0, w > 0]",
                self.config.in_channels
            ));
        }
        if timestep[0] != b && timestep[0] != 1 {
            return bad(format!(
                "UNet `timestep` has shape {timestep:?}, expected [{b}] or [1]"
            ));
        }
        let cross = self
            .config
            .cross_attention_dim
            .resolve("cross_attention_dim", self.config.block_out_channels.len())?;
        let needs_context = self.down_blocks.iter().any(|d| !d.attentions.is_empty())
            || self.mid_block.is_some()
            || self.up_blocks.iter().any(|u| !u.attentions.is_empty());
        if needs_context
            && (context[0] != b || context[1] == 0 || cross.iter().any(|&d| d != context[2]))
        {
            return bad(format!(
                "UNet `encoder_hidden_states` has shape {context:?}, expected [{b}, T > 0, {}]",
                cross[0]
            ));
        }
        Ok(())
    }

    /// [`Self::forward`] after [`Self::check_inputs`]: inconsistent shapes are a typed error
    /// instead of a backend panic.
    pub fn try_forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        encoder_hidden_states: Tensor<B, 3>,
    ) -> Result<Tensor<B, 4>> {
        self.check_inputs(sample.dims(), timestep.dims(), encoder_hidden_states.dims())?;
        Ok(self.forward(sample, timestep, encoder_hidden_states))
    }

    /// Predicts the noise (or `v`, per the scheduler's `prediction_type`).
    ///
    /// `sample` `[B, C, h, w]` (noisy latents, already scaled by the scheduler), `timestep` `[B]`
    /// or `[1]` (float; fractional values are fine, as Euler schedulers pass them),
    /// `encoder_hidden_states` `[B, T, cross_attention_dim]`. Returns `[B, out_channels, h, w]`.
    /// Any latent size works; sides that are not multiples of
    /// [`UNet2DConditionConfig::upsampling_factor`] are resized to the skip connections' sizes.
    /// Shapes are not checked here (the backend panics on inconsistent ones); use
    /// [`Self::try_forward`] for untrusted input.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        encoder_hidden_states: Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let cfg = &self.config;
        let b = sample.dims()[0];
        let timestep = if timestep.dims()[0] == 1 && b > 1 {
            timestep.expand([b])
        } else {
            timestep
        };
        let sample = if cfg.center_input_sample {
            sample.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            sample
        };
        let t_emb = timestep_embedding(
            timestep,
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        );
        // Every resnet applies silu before its `time_emb_proj`; do it once.
        let emb = activation::silu(self.time_embedding.forward(t_emb));
        let ctx = &encoder_hidden_states;

        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for blk in &self.down_blocks {
            for (j, resnet) in blk.resnets.iter().enumerate() {
                x = resnet.forward(x, Some(&emb));
                if let Some(attn) = blk.attentions.get(j) {
                    x = attn.forward(x, ctx);
                }
                skips.push(x.clone());
            }
            if let Some(ds) = &blk.downsampler {
                x = ds.forward(x);
                skips.push(x.clone());
            }
        }

        if let Some(mid) = &self.mid_block {
            x = mid.resnets[0].forward(x, Some(&emb));
            for (attn, resnet) in mid.attentions.iter().zip(&mid.resnets[1..]) {
                x = attn.forward(x, ctx);
                x = resnet.forward(x, Some(&emb));
            }
        }

        for blk in &self.up_blocks {
            for (j, resnet) in blk.resnets.iter().enumerate() {
                // The load checked the block structure, so the skip stack matches the resnets.
                if let Some(skip) = skips.pop() {
                    x = Tensor::cat(vec![x, skip], 1);
                }
                x = resnet.forward(x, Some(&emb));
                if let Some(attn) = blk.attentions.get(j) {
                    x = attn.forward(x, ctx);
                }
            }
            if let Some(us) = &blk.upsampler {
                let size = skips.last().map(|s| {
                    let [_, _, h, w] = s.dims();
                    [h, w]
                });
                x = us.forward(x, size);
            }
        }

        let x = activation::silu(self.conv_norm_out.forward(x));
        self.conv_out.forward(x)
    }

    fn attentions_mut(&mut self) -> Vec<(String, &mut Attention<B>)> {
        let mut out = Vec::new();
        for (i, blk) in self.down_blocks.iter_mut().enumerate() {
            for (j, t) in blk.attentions.iter_mut().enumerate() {
                for (p, a) in t.attentions_mut() {
                    out.push((format!("down_blocks.{i}.attentions.{j}.{p}"), a));
                }
            }
        }
        if let Some(mid) = &mut self.mid_block {
            for (j, t) in mid.attentions.iter_mut().enumerate() {
                for (p, a) in t.attentions_mut() {
                    out.push((format!("mid_block.attentions.{j}.{p}"), a));
                }
            }
        }
        for (i, blk) in self.up_blocks.iter_mut().enumerate() {
            for (j, t) in blk.attentions.iter_mut().enumerate() {
                for (p, a) in t.attentions_mut() {
                    out.push((format!("up_blocks.{i}.attentions.{j}.{p}"), a));
                }
            }
        }
        out
    }

    /// Every attention projection (`to_q`, `to_k`, `to_v`, `to_out.0` of every `attn1`/`attn2`)
    /// with its diffusers module path without a `unet.` prefix, e.g.
    /// `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`. LoRA attaches here.
    pub fn attention_linears_mut(&mut self) -> Vec<(String, &mut LoraLinear<B>)> {
        let mut out = Vec::new();
        for (path, a) in self.attentions_mut() {
            out.push((format!("{path}.to_q"), &mut a.to_q));
            out.push((format!("{path}.to_k"), &mut a.to_k));
            out.push((format!("{path}.to_v"), &mut a.to_v));
            out.push((format!("{path}.to_out.0"), &mut a.to_out));
        }
        out
    }

    /// Sliced attention: `None` computes every attention at once; `Some(n)` processes queries
    /// `n` at a time, so the score buffer is bounded by `B·heads·n·T_kv` floats (SD1.5 at 512 px:
    /// `Some(1024)` keeps the largest buffer at 2·8·1024·4096·4 B = 256 MiB instead of 1 GiB).
    /// The result is the same up to float rounding.
    pub fn set_attention_slice(&mut self, slice: Option<usize>) {
        for (_, a) in self.attentions_mut() {
            a.slice_size = slice;
        }
    }
}
