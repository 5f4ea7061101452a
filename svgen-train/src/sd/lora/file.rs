//! A LoRA file (or PEFT adapter folder) read and classified: its format detected from the key
//! suffixes, the halves paired per module, UNet and text-encoder modules apart, and the modules
//! bound to the model's diffusers paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::diffusers::{
    self, scaling_from_metadata, LORA_METADATA_KEY, LORA_WEIGHT_NAME, UNET_PREFIX,
};
use super::kohya::{self, KOHYA_TE_PREFIX, KOHYA_UNET_PREFIX};
use super::peft::{self, PEFT_MODEL_PREFIX};
use super::text_encoder::{is_sdxl_text_encoder_key, TEXT_ENCODER_PREFIX};
use crate::error::{Result, TrainError};
use crate::nn::peft::PeftScaling;
use svgen_eval::hf_config::HfConfig;
use svgen_eval::weights::{HostTensor, Weights};

/// The key family of a LoRA file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// `lora_A` / `lora_B` (diffusers' current files and PEFT; prefixed `unet.`,
    /// `base_model.model.` or bare).
    Peft,
    /// `lora.down` / `lora.up` (older diffusers files).
    Diffusers,
    /// `lora_unet_…` with `lora_down` / `lora_up` / `alpha` (kohya sd-scripts, A1111, ComfyUI).
    Kohya,
}

impl LoraFormat {
    /// The key suffixes of the `down` (`A`) and `up` (`B`) halves, without the leading `.`.
    fn suffixes(self) -> (&'static str, &'static str) {
        match self {
            Self::Peft => (peft::DOWN_SUFFIX, peft::UP_SUFFIX),
            Self::Diffusers => (diffusers::DOWN_SUFFIX, diffusers::UP_SUFFIX),
            Self::Kohya => (kohya::DOWN_SUFFIX, kohya::UP_SUFFIX),
        }
    }
}

/// The two matrices (and optional alpha) of one module in a LoRA file, PEFT layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModuleWeights {
    /// `lora_A` / `lora.down` / `lora_down`, `[r, in]`, row-major.
    pub down: HostTensor,
    /// The key it was stored under.
    pub down_key: String,
    /// `lora_B` / `lora.up` / `lora_up`, `[out, r]`, row-major.
    pub up: HostTensor,
    /// The key it was stored under.
    pub up_key: String,
    /// A per-module `alpha` scalar (kohya), if present.
    pub alpha: Option<f64>,
}

impl LoraModuleWeights {
    /// Checks the pair against a base linear `in_features` → `out_features`: `down` must be
    /// `[r, in]` and `up` `[out, r]`, with `r` from `scaling` when there is one (else the stored
    /// rank), never 0; a wrong shape is a typed error naming the key. Returns `down` and `up`
    /// as f32 (row-major, stored layout), `r` and the scale (`alpha/r` with a per-module alpha,
    /// else the PEFT scale, else 1).
    pub(super) fn checked(
        &self,
        in_features: usize,
        out_features: usize,
        scaling: Option<PeftScaling>,
    ) -> Result<(Vec<f32>, Vec<f32>, usize, f64)> {
        let (i, o) = (in_features, out_features);
        let r = match scaling {
            Some(s) => s.r,
            None => self.down.shape.first().copied().unwrap_or(0),
        };
        if r == 0 || self.down.shape != [r, i] {
            return Err(TrainError::ShapeMismatch {
                key: self.down_key.clone(),
                expected: vec![r.max(1), i],
                found: self.down.shape.clone(),
            });
        }
        if self.up.shape != [o, r] {
            return Err(TrainError::ShapeMismatch {
                key: self.up_key.clone(),
                expected: vec![o, r],
                found: self.up.shape.clone(),
            });
        }
        let scale = match (self.alpha, scaling) {
            (Some(alpha), _) => alpha / r as f64,
            (None, Some(s)) => s.scale(),
            (None, None) => 1.0,
        };
        let down = self.down.clone().into_f32(&self.down_key)?;
        let up = self.up.clone().into_f32(&self.up_key)?;
        Ok((down, up, r, scale))
    }
}

