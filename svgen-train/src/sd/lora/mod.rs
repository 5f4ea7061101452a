//! LoRA for the Stable Diffusion UNet: attaching fresh adapters to the attention projections,
//! loading LoRA files in the three formats found in the wild, saving in diffusers' format and as a
//! PEFT adapter folder, and fusing adapters into the base weights.
//!
//! # Formats read (auto-detected)
//! | format | keys | scale |
//! |---|---|---|
//! | diffusers / PEFT | `unet.<path>.lora_A.weight` `[r, in]`, `….lora_B.weight` `[out, r]`; also bare `<path>.…` (`get_peft_model_state_dict`) and `base_model.model.<path>.…` (PEFT adapter folder) | `lora_alpha/r` (or `/√r` with rsLoRA) from `adapter_config.json` or the `lora_adapter_metadata` header; `1` without either |
//! | diffusers (older) | `unet.<path>.lora.down.weight` `[r, in]`, `….lora.up.weight` `[out, r]`; also the attention-processor form of diffusers < 0.17 (`<attn>.processor.to_q_lora.down.weight`, `to_out_lora` = `to_out.0`) | `1`, or the metadata's alpha |
//! | kohya (sd-scripts) | `lora_unet_<path with . → _>.lora_down.weight`, `.lora_up.weight`, scalar `.alpha` | `alpha/r` per module, `1` without `.alpha` |
//!
//! `<path>` is the diffusers module path, e.g.
//! `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`. Kohya names are mapped back by
//! matching them against the paths the model actually has, never by guessing which `_` was a `.`.
//!
//! Text-encoder tensors (`lora_te_…`, `text_encoder.…`) are fused into svgen-eval's CLIP text
//! model by [`load_lora_with_text_encoder`] / [`fuse_text_encoder_lora`] (`q/k/v/out_proj`,
//! `fc1`, `fc2`); loading such a file into the UNet alone is a typed error naming the first
//! text-encoder key, never a silent drop. SDXL's second text encoder and DoRA are typed errors.
//! Keys that match no module, tensors of the wrong shape and unpaired halves are typed errors
//! naming the key; the model is left unchanged then.
//!
//! # Format written
//! [`save_lora_weights`] writes `pytorch_lora_weights.safetensors` as diffusers 0.42's
//! `StableDiffusionPipeline.save_lora_weights(unet_lora_layers=get_peft_model_state_dict(unet), …)`
//! does: the same tensor names (`unet.<path>.lora_A.weight` / `lora_B.weight`), shapes and dtype
//! (f32), `{"format": "pt"}`, and the PEFT `LoraConfig` fields we support under
//! `lora_adapter_metadata` (keys prefixed `unet.`), so diffusers' `load_lora_weights`
//! reproduces the scale (checked with `tools/fixtures/check_sd_lora_load.py`). [`save_peft_adapter`] writes a PEFT adapter folder
//! (`adapter_config.json`, `adapter_model.safetensors` with `base_model.model.<path>` keys).
//!
//! ```no_run
//! use svgen_train::sd::lora::UNetLoraConfig;
//! use svgen_train::sd::unet::UNet2DConditionModel;
//! # fn main() -> svgen_train::Result<()> {
//! type B = svgen_train::CpuBackend;
//! let mut unet = UNet2DConditionModel::<B>::from_pretrained("sd15/unet", &Default::default())?;
//! let report = unet.load_lora("downloads/style_lora.safetensors")?; // any of the 3 formats
//! println!("{:?}: {} modules", report.format, report.modules.len());
//! let cfg = UNetLoraConfig { r: 8, lora_alpha: 8.0, ..UNetLoraConfig::default() };
//! unet.save_lora_weights(&cfg, "converted")?; // diffusers' pytorch_lora_weights.safetensors
//! unet.fuse_lora(); // plain UNet with W + s·B·A
//! # Ok(())
//! # }
//! ```
//!
//! The functions work on the list of `(diffusers path, &mut LoraLinear)` pairs that
//! `UNet2DConditionModel::attention_linears_mut` returns;
//! [`UNet2DConditionModel`](crate::sd::UNet2DConditionModel) has convenience methods
//! ([`add_lora`](crate::sd::UNet2DConditionModel::add_lora),
//! [`load_lora`](crate::sd::UNet2DConditionModel::load_lora), …) that call them.
//!
//! | module | contents |
//! |---|---|
//! | `config` | [`UNetLoraConfig`], [`AttnProjection`], [`LoraInit`] |
//! | `file` | [`LoraFile`]: reading, format detection, binding to module paths |
//! | `peft`, `diffusers`, `kohya` | each format's key names, and the writers of the first two |
//! | `text_encoder` | fusing text-encoder LoRA into the CLIP text model |
//! | `adapters` | attaching, loading, collecting and fusing the UNet's adapters |

mod adapters;
mod config;
mod diffusers;
mod file;
mod kohya;
mod peft;
mod text_encoder;

pub use crate::nn::peft::PeftScaling;
pub(crate) use adapters::check_savable;
pub use adapters::{add_lora, apply_lora, fuse_lora, lora_state, LoraLoadReport};
pub use config::{AttnProjection, LoraInit, UNetLoraConfig};
pub use diffusers::{
    read_safetensors_metadata, save_lora_weights, LORA_METADATA_KEY, LORA_WEIGHT_NAME, UNET_PREFIX,
};
pub use file::{LoraFile, LoraFormat, LoraModuleWeights};
pub use kohya::{KOHYA_TE_PREFIX, KOHYA_UNET_PREFIX};
pub use peft::{save_peft_adapter, PEFT_MODEL_PREFIX};
pub use text_encoder::{fuse_text_encoder_lora, load_lora_with_text_encoder, TEXT_ENCODER_PREFIX};
