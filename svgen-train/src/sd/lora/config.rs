//! The UNet's LoRA configuration: which attention projections get adapters, and how they are
//! scaled and initialised (PEFT `LoraConfig` names).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::error::Result;
use crate::nn::peft::{peft_lora_json, PeftScaling};

/// The attention projections LoRA may target (diffusers `Attention` module names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttnProjection {
    /// `to_q`.
    ToQ,
    /// `to_k`.
    ToK,
    /// `to_v`.
    ToV,
    /// `to_out.0` (the output linear; `to_out.1` is dropout).
    ToOut0,
}

impl AttnProjection {
    /// All four, in PEFT's usual order.
    pub const ALL: [AttnProjection; 4] = [Self::ToQ, Self::ToK, Self::ToV, Self::ToOut0];

    /// The PEFT `target_modules` name.
    pub fn module_name(self) -> &'static str {
        match self {
            Self::ToQ => "to_q",
            Self::ToK => "to_k",
            Self::ToV => "to_v",
            Self::ToOut0 => "to_out.0",
        }
    }

    /// Parses a PEFT `target_modules` name.
    pub fn from_module_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module_name() == name)
    }

    /// The projection a diffusers module path ends with.
    ///
    /// ```
    /// use svgen_train::sd::lora::AttnProjection;
    /// let p = "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0";
    /// assert_eq!(AttnProjection::of_path(p), Some(AttnProjection::ToOut0));
    /// assert_eq!(AttnProjection::of_path("conv_in"), None);
    /// ```
    pub fn of_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| path.ends_with(&format!(".{}", t.module_name())) || path == t.module_name())
    }
}

/// How fresh adapters are initialised (PEFT `init_lora_weights`). `B` is zero in both, so the
/// model's output is unchanged until training moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraInit {
    /// PEFT's default (`true`): `A` Kaiming-uniform (bound `1/√in`).
    #[default]
    KaimingUniform,
    /// PEFT's `"gaussian"`: `A ~ N(0, 1/r²)`.
    Gaussian,
}

/// LoRA hyper-parameters for the UNet (PEFT `LoraConfig` names).
///
/// ```
/// use svgen_train::sd::lora::UNetLoraConfig;
/// let cfg = UNetLoraConfig { r: 4, lora_alpha: 8.0, ..UNetLoraConfig::default() };
/// assert_eq!(cfg.scale(), 2.0);
/// assert!(cfg.targets("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0"));
/// let cross_only = UNetLoraConfig { module_filter: vec!["attn2".into()], ..cfg };
/// assert!(!cross_only.targets("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLoraConfig {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `lora_dropout` on the adapter input while training.
    pub lora_dropout: f64,
    /// rsLoRA: scale `α/√r` instead of `α/r`.
    pub use_rslora: bool,
    /// The projections to adapt.
    pub target_modules: BTreeSet<AttnProjection>,
    /// Only paths containing at least one of these substrings (e.g. `"attn2"`, `"up_blocks"`);
    /// empty: every path.
    pub module_filter: Vec<String>,
    /// Initialisation of fresh adapters.
    pub init: LoraInit,
}

impl Default for UNetLoraConfig {
    fn default() -> Self {
        Self {
            r: 4,
            lora_alpha: 4.0,
            lora_dropout: 0.0,
            use_rslora: false,
            target_modules: AttnProjection::ALL.into_iter().collect(),
            module_filter: Vec::new(),
            init: LoraInit::KaimingUniform,
        }
    }
}

impl UNetLoraConfig {
    /// The scale applied to `A·B`.
    pub fn scale(&self) -> f64 {
        self.scaling().scale()
    }

    /// Rejects a zero rank, dropout outside `[0, 1)`, a non-finite alpha or no targets.
    pub fn validate(&self) -> Result<()> {
        self.scaling().validate(self.target_modules.is_empty())
    }

    /// The PEFT scaling fields of this configuration.
    fn scaling(&self) -> PeftScaling {
        PeftScaling {
            r: self.r,
            lora_alpha: self.lora_alpha,
            use_rslora: self.use_rslora,
            lora_dropout: self.lora_dropout,
        }
    }

    /// Whether the module at diffusers path `path` gets an adapter.
    pub fn targets(&self, path: &str) -> bool {
        AttnProjection::of_path(path).is_some_and(|t| self.target_modules.contains(&t))
            && (self.module_filter.is_empty()
                || self.module_filter.iter().any(|f| path.contains(f.as_str())))
    }

    /// The PEFT `LoraConfig` dictionary (what `peft_config["default"].to_dict()` gives for the
    /// settings we support), used for `adapter_config.json` and diffusers' metadata header.
    pub fn to_peft_json(&self) -> Value {
        let targets = self.target_modules.iter().map(|t| t.module_name());
        let mut v = peft_lora_json(&self.scaling(), targets);
        v["task_type"] = Value::Null;
        v["base_model_name_or_path"] = Value::Null;
        v["inference_mode"] = json!(false);
        v["exclude_modules"] = Value::Null;
        v["init_lora_weights"] = match self.init {
            LoraInit::KaimingUniform => json!(true),
            LoraInit::Gaussian => json!("gaussian"),
        };
        v
    }
}
