//! The PEFT format: `lora_A` / `lora_B` keys (bare, `unet.`-prefixed in diffusers' files, or
//! `base_model.model.`-prefixed in PEFT adapter folders), and the adapter folder writer.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::Value;

use super::adapters::{check_savable, lora_state};
use super::config::UNetLoraConfig;
use crate::error::Result;
use crate::nn::lora::LoraLinear;
use crate::nn::peft::{write_peft_adapter, PEFT_PREFIX};

/// Prefix of keys in PEFT adapter folders.
pub const PEFT_MODEL_PREFIX: &str = PEFT_PREFIX;
/// Key suffix of the `A` (down) half.
pub(super) const DOWN_SUFFIX: &str = "lora_A.weight";
/// Key suffix of the `B` (up) half.
pub(super) const UP_SUFFIX: &str = "lora_B.weight";

/// Writes a PEFT adapter folder: `adapter_config.json` and `adapter_model.safetensors` with
/// `base_model.model.<path>.lora_A.weight` keys (what `PeftModel.save_pretrained` writes for a
/// UNet wrapped with `get_peft_model`). `base_model_name_or_path` goes into the config.
pub fn save_peft_adapter<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    cfg: &UNetLoraConfig,
    dir: impl AsRef<Path>,
    base_model_name_or_path: Option<&str>,
) -> Result<()> {
    check_savable(linears, cfg)?;
    let state = lora_state(linears, PEFT_MODEL_PREFIX, Some(cfg.scale()));
    let mut config = cfg.to_peft_json();
    config["base_model_name_or_path"] = base_model_name_or_path.map_or(Value::Null, Value::from);
    config["inference_mode"] = Value::Bool(true);
    write_peft_adapter(dir.as_ref(), &state, &config)
}
