//! Reading Hugging Face JSON configuration files: `config.json` (transformers, diffusers models),
//! `scheduler_config.json`, `adapter_config.json` (PEFT), `model_index.json`,
//! `preprocessor_config.json`.
//!
//! [`HfConfig`] is a typed view of one JSON object (or of a nested section such as CLIP's
//! `text_config`). Every getter names the file and the key (`text_config.hidden_size`) in its
//! errors; a key that is absent or `null` takes the caller's default, as transformers and diffusers
//! do; values the caller does not implement are refused by name ([`HfConfig::choice`],
//! [`HfConfig::require_null`], [`HfConfig::unsupported`]).
//!
//! ```
//! use svgen_eval::hf_config::HfConfig;
//!
//! let c = HfConfig::parse(
//!     r#"{"hidden_size": 64, "text_config": {"hidden_act": "gelu"}, "eos_token_id": [2, 7]}"#,
//!     "config.json",
//! )?;
//! assert_eq!(c.get_or::<usize>("hidden_size", 512)?, 64);
//! assert_eq!(c.get_or::<usize>("num_hidden_layers", 12)?, 12); // absent: the default
//! let text = c.section("text_config")?;
//! let act = text.choice("hidden_act", "quick_gelu", &[("quick_gelu", "quick_gelu"), ("gelu", "gelu")])?;
//! assert_eq!(act, "gelu");
//! let eos: Vec<u32> = c.get::<OneOrMany<u32>>("eos_token_id")?.map(|t| t.0).unwrap_or_default();
//! assert_eq!(eos, [2, 7]);
//! let err = c.get::<bool>("hidden_size").unwrap_err();
//! assert_eq!(err.to_string(), "config.json: `hidden_size` must be a boolean, found 64");
//! # use svgen_eval::hf_config::OneOrMany;
//! # Ok::<(), svgen_eval::hf_config::ConfigError>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Largest configuration file read (bytes). HF configuration files are a few kilobytes; a larger
/// file is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// What can go wrong while reading a configuration file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON, its top level is not an object, or it exceeds [`MAX_CONFIG_BYTES`].
    #[error("invalid JSON in {path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A key holds a value of the wrong JSON type.
    #[error("{path}: `{key}` must be {expected}, found {found}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The key, with its section (`text_config.hidden_size`).
        key: String,
        /// What the key must hold (`a non-negative integer`).
        expected: &'static str,
        /// The value found (JSON text, shortened).
        found: String,
    },
    /// A required key is absent or `null`.
    #[error("{path}: missing `{key}`")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key, with its section.
        key: String,
    },
    /// A key holds a valid value that this crate does not implement.
    #[error("{path}: unsupported value {value} for `{key}`{}", reason_suffix(.reason))]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The key, with its section.
        key: String,
        /// The value found (JSON text, shortened).
        value: String,
        /// Why, or what is supported (may be empty).
        reason: String,
    },
    /// A key holds a value that is wrong (zero where a size is needed, sizes that disagree).
    #[error("{path}: `{key}` {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, with its section.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// JSON text of `v`, cut to 80 characters for error messages.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 80 {
        s
    } else {
        let mut t: String = s.chars().take(77).collect();
        t.push_str("...");
        t
    }
}

/// A value type [`HfConfig::get`] can read.
pub trait FromConfig: Sized {
    /// What the value must be, for error messages (`a non-negative integer`).
    const EXPECTED: &'static str;
    /// Converts a JSON value (never `null`); `None` when it has the wrong type or range.
    fn from_json(v: &Value) -> Option<Self>;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl FromConfig for $t {
            const EXPECTED: &'static str = "a non-negative integer";
            fn from_json(v: &Value) -> Option<Self> {
                v.as_u64().and_then(|n| <$t>::try_from(n).ok())
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl FromConfig for $t {
            const EXPECTED: &'static str = "an integer";
            fn from_json(v: &Value) -> Option<Self> {
                v.as_i64().and_then(|n| <$t>::try_from(n).ok())
            }
        }
    )*};
}
signed!(i32, i64);

impl FromConfig for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_f64()
    }
}

impl FromConfig for f32 {
    const EXPECTED: &'static str = "a number";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_f64().map(|x| x as f32)
    }
}

