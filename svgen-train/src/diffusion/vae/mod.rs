//! `AutoencoderKL`: the VAE of Stable Diffusion (4 latent channels) and FLUX (16 latent channels,
//! with a `shift_factor`). The encoder maps images in `[-1, 1]` to a diagonal Gaussian over
//! latents (used to build training latents); the decoder maps latents back to images. Configured
//! from a diffusers `vae/config.json`, weights from `diffusion_pytorch_model.safetensors` (single
//! or sharded, any float dtype) with diffusers' key names.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{s, Tensor};

use svgen_eval::weights::diffusers_legacy_attention_key;

use crate::cpu;
use crate::diffusion::blocks::{
    open_diffusers_weights, Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, ResnetSpec,
    SpatialSelfAttention, Upsample2D, WeightSource,
};
use crate::diffusion::folder::missing_folder;
use crate::error::{Result, TrainError};

mod config;

pub use config::AutoencoderKLConfig;

/// The VAE's norms use eps 1e-6 (hard-coded in diffusers' `Encoder`/`Decoder`).
const VAE_EPS: f64 = 1e-6;

/// A diagonal Gaussian over latents (`DiagonalGaussianDistribution`): the encoder's output.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian<B: Backend> {
    /// Mean `[B, latent_channels, h, w]`.
    pub mean: Tensor<B, 4>,
    /// Log-variance, clamped to `[-30, 20]` like diffusers.
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// `mean + exp(0.5·logvar)·noise` with caller-supplied standard-normal `noise` (same shape).
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + self.logvar.clone().mul_scalar(0.5).exp() * noise
    }

    /// The mode (= the mean).
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, self-attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions` (empty when `mid_block_add_attention` is false).
    pub attentions: Vec<SpatialSelfAttention<B>>,
}

impl<B: Backend> VaeMidBlock<B> {
    fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        c: usize,
        groups: usize,
        add_attention: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let spec = ResnetSpec {
            c_in: c,
            c_out: c,
            temb: None,
            groups,
            eps: VAE_EPS,
            output_scale_factor: 1.0,
        };
        let r0 = ResnetBlock2D::load(src, &format!("{prefix}.resnets.0"), spec, device)?;
        let attentions = if add_attention {
            vec![SpatialSelfAttention::load(
                src,
                &format!("{prefix}.attentions.0"),
                c,
                groups,
                VAE_EPS,
                device,
            )?]
        } else {
            Vec::new()
        };
        let r1 = ResnetBlock2D::load(src, &format!("{prefix}.resnets.1"), spec, device)?;
        Ok(Self {
            resnets: vec![r0, r1],
            attentions,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        if let Some(a) = self.attentions.first() {
            x = a.forward(x);
        }
        self.resnets[1].forward(x, None)
    }
}

/// `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `downsamplers.0` (absent in the last block).
    pub downsampler: Option<Downsample2D<B>>,
}

/// `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `upsamplers.0` (absent in the last block).
    pub upsampler: Option<Upsample2D<B>>,
}

/// The `count` resnets `<block>.resnets.{j}` of a VAE block (no time embedding): the first
/// maps `channels.0` to `channels.1` channels, the others keep `channels.1`.
fn load_resnets<B: Backend>(
    src: &mut dyn WeightSource,
    block: &str,
    count: usize,
    channels: (usize, usize),
    groups: usize,
    device: &B::Device,
) -> Result<Vec<ResnetBlock2D<B>>> {
    let (c_in, c_out) = channels;
    (0..count)
        .map(|j| {
            let spec = ResnetSpec {
                c_in: if j == 0 { c_in } else { c_out },
                c_out,
                temb: None,
                groups,
                eps: VAE_EPS,
                output_scale_factor: 1.0,
            };
            ResnetBlock2D::load(src, &format!("{block}.resnets.{j}"), spec, device)
        })
        .collect()
}

