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
use crate::llama::config::read_json;
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

/// The scaling fields of a PEFT `LoraConfig` (from `adapter_config.json` or diffusers'
/// `lora_adapter_metadata` header), whatever the model.
///
/// ```
/// use svgen_train::nn::lora::PeftScaling;
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
        let bad = |m: String| TrainError::Config(format!("{origin}: {m}"));
        if let Some(t) = v.get("peft_type").and_then(Value::as_str) {
            if t != "LORA" {
                return Err(bad(format!("peft_type `{t}` is not LORA")));
            }
        }
        for flag in ["use_dora", "fan_in_fan_out", "lora_bias"] {
            if v.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(bad(format!("`{flag}` is not supported")));
            }
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
            .filter(|&r| r > 0)
            .ok_or_else(|| bad("missing or zero `r`".into()))? as usize;
        let lora_alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .filter(|a| a.is_finite())
            .ok_or_else(|| bad("missing `lora_alpha`".into()))?;
        Ok(Self {
            r,
            lora_alpha,
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            lora_dropout: v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
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
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(
        dir.join("adapter_model.safetensors"),
        state,
        StoreDtype::F32,
        Some(meta),
    )?;
    let path = dir.join("adapter_config.json");
    let text = serde_json::to_string_pretty(config).map_err(|e| TrainError::json(&path, e))?;
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
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
