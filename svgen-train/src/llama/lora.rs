//! LoRA for Llama: the targetable linears, the PEFT `LoraConfig`, fresh and loaded adapters,
//! PEFT adapter folders and merging.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::DType;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::error::{Result, TrainError};
use crate::llama::config::LlamaConfig;
use crate::llama::model::Llama;
use crate::llama::pretrained::linear_shapes;
use crate::nn::json::read_json;
use crate::nn::lora::{LoraAdapter, LoraLinear};
use crate::nn::peft::{
    peft_adapter_state, peft_lora_json, write_peft_adapter, PeftScaling, PEFT_PREFIX,
};
use crate::nn::tensor::{trainable_param, transpose};
use crate::weights::{read_safetensors, HostTensor};

/// The Llama linears LoRA may target (PEFT `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    /// `q_proj`.
    Q,
    /// `k_proj`.
    K,
    /// `v_proj`.
    V,
    /// `o_proj`.
    O,
    /// `gate_proj`.
    Gate,
    /// `up_proj`.
    Up,
    /// `down_proj`.
    Down,
}

impl LoraTarget {
    /// All seven targets.
    pub const ALL: [LoraTarget; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// The PEFT module name (`q_proj`, …).
    pub fn module_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// Parses a PEFT module name.
    pub fn from_module_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module_name() == name)
    }
}

/// LoRA hyper-parameters (PEFT `LoraConfig` names).
///
/// ```
/// use svgen_train::{LoraConfig, LoraTarget};
/// let cfg = LoraConfig { r: 16, lora_alpha: 32.0, ..LoraConfig::default() };
/// assert_eq!(cfg.scale(), 2.0);
/// let rs = LoraConfig { use_rslora: true, ..cfg.clone() };
/// assert_eq!(rs.scale(), 8.0);
/// assert!(cfg.target_modules.contains(&LoraTarget::Down));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `lora_dropout` (applied to the adapter input while training).
    pub lora_dropout: f64,
    /// Target modules.
    pub target_modules: BTreeSet<LoraTarget>,
    /// rsLoRA: scale `α/√r` instead of `α/r`.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            target_modules: LoraTarget::ALL.into_iter().collect(),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The scale applied to `A·B`.
    pub fn scale(&self) -> f64 {
        self.scaling().scale()
    }

    /// The fields shared with every PEFT LoRA configuration.
    fn scaling(&self) -> PeftScaling {
        PeftScaling {
            r: self.r,
            lora_alpha: self.lora_alpha,
            use_rslora: self.use_rslora,
            lora_dropout: self.lora_dropout,
        }
    }

    fn validate(&self) -> Result<()> {
        self.scaling().validate(self.target_modules.is_empty())
    }

    /// Whether the module at HF path `path` (e.g. `model.layers.3.mlp.up_proj`) is targeted.
    pub fn targets(&self, path: &str) -> bool {
        let last = path.rsplit('.').next().unwrap_or(path);
        LoraTarget::from_module_name(last).is_some_and(|t| self.target_modules.contains(&t))
    }

    /// Reads a PEFT `adapter_config.json`. Options we do not implement (DoRA, bias training,
    /// per-module ranks, `fan_in_fan_out`, regex targets) are rejected with a typed error.
    pub fn from_peft_json(v: &Value) -> Result<Self> {
        const ORIGIN: &str = "adapter_config.json";
        let scaling = PeftScaling::from_json(v, ORIGIN)?;
        let bad = |m: String| TrainError::Config(format!("{ORIGIN}: {m}"));
        let names: Vec<String> = match v.get("target_modules") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("target_modules must be strings".into()))
                })
                .collect::<Result<_>>()?,
            Some(Value::String(s)) if s == "all-linear" => LoraTarget::ALL
                .iter()
                .map(|t| t.module_name().to_string())
                .collect(),
            Some(Value::String(s)) => {
                return Err(bad(format!("regex target_modules `{s}` is not supported")))
            }
            _ => return Err(bad("missing `target_modules`".into())),
        };
        let mut target_modules = BTreeSet::new();
        for n in names {
            target_modules.insert(
                LoraTarget::from_module_name(&n)
                    .ok_or_else(|| bad(format!("unknown target module `{n}`")))?,
            );
        }
        let cfg = Self {
            r: scaling.r,
            lora_alpha: scaling.lora_alpha,
            lora_dropout: scaling.lora_dropout,
            target_modules,
            use_rslora: scaling.use_rslora,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `adapter_config.json` PEFT writes for this configuration.
    pub fn to_peft_json(&self, base_model_name_or_path: &str) -> Value {
        let targets = self.target_modules.iter().map(|t| t.module_name());
        let mut v = peft_lora_json(&self.scaling(), targets);
        v["task_type"] = json!("CAUSAL_LM");
        v["base_model_name_or_path"] = json!(base_model_name_or_path);
        v["init_lora_weights"] = json!(true);
        v["inference_mode"] = json!(true);
        v
    }
}

