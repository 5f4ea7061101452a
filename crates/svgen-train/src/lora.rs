//! LoRA adapters: the low-rank linear, PEFT-format save/load and merging.
//!
//! A [`LoraLinear`] computes `x·W + s·dropout(x)·A·B` (with `s = α/r`, or `α/√r` for rsLoRA)
//! without ever forming `W + A·B`. Weights are held `[in, out]`; PEFT files hold
//! `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]`, transposed at the boundary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::error::{Result, TrainError};
use crate::llama::{linear_shapes, transpose, Llama};
use crate::weights::{read_safetensors, write_safetensors, HostTensor, StoreDtype};

/// PEFT's prefix in front of the HF module path in adapter files.
pub const PEFT_PREFIX: &str = "base_model.model.";

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
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(TrainError::Config("LoRA rank r must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(TrainError::Config(format!(
                "lora_dropout {} must be in [0, 1)",
                self.lora_dropout
            )));
        }
        if self.target_modules.is_empty() {
            return Err(TrainError::Config("no LoRA target modules".into()));
        }
        Ok(())
    }

    /// Whether the module at HF path `path` (e.g. `model.layers.3.mlp.up_proj`) is targeted.
    pub fn targets(&self, path: &str) -> bool {
        let last = path.rsplit('.').next().unwrap_or(path);
        LoraTarget::from_module_name(last).is_some_and(|t| self.target_modules.contains(&t))
    }

    /// Reads a PEFT `adapter_config.json`. Options we do not implement (DoRA, bias training,
    /// per-module ranks, `fan_in_fan_out`, regex targets) are rejected with a typed error.
    pub fn from_peft_json(v: &Value) -> Result<Self> {
        let bad = |m: String| TrainError::Config(format!("adapter_config.json: {m}"));
        if let Some(t) = v.get("peft_type").and_then(Value::as_str) {
            if t != "LORA" {
                return Err(bad(format!("peft_type `{t}` is not LORA")));
            }
        }
        if v.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return Err(bad("DoRA is not supported".into()));
        }
        if v.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            return Err(bad("fan_in_fan_out is not supported".into()));
        }
        if let Some(b) = v.get("bias").and_then(Value::as_str) {
            if b != "none" {
                return Err(bad(format!("bias `{b}` is not supported")));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if v.get(key)
                .and_then(Value::as_object)
                .is_some_and(|o| !o.is_empty())
            {
                return Err(bad(format!("`{key}` is not supported")));
            }
        }
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("missing `r`".into()))? as usize;
        let lora_alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("missing `lora_alpha`".into()))?;
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
            r,
            lora_alpha,
            lora_dropout: v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            target_modules,
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `adapter_config.json` PEFT writes for this configuration.
    pub fn to_peft_json(&self, base_model_name_or_path: &str) -> Value {
        let targets: Vec<&str> = self
            .target_modules
            .iter()
            .map(|t| t.module_name())
            .collect();
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": targets,
            "bias": "none",
            "use_rslora": self.use_rslora,
            "use_dora": false,
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "revision": null,
            "lora_bias": false,
        })
    }
}

