//! The LAION aesthetic predictors over CLIP ViT-L/14 image embeddings.
//!
//! - **improved-aesthetic-predictor** (`sac+logos+ava1-l14-linearMSE.pth`): a stack of five
//!   `Linear` layers 768→1024→128→64→16→1 with `Dropout(0.2)`, `Dropout(0.2)`, `Dropout(0.1)` between
//!   the first four and no activation; in the PyTorch state dict the linears are
//!   `layers.{0,2,4,6,7}.{weight,bias}` (the dropouts take indices 1, 3, 5). Dropout is the identity at
//!   inference, so the head is the composition of the five affine maps.
//! - **v1 linear head** (`sa_0_4_vit_l_14_linear.pth`): one `Linear` 768→1 with keys `weight`, `bias`.
//!
//! Both take the L2-normalised image embedding (`visual_projection` output). Files may be PyTorch
//! pickles (`.pth`, read with burn-store's `PytorchReader`) or safetensors with the same keys. The
//! widths are read from the file and checked for consistency, so smaller/larger variants load too.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::nn::Linear;
use burn::prelude::*;

use crate::error::{EvalError, Result};
use crate::weights::{HostTensor, WeightError, Weights};

/// Indices of the linear layers of the improved predictor inside its `nn.Sequential`.
pub const MLP_LINEAR_INDICES: [usize; 5] = [0, 2, 4, 6, 7];
/// Widths of the original improved predictor.
pub const MLP_WIDTHS: [usize; 6] = [768, 1024, 128, 64, 16, 1];

/// Which head a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AestheticKind {
    /// improved-aesthetic-predictor MLP (`layers.{0,2,4,6,7}`).
    Mlp,
    /// v1 linear head (`weight`, `bias`).
    Linear,
}

/// A LAION aesthetic head.
///
/// ```
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/aesthetic/mlp.pth");
/// use burn::backend::Flex;
/// use svgen_eval::AestheticPredictor;
/// let head = AestheticPredictor::<Flex>::from_file(path, &Default::default())?;
/// assert_eq!(head.input_dim(), 12); // the fixture is a small random head
/// # Ok::<(), svgen_eval::EvalError>(())
/// ```
#[derive(Module, Debug)]
pub struct AestheticPredictor<B: Backend> {
    /// The affine maps, in order (Burn layout `[in, out]`).
    pub layers: Vec<Linear<B>>,
}

/// The tensors of a PyTorch state dict, via burn-store's pickle reader.
fn read_pth(path: &Path) -> Result<Weights> {
    let bad = |m: String| WeightError::Pytorch {
        path: path.to_path_buf(),
        message: m,
    };
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, snap) in reader.tensors() {
        let data = snap
            .to_data()
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?
            .convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?;
        out.insert(name.clone(), HostTensor::f32(shape, values));
    }
    Ok(Weights::from_tensors(&out, path)?)
}

/// The affine map `{prefix}weight` `[out, in]` / `{prefix}bias` `[out]`, its input width checked
/// against `d_in` (the previous layer's output) and its output width read from the file.
fn head_linear<B: Backend>(
    w: &Weights,
    prefix: &str,
    d_in: Option<usize>,
    device: &B::Device,
) -> Result<(Linear<B>, usize)> {
    let key = format!("{prefix}weight");
    let unknown = vec![0, d_in.unwrap_or(0)];
    let Some(shape) = w.shape(&key) else {
        return Err(EvalError::MissingTensor {
            name: key,
            expected: unknown,
        });
    };
    let &[d_out, file_in] = shape else {
        return Err(EvalError::ShapeMismatch {
            name: key,
            expected: unknown,
            found: shape.to_vec(),
        });
    };
    let lin = w.linear(
        prefix.trim_end_matches('.'),
        d_in.unwrap_or(file_in),
        d_out,
        true,
        device,
    )?;
    Ok((lin, d_out))
}

impl<B: Backend> AestheticPredictor<B> {
    /// Loads a `.pth` / `.pt` / `.bin` PyTorch state dict or a `.safetensors` file, detecting the
    /// head from its keys. Every tensor of the file must belong to the head.
    pub fn from_file(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(EvalError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let is_st = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        let w = if is_st {
            Weights::open_file(path)?
        } else {
            read_pth(path)?
        };
        Self::from_weights(&w, device)
    }

    /// Builds the head from named f32 tensors (`name -> (values, shape)`).
    pub fn from_tensors(
        raw: &HashMap<String, (Vec<f32>, Vec<usize>)>,
        device: &B::Device,
    ) -> Result<Self> {
        let tensors = raw
            .iter()
            .map(|(k, (v, s))| (k.clone(), v.clone(), s.clone()))
            .collect();
        Self::from_weights(&Weights::from_f32_tensors(tensors)?, device)
    }

    /// Builds the head from a checkpoint holding exactly its tensors.
    pub fn from_weights(w: &Weights, device: &B::Device) -> Result<Self> {
        let kind = if w.contains("layers.0.weight") {
            AestheticKind::Mlp
        } else if w.contains("weight") {
            AestheticKind::Linear
        } else {
            return Err(EvalError::MissingTensor {
                name: "layers.0.weight".into(),
                expected: vec![MLP_WIDTHS[1], MLP_WIDTHS[0]],
            });
        };
        let prefixes: Vec<String> = match kind {
            AestheticKind::Linear => vec![String::new()],
            AestheticKind::Mlp => MLP_LINEAR_INDICES
                .iter()
                .map(|i| format!("layers.{i}."))
                .collect(),
        };
        let mut layers = Vec::new();
        let mut d = None;
        for prefix in &prefixes {
            let (lin, d_out) = head_linear(w, prefix, d, device)?;
            d = Some(d_out);
            layers.push(lin);
        }
        if d != Some(1) {
            let key = format!("{}weight", prefixes.last().map_or("", String::as_str));
            let found = w.shape(&key).unwrap_or_default().to_vec();
            return Err(EvalError::ShapeMismatch {
                name: key,
                expected: vec![1, found.get(1).copied().unwrap_or(0)],
                found,
            });
        }
        w.finish()?;
        Ok(AestheticPredictor { layers })
    }

    /// Which head this is.
    pub fn kind(&self) -> AestheticKind {
        if self.layers.len() == 1 {
            AestheticKind::Linear
        } else {
            AestheticKind::Mlp
        }
    }

    /// Width of the embedding the head expects (768 for ViT-L/14).
    pub fn input_dim(&self) -> usize {
        self.layers.first().map(|l| l.weight.dims()[0]).unwrap_or(0)
    }

    /// Raw head output `[B]` for already-normalised embeddings `[B, D]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        let [b, d] = x.dims();
        if d != self.input_dim() {
            return Err(EvalError::InvalidInput {
                name: "image_embeds".into(),
                expected: format!("[B, {}]", self.input_dim()),
                found: format!("[{b}, {d}]"),
            });
        }
        let mut x = x;
        for l in &self.layers {
            x = l.forward(x);
        }
        Ok(x.reshape([b]))
    }

    /// Aesthetic scores `[B]` of (not necessarily normalised) CLIP image embeddings: the embeddings are
    /// L2-normalised first, as LAION's scripts do.
    pub fn score(&self, image_embeds: Tensor<B, 2>) -> Result<Tensor<B, 1>> {
        let n = image_embeds.clone().powi_scalar(2).sum_dim(1).sqrt();
        self.forward(image_embeds / n)
    }
}
