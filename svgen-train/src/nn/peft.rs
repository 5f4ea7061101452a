//! PEFT adapter I/O shared by both model families: the scaling fields of a PEFT `LoraConfig`
//! (`adapter_config.json`, diffusers' `lora_adapter_metadata` header), the dictionary written back,
//! the adapter tensors under PEFT key names and layout, and the adapter folder.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::{json, Value};
use svgen_eval::hf_config::HfConfig;

use crate::error::{Result, TrainError};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{host_f32, transpose};
use crate::weights::{write_safetensors, HostTensor, StoreDtype};

/// PEFT's prefix in front of the HF module path in adapter files.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The scaling fields of a PEFT `LoraConfig` (from `adapter_config.json` or diffusers'
/// `lora_adapter_metadata` header), whatever the model.
///
/// ```
/// use svgen_train::nn::peft::PeftScaling;
/// let v = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": true});
/// let s = PeftScaling::from_json(&v, "adapter_config.json").unwrap();
/// assert_eq!((s.r, s.scale()), (4, 4.0));
/// let dora = serde_json::json!({"r": 4, "lora_alpha": 8, "use_dora": true});
/// assert!(PeftScaling::from_json(&dora, "adapter_config.json").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeftScaling {
    /// `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `use_rslora`.
    pub use_rslora: bool,
    /// `lora_dropout` (used only when training continues).
    pub lora_dropout: f64,
}

impl PeftScaling {
    /// Reads the fields of a PEFT `LoraConfig` dictionary; options we do not implement (DoRA,
    /// bias training, per-module patterns, `fan_in_fan_out`) are typed errors. `origin` names the
    /// file in messages.
    pub fn from_json(v: &Value, origin: &str) -> Result<Self> {
        Self::from_hf(&HfConfig::from_value(v.clone(), origin)?)
    }

    /// [`PeftScaling::from_json`] on a dictionary opened with the shared reader.
    pub fn from_hf(c: &HfConfig) -> Result<Self> {
        c.choice("peft_type", (), &[("LORA", ())])?;
        c.require_false(&["use_dora", "fan_in_fan_out", "lora_bias"])?;
        c.choice("bias", (), &[("none", ())])?;
        for key in ["rank_pattern", "alpha_pattern"] {
            if c.get::<Value>(key)?
                .and_then(|p| p.as_object().map(|o| !o.is_empty()))
                == Some(true)
            {
                return Err(c
                    .unsupported(key, "per-module patterns are not supported")
                    .into());
            }
        }
        let r: usize = c.require("r")?;
        if r == 0 {
            return Err(c.invalid("r", "must be positive").into());
        }
        let lora_alpha: f64 = c.require("lora_alpha")?;
        if !lora_alpha.is_finite() {
            return Err(c.invalid("lora_alpha", "must be finite").into());
        }
        Ok(Self {
            r,
            lora_alpha,
            use_rslora: c.get_or("use_rslora", false)?,
            lora_dropout: c.get_or("lora_dropout", 0.0)?,
        })
    }

    /// `α/r` or `α/√r`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// The checks of a LoRA configuration to train or save with: a zero rank, dropout outside
    /// `[0, 1)`, a non-finite alpha or (`no_targets`) an empty target list are typed errors.
    pub(crate) fn validate(&self, no_targets: bool) -> Result<()> {
        if self.r == 0 {
            return Err(TrainError::Config("LoRA rank r must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(TrainError::Config(format!(
                "lora_dropout {} must be in [0, 1)",
                self.lora_dropout
            )));
        }
        if !self.lora_alpha.is_finite() {
            return Err(TrainError::Config(format!(
                "lora_alpha {} must be finite",
                self.lora_alpha
            )));
        }
        if no_targets {
            return Err(TrainError::Config("no LoRA target modules".into()));
        }
        Ok(())
    }
}

/// The PEFT `LoraConfig` dictionary fields common to every model we write adapters for:
/// `peft_type`, the scaling, `target_modules` and the options we do not implement, off. The
/// caller sets the model-specific ones (`task_type`, `base_model_name_or_path`,
/// `inference_mode`, `init_lora_weights`, …).
pub(crate) fn peft_lora_json<'a>(
    scaling: &PeftScaling,
    target_modules: impl IntoIterator<Item = &'a str>,
) -> Value {
    let target_modules: Vec<&str> = target_modules.into_iter().collect();
    json!({
        "peft_type": "LORA",
        "revision": null,
        "r": scaling.r,
        "lora_alpha": scaling.lora_alpha,
        "lora_dropout": scaling.lora_dropout,
        "target_modules": target_modules,
        "fan_in_fan_out": false,
        "bias": "none",
        "use_rslora": scaling.use_rslora,
        "use_dora": false,
        "lora_bias": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    })
}

/// The adapters of `linears` under PEFT key names and layout: `<prefix><path>.lora_A.weight`
/// `[r, in]` and `….lora_B.weight` `[out, r]`, f32. With `target_scale`, each `lora_B` is
/// multiplied by `adapter scale / target_scale` (so that a file whose configuration gives
/// `target_scale` reproduces every adapter; no change when the ratio is 1).
pub(crate) fn peft_adapter_state<'a, B: Backend>(
    linears: impl IntoIterator<Item = (String, &'a LoraLinear<B>)>,
    prefix: &str,
    target_scale: Option<f64>,
) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    for (path, lin) in linears {
        let Some(a) = &lin.adapter else { continue };
        let [i, r] = a.lora_a.val().dims();
        let o = a.lora_b.val().dims()[1];
        let av = host_f32(a.lora_a.val());
        let mut bv = host_f32(a.lora_b.val());
        if let Some(t) = target_scale {
            let k = a.scale / t;
            if k != 1.0 {
                bv.iter_mut().for_each(|x| *x = (*x as f64 * k) as f32);
            }
        }
        out.insert(
            format!("{prefix}{path}.lora_A.weight"),
            HostTensor::f32(vec![r, i], transpose(&av, i, r)),
        );
        out.insert(
            format!("{prefix}{path}.lora_B.weight"),
            HostTensor::f32(vec![o, r], transpose(&bv, r, o)),
        );
    }
    out
}

/// Writes a PEFT adapter folder `dir`: `adapter_model.safetensors` (`state`, f32, with
/// `{"format": "pt"}`) and `adapter_config.json` (`config`).
pub(crate) fn write_peft_adapter(
    dir: &Path,
    state: &BTreeMap<String, HostTensor>,
    config: &Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(
        dir.join("adapter_model.safetensors"),
        state,
        StoreDtype::F32,
        Some(&meta),
    )?;
    let path = dir.join("adapter_config.json");
    let text = serde_json::to_string_pretty(config).map_err(|e| TrainError::json(&path, e))?;
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
}