/// The trainable low-rank pair of a [`LoraLinear`].
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `lora_A`, stored `[in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `lora_B`, stored `[r, out]`.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `α/r` or `α/√r`.
    pub scale: f64,
    /// `lora_dropout` on the adapter input (active only on autodiff backends).
    pub dropout: f64,
}

/// A linear layer (bias optional) with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// Base weight, stored `[in, out]` (HF `weight` transposed); frozen.
    pub weight: Param<Tensor<B, 2>>,
    /// Base bias `[out]` (e.g. diffusers' `to_out.0`); `None` for bias-free layers; frozen.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The adapter, if this module is targeted.
    pub adapter: Option<LoraAdapter<B>>,
}

impl<B: Backend> LoraLinear<B> {
    /// A plain bias-free linear from a `[in, out]` weight.
    pub fn new(weight: Param<Tensor<B, 2>>) -> Self {
        Self {
            weight,
            bias: None,
            adapter: None,
        }
    }

    /// A plain linear from a `[in, out]` weight and an `[out]` bias.
    pub fn with_bias(weight: Param<Tensor<B, 2>>, bias: Param<Tensor<B, 1>>) -> Self {
        Self {
            weight,
            bias: Some(bias),
            adapter: None,
        }
    }

    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.weight.val().dims()[0]
    }

    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.weight.val().dims()[1]
    }

    /// `x·W + s·dropout(x)·A·B` on `[batch, seq, in]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let x = x.reshape([b * t, i]);
        let mut y = x.clone().matmul(self.weight.val());
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze_dim(0);
        }
        if let Some(a) = &self.adapter {
            let low = lora_dropout(x, a.dropout)
                .matmul(a.lora_a.val())
                .matmul(a.lora_b.val());
            y = y + low.mul_scalar(a.scale);
        }
        let o = y.dims()[1];
        y.reshape([b, t, o])
    }

    /// `W + s·A·B` as a plain linear (the adapter is folded in).
    pub fn merged(self) -> Self {
        match self.adapter {
            None => self,
            Some(a) => {
                let delta = a.lora_a.val().matmul(a.lora_b.val()).mul_scalar(a.scale);
                let w = (self.weight.val() + delta).detach();
                Self {
                    weight: Param::from_tensor(w).set_require_grad(false),
                    bias: self.bias,
                    adapter: None,
                }
            }
        }
    }
}

thread_local! {
    static DROPOUT_RNG: std::cell::RefCell<rand::rngs::StdRng> =
        std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(0));
}

/// Seeds this thread's LoRA dropout masks. The trainer calls it before every micro-batch
/// with a value derived from the data position, so an interrupted and resumed run draws the
/// same masks (the backend's global RNG is shared between threads and not resumable).
pub fn seed_lora_dropout(seed: u64) {
    DROPOUT_RNG.with(|r| *r.borrow_mut() = rand::rngs::StdRng::seed_from_u64(seed));
}

/// Inverted dropout with a host-drawn mask; identity outside autodiff or when `p == 0`.
fn lora_dropout<B: Backend>(x: Tensor<B, 2>, p: f64) -> Tensor<B, 2> {
    if p <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let [n, d] = x.dims();
    let keep = 1.0 - p;
    let mask: Vec<f32> = DROPOUT_RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..n * d)
            .map(|_| {
                if r.random::<f64>() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect()
    });
    let m = Tensor::<B, 2>::from_data(TensorData::new(mask, [n, d]), (&x.device(), x.dtype()));
    x * m
}

pub(crate) fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    let data = t.into_data();
    let data = if data.dtype != DType::F32 {
        data.convert::<f32>()
    } else {
        data
    };
    // Conversion to f32 above makes this infallible for float tensors.
    data.into_vec::<f32>().unwrap_or_default()
}

fn trainable<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(data, shape),
        (device, dtype),
    ))
}

