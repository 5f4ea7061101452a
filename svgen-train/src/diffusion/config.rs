//! Reading diffusers model `config.json` files with svgen-eval's [`HfConfig`]: options that must be
//! null (or absent) or false because the architecture they select is not implemented are refused
//! by name, the rest is deserialised with diffusers' defaults and checked.

use std::path::Path;

use serde::de::DeserializeOwned;
use svgen_eval::hf_config::HfConfig;

use crate::error::{Result, TrainError};

/// A typed error naming a configuration key and the value found.
pub(crate) fn unsupported(key: &str, value: impl std::fmt::Display) -> TrainError {
    TrainError::UnsupportedValue {
        key: key.into(),
        value: value.to_string(),
    }
}

/// A diffusers model `config.json` this crate reads.
pub(crate) trait DiffusersConfig: DeserializeOwned {
    /// The diffusers class this file must describe (`_class_name`, when the file has one).
    const CLASS_NAMES: &'static [&'static str];
    /// Keys that must be absent or null.
    const MUST_BE_NULL: &'static [&'static str];
    /// Keys that must be absent, null or false.
    const MUST_BE_FALSE: &'static [&'static str];

    /// The checks after parsing.
    fn check(&self) -> Result<()>;

    /// Reads, parses and checks `path`; errors name it.
    fn read_file(path: &Path) -> Result<Self> {
        Self::from_hf(&HfConfig::read(path)?)
    }

    /// Parses and checks JSON text.
    fn parse_str(text: &str) -> Result<Self> {
        Self::from_hf(&HfConfig::parse(text, "<string>")?)
    }

    /// Checks `_class_name` and the null/false keys, deserialises and checks.
    fn from_hf(c: &HfConfig) -> Result<Self> {
        check_class_name(c, Self::CLASS_NAMES)?;
        c.require_null(Self::MUST_BE_NULL)?;
        c.require_false(Self::MUST_BE_FALSE)?;
        let cfg: Self = c.deserialize()?;
        cfg.check()?;
        Ok(cfg)
    }
}

/// Refuses a `_class_name` other than `allowed` (an absent one is accepted, as diffusers does
/// when a class is given explicitly).
///
/// # Errors
/// [`TrainError::UnsupportedValue`] naming `_class_name`, its value and the supported classes.
pub(crate) fn check_class_name(c: &HfConfig, allowed: &[&str]) -> Result<()> {
    match c.get::<String>("_class_name")? {
        Some(name) if !allowed.contains(&name.as_str()) => Err(c
            .unsupported("_class_name", format!("supported: {}", allowed.join(", ")))
            .into()),
        _ => Ok(()),
    }
}
