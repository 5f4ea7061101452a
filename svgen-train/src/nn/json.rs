//! The JSON file reader of the configuration and adapter files of both families: svgen-eval's
//! shared reader ([`svgen_eval::hf_config::read_json`], size-limited), with this crate's errors.

use std::path::Path;

use serde_json::Value;

use crate::error::Result;

/// Reads a JSON file (a `config.json`, `adapter_config.json`, …); I/O and syntax errors name it
/// ([`crate::TrainError::Io`], [`crate::TrainError::Json`]).
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    Ok(svgen_eval::hf_config::read_json(path)?)
}
