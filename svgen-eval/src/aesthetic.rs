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

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use crate::error::{EvalError, Result};
use crate::weights::Weights;

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

type Raw = HashMap<String, (Vec<f32>, Vec<usize>)>;

fn read_pth(path: &Path) -> Result<Raw> {
    let bad = |m: String| EvalError::WeightFile {
        path: path.to_path_buf(),
        message: m,
    };
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, snap) in reader.tensors() {
        let data = snap
            .to_data()
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?
            .convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data
            .to_vec::<f32>()
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?;
        out.insert(name.clone(), (values, shape));
    }
    Ok(out)
}

fn read_safetensors(path: &Path) -> Result<Raw> {
    let w = Weights::from_file(path)?;
    let mut out = HashMap::new();
    let keys: Vec<String> = w.keys().map(str::to_string).collect();
    for k in keys {
        let v = w.f32_any(&k)?;
        out.insert(k, v);
    }
    Ok(out)
}

fn take<B: Backend>(
    raw: &Raw,
    prefix: &str,
    d_in: Option<usize>,
    device: &B::Device,
) -> Result<(Linear<B>, usize, usize)> {
    let wname = format!("{prefix}weight");
    let bname = format!("{prefix}bias");
    let (w, ws) = raw.get(&wname).ok_or_else(|| EvalError::MissingTensor {
        name: wname.clone(),
        expected: vec![0, d_in.unwrap_or(0)],
    })?;
    let ok = ws.len() == 2 && d_in.is_none_or(|d| ws[1] == d);
    if !ok {
        let mut expected = vec![ws.first().copied().unwrap_or(0), d_in.unwrap_or(0)];
        if ws.len() != 2 {
            expected = vec![0, d_in.unwrap_or(0)];
        }
        return Err(EvalError::ShapeMismatch {
            name: wname,
            expected,
            found: ws.clone(),
        });
    }
    let (d_out, d_in) = (ws[0], ws[1]);
    let (b, bs) = raw.get(&bname).ok_or_else(|| EvalError::MissingTensor {
        name: bname.clone(),
        expected: vec![d_out],
    })?;
    if bs.as_slice() != [d_out] {
        return Err(EvalError::ShapeMismatch {
            name: bname,
            expected: vec![d_out],
            found: bs.clone(),
        });
    }
    let mut t = vec![0f32; w.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            t[i * d_out + o] = w[o * d_in + i];
        }
    }
    let lin = Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b.clone(), [d_out]),
            device,
        ))),
    };
    Ok((lin, d_in, d_out))
}

impl<B: Backend> AestheticPredictor<B> {
    /// Loads a `.pth` / `.pt` / `.bin` PyTorch state dict or a `.safetensors` file, detecting the
    /// head from its keys.
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
        let raw = if is_st {
            read_safetensors(path)?
        } else {
            read_pth(path)?
        };
        Self::from_tensors(&raw, device)
    }

    /// Builds the head from named f32 tensors (`name -> (values, shape)`).
    pub fn from_tensors(
        raw: &HashMap<String, (Vec<f32>, Vec<usize>)>,
        device: &B::Device,
    ) -> Result<Self> {
        let kind = if raw.contains_key("layers.0.weight") {
            AestheticKind::Mlp
        } else if raw.contains_key("weight") {
            AestheticKind::Linear
        } else {
            return Err(EvalError::MissingTensor {
                name: "layers.0.weight".into(),
                expected: vec![MLP_WIDTHS[1], MLP_WIDTHS[0]],
            });
        };
        let mut layers = Vec::new();
        match kind {
            AestheticKind::Linear => {
                let (lin, _, d_out) = take(raw, "", None, device)?;
                if d_out != 1 {
                    return Err(EvalError::ShapeMismatch {
                        name: "weight".into(),
                        expected: vec![1, raw["weight"].1[1]],
                        found: raw["weight"].1.clone(),
                    });
                }
                layers.push(lin);
            }
            AestheticKind::Mlp => {
                let mut d = None;
                for i in MLP_LINEAR_INDICES {
                    let (lin, _, d_out) = take(raw, &format!("layers.{i}."), d, device)?;
                    d = Some(d_out);
                    layers.push(lin);
                }
                if d != Some(1) {
                    let s = raw["layers.7.weight"].1.clone();
                    return Err(EvalError::ShapeMismatch {
                        name: "layers.7.weight".into(),
                        expected: vec![1, s[1]],
                        found: s,
                    });
                }
            }
        }
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
