//! kohya sd-scripts' format (also A1111, ComfyUI): `lora_unet_<path with . → _>` and
//! `lora_te_…` module names, `lora_down` / `lora_up` halves and a scalar `.alpha` per module.

use svgen_eval::weights::HostTensor;

use crate::error::{Result, TrainError};

/// Prefix of UNet keys in kohya files.
pub const KOHYA_UNET_PREFIX: &str = "lora_unet_";
/// Prefix of text-encoder keys in kohya files.
pub const KOHYA_TE_PREFIX: &str = "lora_te_";
/// Key suffix of the down half.
pub(super) const DOWN_SUFFIX: &str = "lora_down.weight";
/// Key suffix of the up half.
pub(super) const UP_SUFFIX: &str = "lora_up.weight";

/// The kohya module name of a diffusers (or transformers) module path: `prefix` followed by the
/// path with `.` replaced by `_`. Files are bound by matching these names against the paths the
/// model has, never by guessing which `_` was a `.`.
pub(super) fn module_name(prefix: &str, path: &str) -> String {
    format!("{prefix}{}", path.replace('.', "_"))
}

/// The value of a kohya `.alpha` tensor (a finite scalar; `key` names it in errors).
pub(super) fn alpha(key: &str, t: HostTensor) -> Result<f64> {
    if t.shape.iter().product::<usize>() != 1 {
        return Err(TrainError::ShapeMismatch {
            key: key.to_string(),
            expected: vec![],
            found: t.shape,
        });
    }
    // Float alphas (any precision) or integer ones.
    let v = if t.dtype().is_float() {
        t.into_f32(key)?.first().map(|&x| f64::from(x))
    } else {
        t.into_i64(key)?.first().map(|&x| x as f64)
    };
    v.filter(|a| a.is_finite())
        .ok_or_else(|| TrainError::UnsupportedLora {
            key: key.to_string(),
            reason: "alpha is not a finite number".into(),
        })
}
