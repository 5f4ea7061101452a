//! A diffusers pipeline folder: `model_index.json` and one sub-folder per component. Missing
//! parts and components of an unknown class are typed errors naming the file, folder or key.

use std::path::{Path, PathBuf};

use svgen_eval::hf_config::HfConfig;

use crate::error::{Result, TrainError};

/// `dir/name`, or [`TrainError::MissingFolder`] naming it.
pub(crate) fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(TrainError::MissingFolder {
            name: name.to_string(),
            path: dir.to_path_buf(),
        })
    }
}

/// The typed error for a missing model sub-folder: its name and the folder that should hold it.
pub(crate) fn missing_folder(dir: &Path) -> TrainError {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    TrainError::MissingFolder {
        name,
        path: dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf()),
    }
}

/// One component a pipeline needs: its `model_index.json` key (= sub-folder name) and the
/// classes accepted for it (`["library", "Class"]` entries; the library is not checked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Component {
    /// Key in `model_index.json` and sub-folder name (`unet`, `text_encoder_2`, ...).
    pub name: &'static str,
    /// Accepted class names (`UNet2DConditionModel`, ...).
    pub classes: &'static [&'static str],
}

/// `model_index.json` of a pipeline folder, read and checked: the pipeline class (when `pipelines`
/// is not empty, `_class_name` must be one of them) and every component's class.
///
/// # Errors
/// [`TrainError::MissingFolder`] naming `model_index.json`; [`TrainError::Json`] for a file that
/// is not a JSON object; [`TrainError::UnsupportedValue`] naming `_class_name` or the component
/// key (`transformer`, ...) whose class is not among the accepted ones.
pub(crate) fn read_model_index(
    dir: &Path,
    pipelines: &[&str],
    components: &[Component],
) -> Result<HfConfig> {
    let path = require(dir, "model_index.json")?;
    let index = HfConfig::read(&path)?;
    if !pipelines.is_empty() {
        crate::diffusion::config::check_class_name(&index, pipelines)?;
    }
    for c in components {
        // `["diffusers", "FluxTransformer2DModel"]`; absent or null entries are checked by the
        // folder lookup that follows.
        let Some(entry) = index.get::<Vec<serde_json::Value>>(c.name)? else {
            continue;
        };
        match entry.get(1) {
            // `[null, null]`: the component is absent; the folder lookup reports it.
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(class)) if c.classes.contains(&class.as_str()) => {}
            Some(_) => {
                return Err(index
                    .unsupported(c.name, format!("supported: {}", c.classes.join(", ")))
                    .into())
            }
        }
    }
    Ok(index)
}
