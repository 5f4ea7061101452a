//! The UNet's adapters: fresh ones attached to the targeted attention projections, a parsed file
//! loaded into them, their state collected for saving, and fusing into the base weights.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};

use super::config::{LoraInit, UNetLoraConfig};
use super::diffusers::{save_lora_weights, UNET_PREFIX};
use super::file::{LoraFile, LoraFormat};
use super::peft::save_peft_adapter;
use super::text_encoder::text_encoder_error;
use crate::diffusion::noise::randn_host;
use crate::error::{Result, TrainError};
use crate::nn::lora::{LoraAdapter, LoraLinear};
use crate::nn::peft::peft_adapter_state;
use crate::nn::tensor::{trainable_param, transpose};
use crate::sd::unet::UNet2DConditionModel;
use crate::weights::HostTensor;

/// What [`apply_lora`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraLoadReport {
    /// The format detected.
    pub format: LoraFormat,
    /// Diffusers paths that received an adapter.
    pub modules: Vec<String>,
    /// Ranks seen (usually one).
    pub ranks: BTreeSet<usize>,
}

/// Adds fresh adapters to the targeted linears of `linears` (from
/// `UNet2DConditionModel::attention_linears_mut`); `B` is zero, so outputs are unchanged.
/// Returns the number of modules adapted. `seed` makes `A` reproducible; an existing adapter is
/// replaced.
pub fn add_lora<B: Backend>(
    linears: Vec<(String, &mut LoraLinear<B>)>,
    cfg: &UNetLoraConfig,
    seed: u64,
) -> Result<usize> {
    cfg.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut n = 0;
    for (path, lin) in linears {
        if !cfg.targets(&path) {
            continue;
        }
        let (i, o) = (lin.in_features(), lin.out_features());
        // Drawn in PEFT's [r, in] order, stored [in, r].
        let a: Vec<f32> = match cfg.init {
            LoraInit::KaimingUniform => {
                let bound = 1.0 / (i as f32).sqrt();
                (0..cfg.r * i)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            }
            LoraInit::Gaussian => randn_host(&mut rng, cfg.r * i)
                .into_iter()
                .map(|x| x / cfg.r as f32)
                .collect(),
        };
        let w = lin.weight.val();
        lin.adapter = Some(LoraAdapter {
            lora_a: trainable_param(transpose(&a, cfg.r, i), [i, cfg.r], w.dtype(), &w.device()),
            lora_b: trainable_param(vec![0.0; cfg.r * o], [cfg.r, o], w.dtype(), &w.device()),
            scale: cfg.scale(),
            dropout: cfg.lora_dropout,
        });
        n += 1;
    }
    if n == 0 {
        return Err(TrainError::Config(
            "the LoRA configuration targets no module of this UNet".into(),
        ));
    }
    Ok(n)
}

/// Loads `file` into `linears`. Every module of the file must name one of them, with shapes
/// `[r, in]` / `[out, r]` matching the base linear (and `r` matching the PEFT config when there
/// is one); otherwise nothing is changed and a typed error names the key. Adapters are loaded
/// trainable (so training can continue from them) with dropout 0 unless the config says
/// otherwise.
pub fn apply_lora<B: Backend>(
    linears: Vec<(String, &mut LoraLinear<B>)>,
    file: &LoraFile,
) -> Result<LoraLoadReport> {
    if let Some(m) = file.text_encoder_modules.values().next() {
        return Err(text_encoder_error(&m.down_key));
    }
    let known: Vec<String> = linears.iter().map(|(p, _)| p.clone()).collect();
    let bound = file.resolve(&known)?;
    // Validate everything before touching the model.
    let mut plan: BTreeMap<String, (Vec<f32>, Vec<f32>, usize, f64)> = BTreeMap::new();
    let mut ranks = BTreeSet::new();
    for (path, lin) in &linears {
        let Some(w) = bound.get(path) else { continue };
        let (down, up, r, scale) =
            w.checked(lin.in_features(), lin.out_features(), file.scaling)?;
        ranks.insert(r);
        plan.insert(path.clone(), (down, up, r, scale));
    }
    let dropout = file.scaling.map_or(0.0, |s| s.lora_dropout);
    let mut modules = Vec::with_capacity(plan.len());
    for (path, lin) in linears {
        let Some((down, up, r, scale)) = plan.remove(&path) else {
            continue;
        };
        let (i, o) = (lin.in_features(), lin.out_features());
        let w = lin.weight.val();
        lin.adapter = Some(LoraAdapter {
            lora_a: trainable_param(transpose(&down, r, i), [i, r], w.dtype(), &w.device()),
            lora_b: trainable_param(transpose(&up, o, r), [r, o], w.dtype(), &w.device()),
            scale,
            dropout,
        });
        modules.push(path);
    }
    Ok(LoraLoadReport {
        format: file.format,
        modules,
        ranks,
    })
}

