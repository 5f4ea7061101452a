//! The JSON file reader of the configuration and adapter files of both families.

use std::path::Path;

use serde_json::Value;

use crate::error::{Result, TrainError};

/// Reads a JSON file (a `config.json`, `adapter_config.json`, …); I/O and syntax errors name it.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::json(path, e))
}