/// The VAE encoder (`encoder.*`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `down_blocks`.
    pub down_blocks: Vec<EncoderBlock<B>>,
    /// `mid_block`.
    pub mid_block: VaeMidBlock<B>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out` (to `2 × latent_channels`: mean and log-variance).
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    fn load(
        src: &mut dyn WeightSource,
        cfg: &AutoencoderKLConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let n = boc.len();
        let conv_in = Conv2d::load(
            src,
            "encoder.conv_in",
            [cfg.in_channels, boc[0], 3],
            1,
            1,
            device,
        )?;
        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = boc[0];
        for (i, &c) in boc.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = c;
            let resnets = load_resnets(
                src,
                &format!("encoder.down_blocks.{i}"),
                cfg.layers_per_block,
                (in_ch, out_ch),
                g,
                device,
            )?;
            let downsampler = if i + 1 < n {
                Some(Downsample2D::load(
                    src,
                    &format!("encoder.down_blocks.{i}.downsamplers.0"),
                    out_ch,
                    0,
                    device,
                )?)
            } else {
                None
            };
            down_blocks.push(EncoderBlock {
                resnets,
                downsampler,
            });
        }
        let c = boc[n - 1];
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: VaeMidBlock::load(
                src,
                "encoder.mid_block",
                c,
                g,
                cfg.mid_block_add_attention,
                device,
            )?,
            conv_norm_out: GroupNorm::load(src, "encoder.conv_norm_out", g, c, VAE_EPS, device)?,
            conv_out: Conv2d::load(
                src,
                "encoder.conv_out",
                [c, 2 * cfg.latent_channels, 3],
                1,
                1,
                device,
            )?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for blk in &self.down_blocks {
            for r in &blk.resnets {
                x = r.forward(x, None);
            }
            if let Some(d) = &blk.downsampler {
                x = d.forward(x);
            }
        }
        let x = self.mid_block.forward(x);
        self.conv_out
            .forward(cpu::activation::silu(self.conv_norm_out.forward(x)))
    }
}

/// The VAE decoder (`decoder.*`).
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `mid_block`.
    pub mid_block: VaeMidBlock<B>,
    /// `up_blocks`.
    pub up_blocks: Vec<DecoderBlock<B>>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    fn load(
        src: &mut dyn WeightSource,
        cfg: &AutoencoderKLConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let n = boc.len();
        let top = boc[n - 1];
        let conv_in = Conv2d::load(
            src,
            "decoder.conv_in",
            [cfg.latent_channels, top, 3],
            1,
            1,
            device,
        )?;
        let mid_block = VaeMidBlock::load(
            src,
            "decoder.mid_block",
            top,
            g,
            cfg.mid_block_add_attention,
            device,
        )?;
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let prev = out_ch;
            out_ch = c;
            let resnets = load_resnets(
                src,
                &format!("decoder.up_blocks.{i}"),
                cfg.layers_per_block + 1,
                (prev, out_ch),
                g,
                device,
            )?;
            let upsampler = if i + 1 < n {
                Some(Upsample2D::load(
                    src,
                    &format!("decoder.up_blocks.{i}.upsamplers.0"),
                    out_ch,
                    device,
                )?)
            } else {
                None
            };
            up_blocks.push(DecoderBlock { resnets, upsampler });
        }
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                src,
                "decoder.conv_norm_out",
                g,
                boc[0],
                VAE_EPS,
                device,
            )?,
            conv_out: Conv2d::load(
                src,
                "decoder.conv_out",
                [boc[0], cfg.out_channels, 3],
                1,
                1,
                device,
            )?,
        })
    }

    fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z));
        for blk in &self.up_blocks {
            for r in &blk.resnets {
                x = r.forward(x, None);
            }
            if let Some(u) = &blk.upsampler {
                x = u.forward(x, None);
            }
        }
        self.conv_out
            .forward(cpu::activation::silu(self.conv_norm_out.forward(x)))
    }
}

/// The VAE of Stable Diffusion and FLUX (diffusers `AutoencoderKL`), generic over the backend.
///
/// ```no_run
/// use svgen_train::diffusion::vae::AutoencoderKL;
/// use svgen_train::burn::tensor::Tensor;
/// type B = svgen_train::CpuBackend;
/// let device = Default::default();
/// let vae = AutoencoderKL::<B>::from_pretrained("sd15/vae", &device)?;
/// let image = Tensor::<B, 4>::zeros([1, 3, 512, 512], &device); // in [-1, 1]
/// let latents = vae.encode(image).mean.mul_scalar(vae.config().scaling_factor);
/// let decoded = vae.decode(latents.div_scalar(vae.config().scaling_factor)); // ~[-1, 1]
/// # Ok::<(), svgen_train::TrainError>(())
/// ```
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    /// `encoder`.
    pub encoder: Encoder<B>,
    /// `decoder`.
    pub decoder: Decoder<B>,
    /// `quant_conv` (1×1), when `use_quant_conv`.
    pub quant_conv: Option<Conv2d<B>>,
    /// `post_quant_conv` (1×1), when `use_post_quant_conv`.
    pub post_quant_conv: Option<Conv2d<B>>,
    #[module(skip)]
    config: AutoencoderKLConfig,
}

