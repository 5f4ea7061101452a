//! Reading HF `model.safetensors` files into Burn tensors, with checked names and shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::{EvalError, Result};

/// An in-memory safetensors file whose tensors are looked up by their HF key.
///
/// Every accessor checks the tensor's shape against the shape the configuration implies and returns
/// [`EvalError::MissingTensor`] / [`EvalError::ShapeMismatch`] naming the key.
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    /// key -> (dtype, shape, byte range in `bytes`)
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl Weights {
    /// Reads a safetensors file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        Self::from_bytes(bytes, path)
    }

    /// Parses safetensors bytes; `origin` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, origin: impl AsRef<Path>) -> Result<Self> {
        let path = origin.as_ref().to_path_buf();
        let (header_len, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| EvalError::WeightFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let start = 8 + header_len;
        let mut index = HashMap::new();
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            index.insert(
                name.clone(),
                (info.dtype, info.shape.clone(), start + a..start + b),
            );
        }
        Ok(Weights { path, bytes, index })
    }

    /// Builds in-memory weights from named f32 tensors (`(name, values, shape)`), e.g. random
    /// weights for benchmarks or tests.
    pub fn from_f32_tensors(tensors: Vec<(String, Vec<f32>, Vec<usize>)>) -> Result<Self> {
        let origin = PathBuf::from("<memory>");
        let mut bytes_of = Vec::with_capacity(tensors.len());
        for (name, values, shape) in &tensors {
            if values.len() != shape.iter().product::<usize>() {
                return Err(EvalError::ShapeMismatch {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: vec![values.len()],
                });
            }
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            bytes_of.push(raw);
        }
        let mut views = Vec::with_capacity(tensors.len());
        for ((name, _, shape), raw) in tensors.iter().zip(&bytes_of) {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), raw)
                .map_err(|e| EvalError::WeightFile {
                    path: origin.clone(),
                    message: e.to_string(),
                })?;
            views.push((name.clone(), view));
        }
        let bytes = safetensors::serialize(views, None).map_err(|e| EvalError::WeightFile {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        Self::from_bytes(bytes, origin)
    }

    /// Puts `prefix` in front of every key (e.g. `text_model.` for a `CLIPTextModel` saved by
    /// transformers 5, which drops the prefix that transformers 4 and `CLIPModel` files carry).
    ///
    /// ```
    /// use svgen_eval::weights::Weights;
    ///
    /// let w = Weights::from_f32_tensors(vec![("a.weight".into(), vec![1.0], vec![1])])?;
    /// let w = w.with_key_prefix("text_model.");
    /// assert!(w.contains("text_model.a.weight"));
    /// # Ok::<(), svgen_eval::EvalError>(())
    /// ```
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        self.index = std::mem::take(&mut self.index)
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect();
        self
    }

    /// The file these weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All keys, unordered.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|(_, s, _)| s.as_slice())
    }

    /// Values of `name` as f32 (f16/bf16/f64 are converted), checked against `expected`.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (dtype, _, range) = self.entry(name, expected)?;
        let raw = &self.bytes[range.clone()];
        Ok(match dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect(),
            other => {
                return Err(EvalError::UnsupportedDtype {
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        })
    }

    /// Values of an integer tensor as i64 (I64 and I32 are accepted), checked against `expected`.
    pub fn i64(&self, name: &str, expected: &[usize]) -> Result<Vec<i64>> {
        let (dtype, _, range) = self.entry(name, expected)?;
        let raw = &self.bytes[range.clone()];
        Ok(match dtype {
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect(),
            Dtype::I32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            other => {
                return Err(EvalError::UnsupportedDtype {
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        })
    }

    /// The shape of `name`, or [`EvalError::MissingTensor`] when the file lacks it.
    fn existing_shape(&self, name: &str) -> Result<Vec<usize>> {
        self.shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| EvalError::MissingTensor {
                name: name.into(),
                expected: vec![],
            })
    }

    /// Values and shape of `name` as f32, whatever its shape (for reference files).
    pub fn f32_any(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let shape = self.existing_shape(name)?;
        Ok((self.f32(name, &shape)?, shape))
    }

    /// Values and shape of an integer tensor, whatever its shape (for reference files).
    pub fn i64_any(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let shape = self.existing_shape(name)?;
        Ok((self.i64(name, &shape)?, shape))
    }

    fn entry(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<&(Dtype, Vec<usize>, std::ops::Range<usize>)> {
        let e = self
            .index
            .get(name)
            .ok_or_else(|| EvalError::MissingTensor {
                name: name.into(),
                expected: expected.to_vec(),
            })?;
        // A scalar stored as [1] (or [] as [1]) is accepted.
        let same = e.1 == expected
            || (expected.iter().product::<usize>() == 1
                && e.1.iter().product::<usize>() == 1
                && expected.len() <= 1
                && e.1.len() <= 1);
        if !same {
            return Err(EvalError::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                found: e.1.clone(),
            });
        }
        Ok(e)
    }

    /// A float tensor of rank `D`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let v = self.f32(name, &expected)?;
        Ok(Tensor::from_data(TensorData::new(v, expected), device))
    }

    /// A parameter of rank `D`.
    pub fn param<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>> {
        Ok(Param::from_tensor(self.tensor(name, expected, device)?))
    }

    /// A Burn [`Linear`] from HF `{prefix}.weight` `[out, in]` (transposed to Burn's `[in, out]`) and,
    /// when `bias`, `{prefix}.bias` `[out]`.
    pub fn linear<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let name = format!("{prefix}.weight");
        let w = self.f32(&name, &[d_out, d_in])?;
        let mut t = vec![0f32; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        let weight =
            Param::from_tensor(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device));
        let bias = if bias {
            Some(self.param(&format!("{prefix}.bias"), [d_out], device)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A Burn [`Embedding`] from `{prefix}.weight` `[n, d]`.
    pub fn embedding<B: Backend>(
        &self,
        prefix: &str,
        n: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Embedding<B>> {
        Ok(Embedding {
            weight: self.param(&format!("{prefix}.weight"), [n, d], device)?,
        })
    }
}