/// The adapters of `linears` under diffusers' saved key names (`unet.<path>.lora_A.weight`
/// `[r, in]`, `….lora_B.weight` `[out, r]`), each `lora_B` multiplied by
/// `adapter scale / target_scale` (1 when the adapter was made with the saved configuration).
pub fn lora_state<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    prefix: &str,
    target_scale: Option<f64>,
) -> BTreeMap<String, HostTensor> {
    peft_adapter_state(
        linears.iter().map(|(path, lin)| (path.clone(), &**lin)),
        prefix,
        target_scale,
    )
}

/// Checks that the adapters of `linears` can be saved under `cfg`: its rank and targets cover
/// every adapter, and there is at least one.
pub(crate) fn check_savable<B: Backend>(
    linears: &[(String, &mut LoraLinear<B>)],
    cfg: &UNetLoraConfig,
) -> Result<()> {
    cfg.validate()?;
    let mut any = false;
    for (path, lin) in linears {
        if let Some(a) = &lin.adapter {
            any = true;
            let r = a.lora_a.val().dims()[1];
            if r != cfg.r {
                return Err(TrainError::InvalidArgument(format!(
                    "adapter of `{path}` has rank {r}, the configuration to save has r = {}",
                    cfg.r
                )));
            }
            if !cfg.targets(path) {
                return Err(TrainError::InvalidArgument(format!(
                    "`{path}` carries an adapter but the configuration to save does not target it"
                )));
            }
        }
    }
    if !any {
        return Err(TrainError::InvalidArgument(
            "the UNet has no LoRA adapters".into(),
        ));
    }
    Ok(())
}

/// Folds every adapter into its base weight (`W + s·A·B`, diffusers' `fuse_lora` followed by
/// `unload_lora`); the linears end up adapter-free. Returns the number fused.
pub fn fuse_lora<B: Backend>(linears: Vec<(String, &mut LoraLinear<B>)>) -> usize {
    let mut n = 0;
    for (_, lin) in linears {
        if lin.merge_adapter() {
            n += 1;
        }
    }
    n
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Adds fresh adapters to the attention projections `cfg` targets (see [`add_lora`]).
    pub fn add_lora(&mut self, cfg: &UNetLoraConfig, seed: u64) -> Result<usize> {
        add_lora(self.attention_linears_mut(), cfg, seed)
    }

    /// Loads a LoRA file or folder in any supported format (see the [module docs](crate::sd::lora)).
    pub fn load_lora(&mut self, path: impl AsRef<Path>) -> Result<LoraLoadReport> {
        let file = LoraFile::read(path)?;
        apply_lora(self.attention_linears_mut(), &file)
    }

    /// The adapters under diffusers' key names (`unet.<path>.lora_A.weight`, …), unscaled.
    pub fn lora_state(&self) -> BTreeMap<String, HostTensor> {
        // Cloning a module clones tensor handles only.
        let mut m = self.clone();
        let linears = m.attention_linears_mut();
        lora_state(&linears, UNET_PREFIX, None)
    }

    /// Saves the adapters as `dir/pytorch_lora_weights.safetensors` (see [`save_lora_weights`]).
    pub fn save_lora_weights(
        &self,
        cfg: &UNetLoraConfig,
        dir: impl AsRef<Path>,
    ) -> Result<PathBuf> {
        let mut m = self.clone();
        let linears = m.attention_linears_mut();
        save_lora_weights(&linears, cfg, dir)
    }

    /// Saves the adapters as a PEFT adapter folder (see [`save_peft_adapter`]).
    pub fn save_peft_adapter(
        &self,
        cfg: &UNetLoraConfig,
        dir: impl AsRef<Path>,
        base_model_name_or_path: Option<&str>,
    ) -> Result<()> {
        let mut m = self.clone();
        let linears = m.attention_linears_mut();
        save_peft_adapter(&linears, cfg, dir, base_model_name_or_path)
    }

    /// Folds the adapters into the base weights (see [`fuse_lora`]).
    pub fn fuse_lora(&mut self) -> usize {
        fuse_lora(self.attention_linears_mut())
    }

    /// Number of LoRA parameters.
    pub fn num_lora_params(&self) -> usize {
        let mut m = self.clone();
        m.attention_linears_mut()
            .iter()
            .filter_map(|(_, l)| l.adapter.as_ref())
            .map(LoraAdapter::num_params)
            .sum()
    }
}
