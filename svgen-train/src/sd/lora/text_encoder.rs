//! Text-encoder LoRA (`lora_te_…`, `text_encoder.…`), fused into svgen-eval's CLIP text model.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use svgen_eval::clip::ClipTextModel;
use svgen_eval::ClipTextConfig;

use super::adapters::{apply_lora, LoraLoadReport};
use super::file::{LoraFile, LoraFormat};
use super::kohya::{self, KOHYA_TE_PREFIX};
use crate::error::{Result, TrainError};
use crate::nn::tensor::host_f32;
use crate::sd::unet::UNet2DConditionModel;

/// `text_encoder.` in diffusers' pipeline files.
pub const TEXT_ENCODER_PREFIX: &str = "text_encoder.";

/// Whether `key` belongs to SDXL's second text encoder (or its first, in kohya's SDXL naming).
pub(super) fn is_sdxl_text_encoder_key(key: &str) -> bool {
    ["lora_te1_", "lora_te2_", "text_encoder_2."]
        .iter()
        .any(|p| key.starts_with(p))
}

/// The error of text-encoder tensors loaded into the UNet alone.
pub(super) fn text_encoder_error(key: &str) -> TrainError {
    TrainError::UnsupportedLora {
        key: key.to_string(),
        reason: "text-encoder LoRA cannot be loaded into the UNet alone; load the file with \
                 `load_lora_with_text_encoder` (it fuses the text-encoder part into the CLIP text \
                 model)"
            .into(),
    }
}

/// The LoRA-able linears of a CLIP text model with `layers` layers, as transformers 5 names them
/// (without `text_model.`): `encoder.layers.N.self_attn.{q,k,v,out}_proj`,
/// `encoder.layers.N.mlp.fc{1,2}`.
fn text_encoder_paths(layers: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(layers * 6);
    for l in 0..layers {
        for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push(format!("encoder.layers.{l}.self_attn.{m}"));
        }
        for m in ["fc1", "fc2"] {
            out.push(format!("encoder.layers.{l}.mlp.{m}"));
        }
    }
    out
}

/// `s·(B·A)ᵀ` as `[in, out]` (our layout), from `A` `[r, in]` and `B` `[out, r]`.
fn delta_in_out(a: &[f32], b: &[f32], r: usize, i: usize, o: usize, s: f64) -> Vec<f32> {
    let mut d = vec![0f32; i * o];
    for k in 0..r {
        for (x, row) in d.chunks_mut(o).enumerate() {
            let ax = a[k * i + x] as f64 * s;
            for (y, v) in row.iter_mut().enumerate() {
                *v += (ax * b[y * r + k] as f64) as f32;
            }
        }
    }
    d
}

