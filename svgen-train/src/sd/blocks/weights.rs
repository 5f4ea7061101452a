//! Where the blocks' weights come from: a diffusers safetensors file ([`TensorMap`]) or a seeded
//! random initialisation ([`RandomWeights`]), and the loaders of parameters and linears.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::{Result, TrainError};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{frozen_param, transpose};
use crate::weights::{read_safetensors, HostTensor};

/// Where model weights come from: each tensor is asked for once, by diffusers key and shape
/// (PyTorch layout: linears `[out, in]`, convolutions `[out, in, kh, kw]`).
pub trait WeightSource {
    /// The row-major f32 data of `key`; typed errors for a missing key or a wrong shape.
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// Tensors read from a diffusers safetensors file (single, or shards listed by an index).
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    /// The file (or index) the tensors came from, for error messages.
    pub path: PathBuf,
    /// Key -> tensor; taken tensors are removed, so host memory shrinks while a model loads.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl TensorMap {
    /// Reads `{stem}.safetensors` from `dir`, or every shard named by `{stem}.safetensors.index.json`
    /// (diffusers uses the stem `diffusion_pytorch_model`).
    pub fn open(dir: &Path, stem: &str) -> Result<Self> {
        let single = dir.join(format!("{stem}.safetensors"));
        if single.is_file() {
            return Ok(Self {
                tensors: read_safetensors(&single)?,
                path: single,
            });
        }
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| TrainError::io(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| TrainError::json(&index, e))?;
            let map = v
                .get("weight_map")
                .and_then(serde_json::Value::as_object)
                .ok_or_else(|| TrainError::json(&index, "no `weight_map` object"))?;
            let mut files: Vec<&str> = Vec::new();
            for (key, f) in map {
                let f = f
                    .as_str()
                    .ok_or_else(|| TrainError::json(&index, format!("`{key}`: not a string")))?;
                if f.contains("..") || f.contains('/') || f.contains('\\') {
                    return Err(TrainError::json(
                        &index,
                        format!("shard name `{f}` must be a plain file name"),
                    ));
                }
                if !files.contains(&f) {
                    files.push(f);
                }
            }
            let mut tensors = BTreeMap::new();
            for f in files {
                tensors.extend(read_safetensors(dir.join(f))?);
            }
            for key in map.keys() {
                if !tensors.contains_key(key) {
                    return Err(TrainError::MissingTensor {
                        key: key.clone(),
                        path: index.clone(),
                    });
                }
            }
            return Ok(Self {
                path: index,
                tensors,
            });
        }
        Err(TrainError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {stem}.safetensors or {stem}.safetensors.index.json"),
            ),
        ))
    }
}

impl TensorMap {
    /// Renames the VAE attention keys of older diffusers checkpoints (`query`, `key`, `value`,
    /// `proj_attn`) to the current names (`to_q`, `to_k`, `to_v`, `to_out.0`), as diffusers does
    /// when it loads them.
    pub fn rename_legacy_attention(&mut self) {
        const RENAMES: [(&str, &str); 4] = [
            (".query.", ".to_q."),
            (".key.", ".to_k."),
            (".value.", ".to_v."),
            (".proj_attn.", ".to_out.0."),
        ];
        let legacy: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.contains(".attentions.") && RENAMES.iter().any(|(o, _)| k.contains(o)))
            .cloned()
            .collect();
        for key in legacy {
            if let Some(t) = self.tensors.remove(&key) {
                let mut new = key.clone();
                for (o, n) in RENAMES {
                    new = new.replace(o, n);
                }
                self.tensors.insert(new, t);
            }
        }
    }

    /// After a model has taken its tensors: a typed error naming the first tensor left over
    /// (the file holds parts the configuration does not describe).
    pub fn finish(self) -> Result<()> {
        match self.tensors.into_keys().next() {
            Some(key) => Err(TrainError::UnexpectedTensor {
                key,
                path: self.path,
            }),
            None => Ok(()),
        }
    }
}

impl WeightSource for TensorMap {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .tensors
            .remove(key)
            .ok_or_else(|| TrainError::MissingTensor {
                key: key.into(),
                path: self.path.clone(),
            })?;
        if t.shape != shape {
            return Err(TrainError::ShapeMismatch {
                key: key.into(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        t.into_f32(key)
    }
}

/// Seeded random weights: norm scales 1, biases 0, other tensors uniform with standard deviation
/// `1/sqrt(fan_in)` (activations stay O(1) through the network). For benchmarks and tests at
/// configurations that have no checkpoint; never for generation.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    rng: rand::rngs::StdRng,
}

impl RandomWeights {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }
}

impl WeightSource for RandomWeights {
    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        if shape.len() == 1 {
            let is_scale = key.ends_with(".weight") && key.contains("norm");
            return Ok(vec![if is_scale { 1.0 } else { 0.0 }; n]);
        }
        let fan_in: usize = shape[1..].iter().product();
        let a = (3.0 / fan_in.max(1) as f32).sqrt();
        Ok((0..n).map(|_| self.rng.random_range(-a..a)).collect())
    }
}

pub(crate) fn param<B: Backend, const D: usize>(
    src: &mut dyn WeightSource,
    key: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>> {
    let data = src.take(key, &shape)?;
    Ok(frozen_param(data, shape, DType::F32, device))
}

/// A linear `{prefix}.weight` `[out, in]` (stored `[in, out]`) with optional `{prefix}.bias`.
pub(crate) fn load_lora_linear<B: Backend>(
    src: &mut dyn WeightSource,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Result<LoraLinear<B>> {
    let w = src.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
    let weight = frozen_param(
        transpose(&w, d_out, d_in),
        [d_in, d_out],
        DType::F32,
        device,
    );
    Ok(if bias {
        LoraLinear::with_bias(
            weight,
            param(src, &format!("{prefix}.bias"), [d_out], device)?,
        )
    } else {
        LoraLinear::new(weight)
    })
}

/// A Burn `Linear` from `{prefix}.weight` `[out, in]` and `{prefix}.bias`. With `conv1x1`, the
/// file holds a 1×1 convolution `[out, in, 1, 1]` (same numbers, applied on channels-last data).
pub(crate) fn load_linear<B: Backend>(
    src: &mut dyn WeightSource,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    conv1x1: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    let key = format!("{prefix}.weight");
    let w = if conv1x1 {
        src.take(&key, &[d_out, d_in, 1, 1])?
    } else {
        src.take(&key, &[d_out, d_in])?
    };
    Ok(Linear {
        weight: frozen_param(
            transpose(&w, d_out, d_in),
            [d_in, d_out],
            DType::F32,
            device,
        ),
        bias: Some(param(src, &format!("{prefix}.bias"), [d_out], device)?),
    })
}

/// Applies a Burn `Linear` to `[B, N, in]` as one 2-D GEMM.
pub(crate) fn linear3<B: Backend>(lin: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, c] = x.dims();
    let y = lin.forward(x.reshape([b * n, c]));
    let o = y.dims()[1];
    y.reshape([b, n, o])
}