/// A parsed LoRA file (or PEFT adapter folder), not yet bound to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFile {
    /// The file read.
    pub path: PathBuf,
    /// Its key family.
    pub format: LoraFormat,
    /// Module name as written (diffusers path for PEFT/diffusers, kohya name without suffix for
    /// kohya) → weights.
    pub modules: BTreeMap<String, LoraModuleWeights>,
    /// Text-encoder modules (`lora_te_…` kohya names, or the path after `text_encoder.`).
    pub text_encoder_modules: BTreeMap<String, LoraModuleWeights>,
    /// UNet scaling from `adapter_config.json` or the `lora_adapter_metadata` header.
    pub scaling: Option<PeftScaling>,
    /// Text-encoder scaling from the `lora_adapter_metadata` header (`text_encoder.r`, …).
    pub text_encoder_scaling: Option<PeftScaling>,
}

/// Which part of a module a key holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Half {
    Down,
    Up,
    Alpha,
}

/// Splits a key into (module, half, format) from its suffix.
fn split_suffix(key: &str) -> Option<(String, Half, LoraFormat)> {
    for format in [LoraFormat::Peft, LoraFormat::Diffusers, LoraFormat::Kohya] {
        let (down, up) = format.suffixes();
        for (suffix, half) in [(down, Half::Down), (up, Half::Up)] {
            if let Some(m) = key.strip_suffix(suffix).and_then(|m| m.strip_suffix('.')) {
                return Some((m.to_string(), half, format));
            }
        }
    }
    diffusers::split_processor_key(key).map(|(m, half)| (m, half, LoraFormat::Diffusers))
}

/// The keys of one model (UNet or text encoder) of a file, by half.
#[derive(Default)]
struct Group {
    downs: BTreeMap<String, (String, HostTensor)>,
    ups: BTreeMap<String, (String, HostTensor)>,
    alphas: BTreeMap<String, (String, HostTensor)>,
}

impl Group {
    /// Pairs `down` with `up` (and `alpha`); an unpaired half is a typed error naming the
    /// missing key.
    fn pair_up(
        mut self,
        format: LoraFormat,
        path: &Path,
    ) -> Result<BTreeMap<String, LoraModuleWeights>> {
        let (down_suffix, up_suffix) = format.suffixes();
        let mut modules = BTreeMap::new();
        for (module, (down_key, down)) in self.downs {
            let Some((up_key, up)) = self.ups.remove(&module) else {
                let stem = down_key
                    .strip_suffix(down_suffix)
                    .unwrap_or(down_key.as_str());
                return Err(TrainError::MissingTensor {
                    key: format!("{stem}{up_suffix}"),
                    path: path.to_path_buf(),
                });
            };
            let alpha = match self.alphas.remove(&module) {
                None => None,
                Some((key, t)) => Some(kohya::alpha(&key, t)?),
            };
            modules.insert(
                module,
                LoraModuleWeights {
                    down,
                    down_key,
                    up,
                    up_key,
                    alpha,
                },
            );
        }
        if let Some((_, (key, _))) = self.ups.into_iter().next() {
            let stem = key.strip_suffix(up_suffix).unwrap_or(key.as_str());
            return Err(TrainError::MissingTensor {
                key: format!("{stem}{down_suffix}"),
                path: path.to_path_buf(),
            });
        }
        if let Some((_, (key, _))) = self.alphas.into_iter().next() {
            return Err(TrainError::UnexpectedAdapterKey { key });
        }
        Ok(modules)
    }
}

