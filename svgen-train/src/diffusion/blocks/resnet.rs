//! diffusers' `ResnetBlock2D`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::conv::Conv2d;
use super::norm::GroupNorm;
use super::weights::{load_linear, WeightSource};
use crate::cpu;
use crate::error::Result;

/// `ResnetBlock2D` (`resnet_time_scale_shift = "default"`, SiLU):
/// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb)))))) / scale`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// `norm1`.
    pub norm1: GroupNorm<B>,
    /// `conv1` (3×3).
    pub conv1: Conv2d<B>,
    /// `time_emb_proj` (absent in the VAE).
    pub time_emb_proj: Option<Linear<B>>,
    /// `norm2`.
    pub norm2: GroupNorm<B>,
    /// `conv2` (3×3).
    pub conv2: Conv2d<B>,
    /// `conv_shortcut` (1×1) when the channel count changes.
    pub conv_shortcut: Option<Conv2d<B>>,
    /// `output_scale_factor`.
    pub output_scale_factor: f64,
}

/// Shape parameters of one [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub temb: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        spec: ResnetSpec,
        device: &B::Device,
    ) -> Result<Self> {
        let ResnetSpec {
            c_in,
            c_out,
            temb,
            groups,
            eps,
            output_scale_factor,
        } = spec;
        let p = |n: &str| format!("{prefix}.{n}");
        Ok(Self {
            norm1: GroupNorm::load(src, &p("norm1"), groups, c_in, eps, device)?,
            conv1: Conv2d::load(src, &p("conv1"), [c_in, c_out, 3], 1, 1, device)?,
            time_emb_proj: match temb {
                Some(t) => Some(load_linear(
                    src,
                    &p("time_emb_proj"),
                    t,
                    c_out,
                    false,
                    device,
                )?),
                None => None,
            },
            norm2: GroupNorm::load(src, &p("norm2"), groups, c_out, eps, device)?,
            conv2: Conv2d::load(src, &p("conv2"), [c_out, c_out, 3], 1, 1, device)?,
            conv_shortcut: if c_in != c_out {
                Some(Conv2d::load(
                    src,
                    &p("conv_shortcut"),
                    [c_in, c_out, 1],
                    1,
                    0,
                    device,
                )?)
            } else {
                None
            },
            output_scale_factor,
        })
    }

    /// `x` `[B, C_in, H, W]`, `temb` `[B, T]` (already `silu`-activated by the caller, as the
    /// block applies `silu` before `time_emb_proj` and the UNet shares that activation).
    pub fn forward(&self, x: Tensor<B, 4>, temb_act: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let h = self
            .conv1
            .forward(cpu::activation::silu(self.norm1.forward(x.clone())));
        let h = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(t)) => {
                let t = proj.forward(t.clone());
                let [b, c] = t.dims();
                h + t.reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = self
            .conv2
            .forward(cpu::activation::silu(self.norm2.forward(h)));
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        let out = x + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}
