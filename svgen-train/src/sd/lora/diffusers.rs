//! diffusers' files: `pytorch_lora_weights.safetensors` with the PEFT configuration in the
//! `lora_adapter_metadata` header (read and written), and the older `lora.down` / `lora.up` keys
//! and attention-processor form (read).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::Value;
use svgen_eval::hf_config::HfConfig;
use svgen_eval::weights::{write_safetensors, HostTensor, StoreDtype, Weights};

use super::adapters::{check_savable, lora_state};
use super::config::UNetLoraConfig;
use super::file::Half;
use crate::error::{Result, TrainError};
use crate::nn::lora::LoraLinear;
use crate::nn::peft::PeftScaling;

/// Prefix of UNet keys in diffusers' pipeline LoRA files.
pub const UNET_PREFIX: &str = "unet.";
/// The file diffusers' `save_lora_weights` writes.
pub const LORA_WEIGHT_NAME: &str = "pytorch_lora_weights.safetensors";
/// The safetensors metadata entry holding diffusers' PEFT configuration.
pub const LORA_METADATA_KEY: &str = "lora_adapter_metadata";
/// Key suffix of the down half in older diffusers files.
pub(super) const DOWN_SUFFIX: &str = "lora.down.weight";
/// Key suffix of the up half in older diffusers files.
pub(super) const UP_SUFFIX: &str = "lora.up.weight";

/// The module and half of a key in the attention-processor form of diffusers < 0.17
/// (`<attn>.processor.to_q_lora.down.weight`; `to_out_lora` is `to_out.0`).
pub(super) fn split_processor_key(key: &str) -> Option<(String, Half)> {
    for (suffix, half) in [
        ("_lora.down.weight", Half::Down),
        ("_lora.up.weight", Half::Up),
    ] {
        let Some(m) = key.strip_suffix(suffix) else {
            continue;
        };
        let Some((attn, proj)) = m.rsplit_once(".processor.") else {
            continue;
        };
        let proj = match proj {
            "to_q" | "to_k" | "to_v" => proj,
            "to_out" => "to_out.0",
            _ => continue,
        };
        return Some((format!("{attn}.{proj}"), half));
    }
    None
}

/// Reads the `__metadata__` map of a safetensors header (through svgen-eval's loader, which checks
/// the header but reads no tensor data).
///
/// # Errors
/// [`TrainError::Io`], [`TrainError::Safetensors`] for a malformed header.
pub fn read_safetensors_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let w = Weights::open_file(path)?;
    Ok(w.metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// The part of diffusers' `lora_adapter_metadata` for the model whose keys start with `prefix`
/// (`unet.r`, … / `text_encoder.r`, … in pipeline files); with `bare`, unprefixed keys
/// (`save_lora_adapter` files) count too.
pub(super) fn scaling_from_metadata(
    text: &str,
    path: &Path,
    prefix: &str,
    bare: bool,
) -> Result<Option<PeftScaling>> {
    let origin = format!("{} ({LORA_METADATA_KEY})", path.display());
    let v = HfConfig::parse(text, &origin)?.into_value();
    let Some(obj) = v.as_object() else {
        return Err(TrainError::json(
            path,
            format!("`{LORA_METADATA_KEY}` is not an object"),
        ));
    };
    let prefixed: serde_json::Map<String, Value> = obj
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    let cfg = if !prefixed.is_empty() {
        Value::Object(prefixed)
    } else if bare && obj.contains_key("r") {
        v.clone()
    } else {
        return Ok(None);
    };
    PeftScaling::from_json(&cfg, &origin).map(Some)
}

/// Writes `dir/pytorch_lora_weights.safetensors` as diffusers' `save_lora_weights` does (see
/// the module docs). Adapters whose scale differs from `cfg.scale()` (e.g. loaded from a kohya
/// file with per-module alphas) have the ratio folded into `lora_B`, so the file reproduces the
/// model under `cfg`. Returns the file written.
pub fn save_lora_weights<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    cfg: &UNetLoraConfig,
    dir: impl AsRef<Path>,
) -> Result<PathBuf> {
    check_savable(linears, cfg)?;
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let state = lora_state(linears, UNET_PREFIX, Some(cfg.scale()));
    let mut meta = serde_json::Map::new();
    if let Value::Object(o) = cfg.to_peft_json() {
        for (k, v) in o {
            meta.insert(format!("{UNET_PREFIX}{k}"), v);
        }
    }
    let path = dir.join(LORA_WEIGHT_NAME);
    let meta_text = serde_json::to_string_pretty(&Value::Object(meta))
        .map_err(|e| TrainError::json(&path, e))?;
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (LORA_METADATA_KEY.to_string(), meta_text),
    ]);
    write_safetensors(&path, &to_host(state), StoreDtype::F32, Some(&metadata))?;
    Ok(path)
}

/// The adapter state (in the crate's own host type, as the shared PEFT helpers return it) as
/// svgen-eval host tensors for its writer.
pub(super) fn to_host(
    state: BTreeMap<String, crate::weights::HostTensor>,
) -> BTreeMap<String, HostTensor> {
    state
        .into_iter()
        .map(|(k, t)| {
            let data = match t.data {
                crate::weights::HostData::F32(v) => svgen_eval::weights::HostData::F32(v),
                crate::weights::HostData::I64(v) => svgen_eval::weights::HostData::I64(v),
            };
            (
                k,
                HostTensor {
                    shape: t.shape,
                    data,
                },
            )
        })
        .collect()
}