/// Fuses the text-encoder part of `file` into svgen-eval's CLIP text model (`W + s·B·A` on
/// `q/k/v/out_proj`, `fc1`, `fc2`; the query part of the fused `qkv_proj` also carries CLIP's
/// `1/√head_dim`, so its delta is scaled the same way). `config` is the text encoder's
/// `config.json`. Keys may name modules as transformers 4 (`text_model.encoder.…`,
/// `lora_te_text_model_encoder_…`) or 5 (`encoder.…`) did. Unknown modules and wrong shapes are
/// typed errors naming the key; nothing is changed then. Returns the number of modules fused.
pub fn fuse_text_encoder_lora<B: Backend>(
    text_encoder: &mut ClipTextModel<B>,
    config: &ClipTextConfig,
    file: &LoraFile,
) -> Result<usize> {
    let layers = text_encoder.encoder.layers.len();
    let d = config.hidden_size;
    let heads = config.num_attention_heads.max(1);
    let attn_scale = 1.0 / ((d / heads) as f64).sqrt();
    let known = text_encoder_paths(layers);
    let kohya: HashMap<String, &str> = known
        .iter()
        .map(|p| (kohya::module_name("", p), p.as_str()))
        .collect();
    let set: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    // path -> (delta [in, out])
    let mut plan: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (module, w) in &file.text_encoder_modules {
        let path = match file.format {
            LoraFormat::Kohya => module
                .strip_prefix(KOHYA_TE_PREFIX)
                .map(|m| m.strip_prefix("text_model_").unwrap_or(m))
                .and_then(|m| kohya.get(m).map(|p| p.to_string())),
            LoraFormat::Peft | LoraFormat::Diffusers => {
                let m = module.strip_prefix("text_model.").unwrap_or(module);
                set.contains(m).then(|| m.to_string())
            }
        };
        let Some(path) = path else {
            return Err(TrainError::UnexpectedAdapterKey {
                key: w.down_key.clone(),
            });
        };
        let (i, o) = if path.ends_with("fc1") {
            (d, config.intermediate_size)
        } else if path.ends_with("fc2") {
            (config.intermediate_size, d)
        } else {
            (d, d)
        };
        let (a, b, r, scale) = w.checked(i, o, file.text_encoder_scaling)?;
        if plan
            .insert(path, delta_in_out(&a, &b, r, i, o, scale))
            .is_some()
        {
            return Err(TrainError::UnsupportedLora {
                key: w.down_key.clone(),
                reason: "a second adapter for the same module".into(),
            });
        }
    }
    let n = plan.len();
    let add = |p: &mut Param<Tensor<B, 2>>, f: &dyn Fn(&mut [f32])| {
        let w = p.val();
        let dims = w.dims();
        let (device, dtype) = (w.device(), w.dtype());
        let mut v = host_f32(w);
        f(&mut v);
        let t = Tensor::from_data(TensorData::new(v, dims), (&device, dtype));
        *p = Param::from_tensor(t).set_require_grad(false);
    };
    for (path, delta) in plan {
        // "encoder.layers.{l}.{self_attn|mlp}.{name}"
        let mut parts = path.split('.');
        let l: usize = parts
            .nth(2)
            .and_then(|x| x.parse().ok())
            .unwrap_or(usize::MAX);
        let name = path.rsplit('.').next().unwrap_or_default();
        let Some(layer) = text_encoder.encoder.layers.get_mut(l) else {
            continue;
        };
        let j = match name {
            "q_proj" => Some((0, attn_scale)),
            "k_proj" => Some((1, 1.0)),
            "v_proj" => Some((2, 1.0)),
            _ => None,
        };
        match (j, name) {
            (Some((j, s)), _) => add(&mut layer.self_attn.qkv_proj.weight, &|w| {
                let n3 = 3 * d;
                for x in 0..d {
                    for y in 0..d {
                        w[x * n3 + j * d + y] += (delta[x * d + y] as f64 * s) as f32;
                    }
                }
            }),
            (None, "out_proj") => add(&mut layer.self_attn.out_proj.weight, &|w| {
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d)
            }),
            (None, "fc1") => add(&mut layer.mlp.fc1.weight, &|w| {
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d)
            }),
            (None, _) => add(&mut layer.mlp.fc2.weight, &|w| {
                w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d)
            }),
        }
    }
    Ok(n)
}

/// Loads a pipeline LoRA file holding UNet and (optionally) text-encoder tensors: the UNet part
/// as adapters (see [`apply_lora`]), the text-encoder part fused into `text_encoder` (see
/// [`fuse_text_encoder_lora`]). Everything is validated before either model changes. Returns the
/// UNet report and the number of text-encoder modules fused.
pub fn load_lora_with_text_encoder<B: Backend>(
    unet: &mut UNet2DConditionModel<B>,
    text_encoder: &mut ClipTextModel<B>,
    text_encoder_config: &ClipTextConfig,
    path: impl AsRef<Path>,
) -> Result<(LoraLoadReport, usize)> {
    let file = LoraFile::read(path)?;
    // Validate the text-encoder part on a copy (cloning a module clones tensor handles).
    let mut probe = text_encoder.clone();
    fuse_text_encoder_lora(&mut probe, text_encoder_config, &file)?;
    let unet_only = LoraFile {
        text_encoder_modules: BTreeMap::new(),
        ..file.clone()
    };
    let report = apply_lora(unet.attention_linears_mut(), &unet_only)?;
    let n = file.text_encoder_modules.len();
    *text_encoder = probe;
    Ok((report, n))
}