impl<B: Backend> Llama<B> {
    /// Adds fresh adapters (PEFT initialisation: `A` Kaiming-uniform, `B` zero, so the model's
    /// output is unchanged) to the targeted linears. `seed` makes `A` reproducible.
    pub fn with_lora(self, cfg: &LoraConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let device = self.device();
        let dtype = self.dtype();
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
                    lora_a: trainable(a, [i, cfg.r], dtype, &device),
                    lora_b: trainable(vec![0.0; cfg.r * o], [cfg.r, o], dtype, &device),
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
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| TrainError::json(&cfg_path, e))?;
        let cfg = LoraConfig::from_peft_json(&v)?;
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
        let dtype = self.dtype();
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
                    lora_a: trainable(transpose(&a, cfg.r, i), [i, cfg.r], dtype, &device),
                    lora_b: trainable(transpose(&b, o, cfg.r), [cfg.r, o], dtype, &device),
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
        let mut out = BTreeMap::new();
        for (path, lin) in self.linears() {
            if let Some(a) = &lin.adapter {
                let [i, r] = a.lora_a.val().dims();
                let o = a.lora_b.val().dims()[1];
                let av = host_f32(a.lora_a.val());
                let bv = host_f32(a.lora_b.val());
                out.insert(
                    format!("{PEFT_PREFIX}{path}.lora_A.weight"),
                    HostTensor::f32(vec![r, i], transpose(&av, i, r)),
                );
                out.insert(
                    format!("{PEFT_PREFIX}{path}.lora_B.weight"),
                    HostTensor::f32(vec![o, r], transpose(&bv, r, o)),
                );
            }
        }
        out
    }

    /// Saves the adapters in PEFT format (f32 `adapter_model.safetensors` with PEFT's
    /// `{"format": "pt"}` metadata, and `adapter_config.json`).
    pub fn save_peft_adapter(
        &self,
        dir: impl AsRef<Path>,
        cfg: &LoraConfig,
        base_model_name_or_path: &str,
    ) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let state = self.lora_state();
        if state.is_empty() {
            return Err(TrainError::InvalidArgument(
                "the model has no LoRA adapters".into(),
            ));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(
            dir.join("adapter_model.safetensors"),
            &state,
            StoreDtype::F32,
            Some(meta),
        )?;
        let path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&cfg.to_peft_json(base_model_name_or_path))
            .map_err(|e| TrainError::json(&path, e))?;
        std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
    }

    /// Folds every adapter into its base weight (`W + s·A·B`); the result has no adapters.
    pub fn merge_lora(self) -> Self {
        self.try_map_linears(|_, lin| Ok(lin.merged()))
            .unwrap_or_else(|_| unreachable!("merging cannot fail"))
    }

    /// All weights under HF names and layout (`[out, in]` linears).
    pub fn hf_state(&self) -> BTreeMap<String, HostTensor> {
        let cfg = self.config();
        let mut out = BTreeMap::new();
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        out.insert(
            "model.embed_tokens.weight".into(),
            HostTensor::f32(vec![v, h], host_f32(self.embed_tokens.val())),
        );
        if let Some(w) = &self.lm_head {
            let vocab = w.val().dims()[1];
            out.insert(
                "lm_head.weight".into(),
                HostTensor::f32(vec![vocab, h], transpose(&host_f32(w.val()), h, vocab)),
            );
        }
        out.insert(
            "model.norm.weight".into(),
            HostTensor::f32(vec![h], host_f32(self.norm.weight.val())),
        );
        for (l, layer) in self.layers.iter().enumerate() {
            for (name, norm) in [
                ("input_layernorm", &layer.input_layernorm),
                ("post_attention_layernorm", &layer.post_attention_layernorm),
            ] {
                out.insert(
                    format!("model.layers.{l}.{name}.weight"),
                    HostTensor::f32(vec![h], host_f32(norm.weight.val())),
                );
            }
        }
        for (path, lin) in self.linears() {
            let (i, o) = (lin.in_features(), lin.out_features());
            out.insert(
                format!("{path}.weight"),
                HostTensor::f32(vec![o, i], transpose(&host_f32(lin.weight.val()), i, o)),
            );
        }
        out
    }

    /// Writes a standalone HF checkpoint (`config.json` + `model.safetensors`). Adapters are
    /// merged first, so the folder loads in transformers without PEFT.
    pub fn save_pretrained(self, dir: impl AsRef<Path>, dtype: StoreDtype) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let merged = self.merge_lora();
        let mut config = merged.config().to_json();
        config["dtype"] = match dtype {
            StoreDtype::F32 => "float32",
            StoreDtype::BF16 => "bfloat16",
            StoreDtype::F16 => "float16",
        }
        .into();
        let cfg_path = dir.join("config.json");
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| TrainError::json(&cfg_path, e))?;
        std::fs::write(&cfg_path, text).map_err(|e| TrainError::io(&cfg_path, e))?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(
            dir.join("model.safetensors"),
            &merged.hf_state(),
            dtype,
            Some(meta),
        )
    }

    /// Number of trainable (adapter) parameters.
    pub fn num_lora_params(&self) -> usize {
        self.linears()
            .iter()
            .filter_map(|(_, l)| l.adapter.as_ref())
            .map(|a| a.lora_a.shape().num_elements() + a.lora_b.shape().num_elements())
            .sum()
    }
}

/// The HF module paths a LoRA config targets in a model with this architecture.
pub fn target_paths(cfg: &crate::LlamaConfig, lora: &LoraConfig) -> Vec<String> {
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