impl FromConfig for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_bool()
    }
}

impl FromConfig for String {
    const EXPECTED: &'static str = "a string";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}

impl FromConfig for Value {
    const EXPECTED: &'static str = "a JSON value";
    fn from_json(v: &Value) -> Option<Self> {
        Some(v.clone())
    }
}

impl<T: FromConfig> FromConfig for Vec<T> {
    const EXPECTED: &'static str = "a list";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_array()?.iter().map(T::from_json).collect()
    }
}

/// A value given either once or as a list (`eos_token_id: 2` or `[2, 7]`; diffusers'
/// `attention_head_dim: 8` or `[5, 10, 20, 20]`); a single value becomes a one-element list.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T: FromConfig> FromConfig for OneOrMany<T> {
    const EXPECTED: &'static str = "a value or a list of values";
    fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Array(a) => a.iter().map(T::from_json).collect::<Option<_>>().map(Self),
            one => T::from_json(one).map(|x| Self(vec![x])),
        }
    }
}

/// A typed view of a JSON object from an HF configuration file (see the [module](self) docs).
#[derive(Debug, Clone)]
pub struct HfConfig {
    path: PathBuf,
    prefix: String,
    map: Map<String, Value>,
}

impl HfConfig {
    /// Reads a configuration file whose top level is a JSON object.
    ///
    /// # Errors
    /// [`ConfigError::Io`] when the file cannot be read, [`ConfigError::Json`] when it is larger than
    /// [`MAX_CONFIG_BYTES`], not JSON, or not an object.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        Self::from_value(read_json(path)?, path)
    }

    /// Parses JSON text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Json`] when it is not JSON or not an object.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let origin = origin.as_ref();
        let v = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_value(v, origin)
    }

    /// Wraps a parsed JSON object; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Json`] when `value` is not an object.
    pub fn from_value(value: Value, origin: impl AsRef<Path>) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Self {
                path: origin.as_ref().to_path_buf(),
                prefix: String::new(),
                map,
            }),
            other => Err(ConfigError::Json {
                path: origin.as_ref().to_path_buf(),
                message: format!("the top level is not a JSON object but {}", shown(&other)),
            }),
        }
    }

    /// The file (or the origin given to [`HfConfig::parse`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The JSON object, as a value.
    pub fn into_value(self) -> Value {
        Value::Object(self.map)
    }

    /// The key as errors name it: with the section path (`text_config.hidden_size`).
    pub fn key_path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of `key`; `null` counts as absent.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present and not `null`.
    pub fn contains(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// The value of `key` as `T`, `None` when absent or `null`.
    ///
    /// # Errors
    /// [`ConfigError::WrongType`] naming the key when the value is not a `T`.
    pub fn get<T: FromConfig>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => T::from_json(v)
                .map(Some)
                .ok_or_else(|| ConfigError::WrongType {
                    path: self.path.clone(),
                    key: self.key_path(key),
                    expected: T::EXPECTED,
                    found: shown(v),
                }),
        }
    }

    /// The value of `key`, or `default` when absent or `null`.
    ///
    /// # Errors
    /// As [`HfConfig::get`].
    pub fn get_or<T: FromConfig>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// The value of `key`, which must be present.
    ///
    /// # Errors
    /// [`ConfigError::Missing`], or as [`HfConfig::get`].
    pub fn require<T: FromConfig>(&self, key: &str) -> Result<T, ConfigError> {
        self.get(key)?.ok_or_else(|| ConfigError::Missing {
            path: self.path.clone(),
            key: self.key_path(key),
        })
    }

    /// A size that must be positive, or `default` when absent.
    ///
    /// # Errors
    /// As [`HfConfig::get`]; [`ConfigError::Invalid`] for zero.
    pub fn positive(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        let n = self.get_or(key, default)?;
        if n == 0 {
            return Err(self.invalid(key, "must be positive"));
        }
        Ok(n)
    }

    /// A string option mapped through `options` (`(name in the file, value)`); `default` when
    /// absent. Any other string is refused by name, listing the supported ones.
    ///
    /// # Errors
    /// [`ConfigError::Unsupported`] naming the key and the value, or as [`HfConfig::get`].
    pub fn choice<T: Clone>(
        &self,
        key: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(name) = self.get::<String>(key)? else {
            return Ok(default);
        };
        match options.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                Err(self.unsupported(key, format!("supported: {}", names.join(", "))))
            }
        }
    }

    /// A nested object (`text_config`); an empty section when the key is absent or `null`. Its
    /// errors name the key with this section's path (`text_config.hidden_size`).
    ///
    /// # Errors
    /// [`ConfigError::WrongType`] when the key holds something else than an object.
    pub fn section(&self, key: &str) -> Result<HfConfig, ConfigError> {
        Ok(self.opt_section(key)?.unwrap_or_else(|| HfConfig {
            path: self.path.clone(),
            prefix: format!("{}{key}.", self.prefix),
            map: Map::new(),
        }))
    }

    /// A nested object, `None` when absent or `null`.
    ///
    /// # Errors
    /// As [`HfConfig::section`].
    pub fn opt_section(&self, key: &str) -> Result<Option<HfConfig>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(HfConfig {
                path: self.path.clone(),
                prefix: format!("{}{key}.", self.prefix),
                map: m.clone(),
            })),
            Some(v) => Err(ConfigError::WrongType {
                path: self.path.clone(),
                key: self.key_path(key),
                expected: "an object",
                found: shown(v),
            }),
        }
    }

    /// This section with the keys of `overrides` replacing its own (transformers lets an old
    /// `text_config_dict` override `text_config`).
    pub fn overridden_by(mut self, overrides: Option<HfConfig>) -> Self {
        if let Some(o) = overrides {
            self.map.extend(o.map);
        }
        self
    }

    /// Refuses every key of `keys` that is present with a value other than `null` (options that
    /// select an architecture this crate does not implement).
    ///
    /// # Errors
    /// [`ConfigError::Unsupported`] naming the first such key and its value.
    pub fn require_null(&self, keys: &[&str]) -> Result<(), ConfigError> {
        match keys.iter().find(|k| self.contains(k)) {
            Some(k) => Err(self.unsupported(k, "only null is supported")),
            None => Ok(()),
        }
    }

    /// Refuses every key of `keys` that is present with a value other than `null` or `false`.
    ///
    /// # Errors
    /// [`ConfigError::Unsupported`] naming the first such key and its value.
    pub fn require_false(&self, keys: &[&str]) -> Result<(), ConfigError> {
        let set = |k: &&&str| self.raw(k).is_some_and(|v| v != &Value::Bool(false));
        match keys.iter().find(set) {
            Some(k) => Err(self.unsupported(k, "only false is supported")),
            None => Ok(()),
        }
    }

    /// Deserialises the whole section with serde (for configurations with many plain fields, such
    /// as diffusers' `UNet2DConditionModel`); fields absent from the file take the type's
    /// `#[serde(default)]`.
    ///
    /// # Errors
    /// [`ConfigError::Json`] naming the file and what serde reported.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_json::from_value(Value::Object(self.map.clone())).map_err(|e| ConfigError::Json {
            path: self.path.clone(),
            message: if self.prefix.is_empty() {
                e.to_string()
            } else {
                format!("in `{}`: {e}", self.prefix.trim_end_matches('.'))
            },
        })
    }

    /// A [`ConfigError::Unsupported`] naming `key` and the value it holds.
    pub fn unsupported(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Unsupported {
            path: self.path.clone(),
            key: self.key_path(key),
            value: self.raw(key).map_or_else(|| "null".to_string(), shown),
            reason: reason.into(),
        }
    }

    /// A [`ConfigError::Invalid`] naming `key`.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: self.key_path(key),
            message: message.into(),
        }
    }
}

/// Reads a JSON file of at most [`MAX_CONFIG_BYTES`] (any top-level value); I/O and syntax errors
/// name it.
///
/// # Errors
/// [`ConfigError::Io`], or [`ConfigError::Json`] for a file that is too large or not JSON.
pub fn read_json(path: impl AsRef<Path>) -> Result<Value, ConfigError> {
    let path = path.as_ref();
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Json {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    serde_json::from_str(&text).map_err(|e| ConfigError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