impl<B: Backend> Llama<B> {
    /// Adds fresh adapters (PEFT initialisation: `A` Kaiming-uniform, `B` zero, so the model's
    /// output is unchanged) to the targeted linears. `seed` makes `A` reproducible. Adapters
    /// are `f32` whatever the base dtype (see [`crate::nn::lora`]).
    pub fn with_lora(self, cfg: &LoraConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let device = self.device();
        let dtype = DType::F32; // adapters train in f32 over any base dtype
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        self.try_map_linears(|path, lin| {
            if !cfg.targets(path) {
                return Ok(lin);
            }
            let (i, o) = (lin.in_features(), lin.out_features());
            let bound = 1.0 / (i as f32).sqrt();
            // Generated in PEFT's [r, in] order, then stored [in, r].
            let a: Vec<f32> = (0..cfg.r * i)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = transpose(&a, cfg.r, i);
            Ok(LoraLinear {
                adapter: Some(LoraAdapter {
                    lora_a: trainable_param(a, [i, cfg.r], dtype, &device),
                    lora_b: trainable_param(vec![0.0; cfg.r * o], [cfg.r, o], dtype, &device),
                    scale: cfg.scale(),
                    dropout: cfg.lora_dropout,
                }),
                ..lin
            })
        })
    }

    /// Loads a PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`).
    /// Keys that match no module of the base, missing halves and wrong shapes are typed errors
    /// naming the key.
    pub fn with_peft_adapter(self, dir: impl AsRef<Path>) -> Result<(Self, LoraConfig)> {
        let dir = dir.as_ref();
        let cfg = LoraConfig::from_peft_json(&read_json(&dir.join("adapter_config.json"))?)?;
        let weights_path = dir.join("adapter_model.safetensors");
        let mut tensors = read_safetensors(&weights_path)?;
        let paths: HashMap<String, (usize, usize)> = self
            .linears()
            .into_iter()
            .map(|(p, l)| (p, (l.in_features(), l.out_features())))
            .collect();
        // Every key must name an existing linear.
        for key in tensors.keys() {
            let module = key
                .strip_prefix(PEFT_PREFIX)
                .and_then(|k| {
                    k.strip_suffix(".lora_A.weight")
                        .or_else(|| k.strip_suffix(".lora_B.weight"))
                })
                .filter(|m| paths.contains_key(*m) && cfg.targets(m));
            if module.is_none() {
                return Err(TrainError::UnexpectedAdapterKey { key: key.clone() });
            }
        }
        let device = self.device();
        let dtype = DType::F32; // adapters train in f32 over any base dtype
        let mut take = |key: String, shape: [usize; 2]| -> Result<Vec<f32>> {
            let t = tensors
                .remove(&key)
                .ok_or_else(|| TrainError::MissingTensor {
                    key: key.clone(),
                    path: weights_path.clone(),
                })?;
            if t.shape != shape {
                return Err(TrainError::ShapeMismatch {
                    key,
                    expected: shape.to_vec(),
                    found: t.shape,
                });
            }
            t.into_f32(&key)
        };
        let model = self.try_map_linears(|path, lin| {
            if !cfg.targets(path) {
                return Ok(lin);
            }
            let (i, o) = (lin.in_features(), lin.out_features());
            let a = take(format!("{PEFT_PREFIX}{path}.lora_A.weight"), [cfg.r, i])?;
            let b = take(format!("{PEFT_PREFIX}{path}.lora_B.weight"), [o, cfg.r])?;
            Ok(LoraLinear {
                adapter: Some(LoraAdapter {
                    lora_a: trainable_param(transpose(&a, cfg.r, i), [i, cfg.r], dtype, &device),
                    lora_b: trainable_param(transpose(&b, o, cfg.r), [cfg.r, o], dtype, &device),
                    scale: cfg.scale(),
                    dropout: cfg.lora_dropout,
                }),
                ..lin
            })
        })?;
        Ok((model, cfg))
    }

    /// The adapter tensors under PEFT key names and layout (`lora_A` `[r, in]`,
    /// `lora_B` `[out, r]`).
    pub fn lora_state(&self) -> BTreeMap<String, HostTensor> {
        peft_adapter_state(self.linears(), PEFT_PREFIX, None)
    }

    /// Saves the adapters in PEFT format (f32 `adapter_model.safetensors` with PEFT's
    /// `{"format": "pt"}` metadata, and `adapter_config.json`).
    pub fn save_peft_adapter(
        &self,
        dir: impl AsRef<Path>,
        cfg: &LoraConfig,
        base_model_name_or_path: &str,
    ) -> Result<()> {
        let state = self.lora_state();
        if state.is_empty() {
            return Err(TrainError::InvalidArgument(
                "the model has no LoRA adapters".into(),
            ));
        }
        write_peft_adapter(
            dir.as_ref(),
            &state,
            &cfg.to_peft_json(base_model_name_or_path),
        )
    }

    /// Folds every adapter into its base weight (`W + s·A·B`); the result has no adapters.
    pub fn merge_lora(self) -> Self {
        self.try_map_linears(|_, lin| Ok(lin.merged()))
            .unwrap_or_else(|_| unreachable!("merging cannot fail"))
    }

    /// Number of trainable (adapter) parameters.
    pub fn num_lora_params(&self) -> usize {
        self.linears()
            .iter()
            .filter_map(|(_, l)| l.adapter.as_ref())
            .map(LoraAdapter::num_params)
            .sum()
    }
}

/// The HF module paths a LoRA config targets in a model with this architecture.
pub fn target_paths(cfg: &LlamaConfig, lora: &LoraConfig) -> Vec<String> {
    let mut out = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        for (name, _) in linear_shapes(cfg) {
            let p = format!("model.layers.{l}.{name}");
            if lora.targets(&p) {
                out.push(p);
            }
        }
    }
    out
}
