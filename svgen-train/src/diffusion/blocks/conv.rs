//! Convolutions: `torch.nn.Conv2d`, diffusers' `Downsample2D` and `Upsample2D`, and the
//! nearest-neighbour resize.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Int, Tensor, TensorData};

use super::weights::{param, WeightSource};
use crate::error::Result;

/// A 2-D convolution (`torch.nn.Conv2d`, weight `[out, in, k, k]`, bias `[out]`).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `weight`, `[out, in, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `bias`, `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride (both axes).
    pub stride: usize,
    /// Symmetric zero padding (both axes).
    pub padding: usize,
    /// diffusers' `Downsample2D` with `padding=0` pads right and bottom by one first.
    pub pad_right_bottom: bool,
}

impl<B: Backend> Conv2d<B> {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        [c_in, c_out, k]: [usize; 3],
        stride: usize,
        padding: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: param(
                src,
                &format!("{prefix}.weight"),
                [c_out, c_in, k, k],
                device,
            )?,
            bias: Some(param(src, &format!("{prefix}.bias"), [c_out], device)?),
            stride,
            padding,
            pad_right_bottom: false,
        })
    }

    /// `[B, in, H, W]` -> `[B, out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.pad_right_bottom {
            x.pad((0, 1, 0, 1), PadMode::Constant(0.0))
        } else {
            x
        };
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            ),
        )
    }
}

/// `Downsample2D` with a convolution: 3×3, stride 2.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// `padding` is diffusers' `downsample_padding`: 1 in the UNet; 0 in the VAE, where the
    /// input is padded by one on the right and bottom first.
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        channels: usize,
        padding: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let mut conv = Conv2d::load(
            src,
            &format!("{prefix}.conv"),
            [channels, channels, 3],
            2,
            padding,
            device,
        )?;
        conv.pad_right_bottom = padding == 0;
        Ok(Self { conv })
    }

    /// `[B, C, H, W]` -> `[B, C, ceil(H/2), ceil(W/2)]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour resize of `[B, C, H, W]` to `[B, C, oh, ow]` (PyTorch's `nearest`: source
/// index `floor(dst · in / out)`); the common 2× case is a broadcast copy.
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, oh: usize, ow: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    if oh == 2 * h && ow == 2 * w {
        return x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, oh, ow]);
    }
    let device = x.device();
    let index = |n_in: usize, n_out: usize| {
        let scale = n_in as f32 / n_out as f32;
        let idx: Vec<i64> = (0..n_out)
            .map(|i| ((i as f32 * scale).floor() as usize).min(n_in - 1) as i64)
            .collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n_out]), &device)
    };
    x.select(2, index(h, oh)).select(3, index(w, ow))
}

/// `Upsample2D` with a convolution: nearest 2× (or to an explicit size) then 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub(crate) fn load(
        src: &mut dyn WeightSource,
        prefix: &str,
        channels: usize,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(
                src,
                &format!("{prefix}.conv"),
                [channels, channels, 3],
                1,
                1,
                device,
            )?,
        })
    }

    /// Upsamples to `size` (the skip connection's spatial size) or 2×.
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let [oh, ow] = size.unwrap_or([2 * h, 2 * w]);
        self.conv.forward(upsample_nearest(x, oh, ow))
    }
}