impl LoraFile {
    /// Reads a LoRA file, or a folder holding `pytorch_lora_weights.safetensors` (diffusers) or
    /// `adapter_model.safetensors` + `adapter_config.json` (PEFT), and detects its format.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut scaling = None;
        let file = if path.is_dir() {
            let diffusers = path.join(LORA_WEIGHT_NAME);
            let peft = path.join("adapter_model.safetensors");
            if diffusers.is_file() {
                diffusers
            } else if peft.is_file() {
                let cfg_path = path.join("adapter_config.json");
                if cfg_path.is_file() {
                    let v = HfConfig::read(&cfg_path)?.into_value();
                    scaling = Some(PeftScaling::from_json(&v, &cfg_path.display().to_string())?);
                }
                peft
            } else {
                return Err(TrainError::MissingFolder {
                    name: format!("{LORA_WEIGHT_NAME} or adapter_model.safetensors"),
                    path: path.to_path_buf(),
                });
            }
        } else {
            path.to_path_buf()
        };
        let weights = Weights::open_file(&file)?;
        let mut te_scaling = None;
        if let Some(text) = weights.metadata().get(LORA_METADATA_KEY) {
            if scaling.is_none() {
                scaling = scaling_from_metadata(text, &file, UNET_PREFIX, true)?;
            }
            te_scaling = scaling_from_metadata(text, &file, TEXT_ENCODER_PREFIX, false)?;
        }
        let tensors = weights.read_all()?;
        Self::from_parts(file, tensors, scaling, te_scaling)
    }

    /// Classifies the tensors of a LoRA file (see [`LoraFile::read`]), in any stored dtype
    /// (svgen-eval's [`HostTensor`]).
    pub fn from_tensors(
        path: PathBuf,
        tensors: BTreeMap<String, HostTensor>,
        scaling: Option<PeftScaling>,
    ) -> Result<Self> {
        Self::from_parts(path, tensors, scaling, None)
    }

    fn from_parts(
        path: PathBuf,
        tensors: BTreeMap<String, HostTensor>,
        scaling: Option<PeftScaling>,
        text_encoder_scaling: Option<PeftScaling>,
    ) -> Result<Self> {
        let mut format: Option<(LoraFormat, String)> = None;
        let mut unet = Group::default();
        let mut te = Group::default();
        for (key, t) in tensors {
            if is_sdxl_text_encoder_key(&key) {
                return Err(TrainError::UnsupportedLora {
                    key,
                    reason: "second text encoder (SDXL): only SD 1.x/2.x pipelines are supported"
                        .into(),
                });
            }
            if key.contains("dora_scale") || key.contains("lora_magnitude_vector") {
                return Err(TrainError::UnsupportedLora {
                    key,
                    reason: "DoRA is not supported".into(),
                });
            }
            let (module, half, fmt) = match split_suffix(&key) {
                Some(x) => x,
                None => match key.strip_suffix(".alpha") {
                    Some(m) => (m.to_string(), Half::Alpha, LoraFormat::Kohya),
                    None => return Err(TrainError::UnexpectedAdapterKey { key }),
                },
            };
            if half != Half::Alpha {
                match &format {
                    None => format = Some((fmt, key.clone())),
                    Some((f, first)) if *f != fmt => {
                        return Err(TrainError::UnsupportedLora {
                            key,
                            reason: format!(
                                "{fmt:?} key in a file whose first key `{first}` is {f:?}; mixed \
                                 formats are not supported"
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
            let (group, module) = match module.strip_prefix(TEXT_ENCODER_PREFIX) {
                Some(m) => (&mut te, m.to_string()),
                None if module.starts_with(KOHYA_TE_PREFIX) => (&mut te, module),
                None => (&mut unet, module),
            };
            let slot = match half {
                Half::Down => &mut group.downs,
                Half::Up => &mut group.ups,
                Half::Alpha => &mut group.alphas,
            };
            slot.insert(module, (key, t));
        }
        let Some((format, _)) = format else {
            return Err(TrainError::InvalidArgument(format!(
                "{} holds no LoRA tensors",
                path.display()
            )));
        };
        Ok(Self {
            modules: unet.pair_up(format, &path)?,
            text_encoder_modules: te.pair_up(format, &path)?,
            path,
            format,
            scaling,
            text_encoder_scaling,
        })
    }

    /// Binds every module to a diffusers path among `known` (the model's attention projection
    /// paths). Unknown modules are typed errors naming their `down` key.
    pub(super) fn resolve(&self, known: &[String]) -> Result<BTreeMap<String, &LoraModuleWeights>> {
        let set: BTreeSet<&str> = known.iter().map(String::as_str).collect();
        let kohya: HashMap<String, &str> = known
            .iter()
            .map(|p| (kohya::module_name(KOHYA_UNET_PREFIX, p), p.as_str()))
            .collect();
        let mut out = BTreeMap::new();
        for (module, w) in &self.modules {
            let path = match self.format {
                LoraFormat::Kohya => kohya.get(module.as_str()).map(|p| p.to_string()),
                LoraFormat::Peft | LoraFormat::Diffusers => [UNET_PREFIX, PEFT_MODEL_PREFIX, ""]
                    .iter()
                    .find_map(|p| module.strip_prefix(p).filter(|m| set.contains(m)))
                    .map(str::to_string),
            };
            let Some(path) = path else {
                return Err(TrainError::UnexpectedAdapterKey {
                    key: w.down_key.clone(),
                });
            };
            if out.insert(path, w).is_some() {
                return Err(TrainError::UnsupportedLora {
                    key: w.down_key.clone(),
                    reason: "a second adapter for the same module".into(),
                });
            }
        }
        Ok(out)
    }
}