impl<B: Backend> AutoencoderKL<B> {
    /// Loads `config.json` and `diffusion_pytorch_model.safetensors` (or its sharded index) from a
    /// diffusers `vae/` folder (older files' `query`/`key`/`value`/`proj_attn` attention names are
    /// accepted). Missing folder / file, unsupported options, missing, wrong-shaped or left-over
    /// tensors are typed errors naming the path, key or value.
    pub fn from_pretrained(vae_dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = vae_dir.as_ref();
        if !dir.is_dir() {
            return Err(missing_folder(dir));
        }
        let config = AutoencoderKLConfig::from_file(&dir.join("config.json"))?;
        let mut weights = open_diffusers_weights(dir)?.rename(diffusers_legacy_attention_key)?;
        let model = Self::load(config, &mut weights, device)?;
        weights.finish()?;
        Ok(model)
    }

    /// Builds the model from `config` with every tensor taken from `src` by diffusers key.
    pub fn load(
        config: AutoencoderKLConfig,
        src: &mut dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let l = config.latent_channels;
        let encoder = Encoder::load(src, &config, device)?;
        let decoder = Decoder::load(src, &config, device)?;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::load(
                src,
                "quant_conv",
                [2 * l, 2 * l, 1],
                1,
                0,
                device,
            )?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(Conv2d::load(
                src,
                "post_quant_conv",
                [l, l, 1],
                1,
                0,
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            config,
        })
    }

    /// The architecture this model was built from.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// [`Self::encode`] with a typed error (naming the shape) unless `image` is
    /// `[B > 0, in_channels, H > 0, W > 0]`.
    pub fn try_encode(&self, image: Tensor<B, 4>) -> Result<DiagonalGaussian<B>> {
        let [b, c, h, w] = image.dims();
        if b == 0 || c != self.config.in_channels || h == 0 || w == 0 {
            return Err(TrainError::InvalidArgument(format!(
                "VAE `image` has shape {:?}, expected [B > 0, {}, H > 0, W > 0]",
                image.dims(),
                self.config.in_channels
            )));
        }
        Ok(self.encode(image))
    }

    /// [`Self::decode`] with a typed error (naming the shape) unless `z` is
    /// `[B > 0, latent_channels, h > 0, w > 0]`.
    pub fn try_decode(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [b, c, h, w] = z.dims();
        if b == 0 || c != self.config.latent_channels || h == 0 || w == 0 {
            return Err(TrainError::InvalidArgument(format!(
                "VAE latents have shape {:?}, expected [B > 0, {}, h > 0, w > 0]",
                z.dims(),
                self.config.latent_channels
            )));
        }
        Ok(self.decode(z))
    }

    /// Encodes images `[B, 3, H, W]` in `[-1, 1]` (H, W multiples of
    /// [`AutoencoderKLConfig::downscale_factor`]) to the latent distribution (unscaled: multiply a
    /// sample by `scaling_factor` to get diffusion latents).
    pub fn encode(&self, image: Tensor<B, 4>) -> DiagonalGaussian<B> {
        let h = self.encoder.forward(image);
        let moments = match &self.quant_conv {
            Some(q) => q.forward(h),
            None => h,
        };
        let l = self.config.latent_channels;
        let mean = moments.clone().slice(s![.., 0..l, .., ..]);
        let logvar = moments.slice(s![.., l..2 * l, .., ..]).clamp(-30.0, 20.0);
        DiagonalGaussian { mean, logvar }
    }

    /// Decodes unscaled latents `[B, latent_channels, h, w]` (diffusion latents divided by
    /// `scaling_factor`) to images `[B, 3, h·f, w·f]`, roughly in `[-1, 1]` (not clamped).
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z),
            None => z,
        };
        self.decoder.forward(z)
    }
}
