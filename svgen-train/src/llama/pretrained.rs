//! HF checkpoint folders: loading (`config.json` + single or sharded safetensors) and writing
//! a standalone checkpoint with the adapters merged.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::DType;

use crate::error::{Result, TrainError};
use crate::llama::attention::Attention;
use crate::llama::config::LlamaConfig;
use crate::llama::model::{DecoderLayer, Llama, Mlp, RmsNorm};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{host_f32, transpose};
use crate::weights::{write_safetensors, HostTensor, StoreDtype, Weights, TRANSFORMERS_STEM};

/// How to load a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// Compute (and storage) dtype of the weights on the device, whatever the file holds.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32 }
    }
}

impl LoadOptions {
    /// Options for a `--dtype` flag value: `f32`, `bf16` or `f16`.
    pub fn from_flag(dtype: &str) -> Result<Self> {
        Ok(Self {
            dtype: svgen_eval::dtype::parse_dtype_flag(dtype).map_err(TrainError::from)?,
        })
    }

    /// [`TrainError::DtypeNotSupported`] unless backend `B` computes in this dtype on `device`
    /// (`Backend::supports_dtype`: storage and arithmetic); [`svgen_eval::dtype::check_backend_dtype`].
    pub fn check_backend<B: Backend>(&self, device: &B::Device) -> Result<()> {
        svgen_eval::dtype::check_backend_dtype::<B>(self.dtype, device).map_err(TrainError::from)
    }

    /// The options a checkpoint folder should load with on backend `B`: `f32` on the CPU
    /// backend `Flex` (and `Autodiff<Flex>`), whose host kernels compute in `f32`; on every
    /// other backend the checkpoint's own dtype ([`Self::checkpoint_dtype`]). An 8B checkpoint
    /// stored in bf16 thus takes 16 GB on a GPU instead of 32.
    ///
    /// # Errors
    /// As [`Self::checkpoint_dtype`].
    pub fn for_checkpoint<B: Backend>(dir: impl AsRef<Path>) -> Result<Self> {
        let stored = Self::checkpoint_dtype(dir)?;
        Ok(Self {
            dtype: if svgen_eval::dtype::is_flex_family::<B>() {
                DType::F32
            } else {
                stored
            },
        })
    }

    /// The dtype `config.json` declares: `torch_dtype` (or `dtype`, as newer transformers
    /// write it) — `bfloat16`, `float16` or `float32`; `f32` when neither key is there.
    ///
    /// # Errors
    /// [`TrainError::Io`] / [`TrainError::Json`] for a missing or unreadable `config.json`;
    /// [`TrainError::InvalidArgument`] for another dtype string.
    pub fn checkpoint_dtype(dir: impl AsRef<Path>) -> Result<DType> {
        let path = dir.as_ref().join("config.json");
        let text = TrainError::read_text_capped(&path, svgen_core::io::MAX_METADATA_BYTES)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::json(&path, e))?;
        let stored = ["torch_dtype", "dtype"]
            .iter()
            .find_map(|k| json.get(*k).and_then(|v| v.as_str()));
        match stored {
            None | Some("float32") => Ok(DType::F32),
            Some("bfloat16") => Ok(DType::BF16),
            Some("float16") => Ok(DType::F16),
            Some(other) => Err(TrainError::InvalidArgument(format!(
                "{}: `torch_dtype` {other:?} is not float32, bfloat16 or float16",
                path.display()
            ))),
        }
    }
}

/// The HF `[out, in]` shape of every linear of one layer, by module path suffix.
pub(crate) fn linear_shapes(cfg: &LlamaConfig) -> [(&'static str, [usize; 2]); 7] {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    [
        ("self_attn.q_proj", [q, h]),
        ("self_attn.k_proj", [kv, h]),
        ("self_attn.v_proj", [kv, h]),
        ("self_attn.o_proj", [h, q]),
        ("mlp.gate_proj", [i, h]),
        ("mlp.up_proj", [i, h]),
        ("mlp.down_proj", [h, i]),
    ]
}

impl<B: Backend> Llama<B> {
    /// Loads a HF Llama folder (`config.json` + single or sharded safetensors, any float dtype).
    ///
    /// Missing or mis-shaped tensors give a typed error naming the HF key, and so does a tensor
    /// the model has no place for. The base weights are frozen (no gradients).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        options.check_backend::<B>(device)?;
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(dir)?;
        let weights = Weights::open(dir, TRANSFORMERS_STEM)?;
        Self::from_weights(config, weights, options, device)
    }

    /// Loads the model from opened HF weights ([`Weights::open`]) with an explicit configuration.
    /// Each tensor is read from the file when its module is built (host memory holds one tensor
    /// at a time), converted to `options.dtype` and frozen.
    ///
    /// # Errors
    /// [`TrainError::MissingTensor`] and [`TrainError::ShapeMismatch`] naming the key;
    /// [`TrainError::UnexpectedTensor`] for tensors the model does not use (rotary `inv_freq`
    /// buffers and, with tied embeddings, `lm_head.weight` are ignored).
    pub fn from_weights(
        config: LlamaConfig,
        weights: Weights,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let cfg = &config;
        let w = weights.with_dtype(options.dtype).frozen();
        let (h, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = w.param("model.embed_tokens.weight", [vocab, h], device)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(w.make_param(w.linear_weight("lm_head.weight", h, vocab, device)?))
        };
        let shapes = linear_shapes(cfg);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let lin = |name: &str| -> Result<LoraLinear<B>> {
                let [out, inp] = shapes
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, s)| *s)
                    .ok_or_else(|| TrainError::InvalidArgument(format!("no linear `{name}`")))?;
                let key = format!("model.layers.{l}.{name}.weight");
                let weight = w.linear_weight(&key, inp, out, device)?;
                Ok(LoraLinear::new(w.make_param(weight)))
            };
            let self_attn = Attention {
                q_proj: lin("self_attn.q_proj")?,
                k_proj: lin("self_attn.k_proj")?,
                v_proj: lin("self_attn.v_proj")?,
                o_proj: lin("self_attn.o_proj")?,
                num_heads: cfg.num_attention_heads,
                num_kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
            };
            let mlp = Mlp {
                gate_proj: lin("mlp.gate_proj")?,
                up_proj: lin("mlp.up_proj")?,
                down_proj: lin("mlp.down_proj")?,
            };
            let norm = |name: &str| -> Result<RmsNorm<B>> {
                Ok(RmsNorm {
                    weight: w.param(&format!("model.layers.{l}.{name}.weight"), [h], device)?,
                    eps: cfg.rms_norm_eps,
                })
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: norm("input_layernorm")?,
                post_attention_layernorm: norm("post_attention_layernorm")?,
            });
        }
        let norm = RmsNorm {
            weight: w.param("model.norm.weight", [h], device)?,
            eps: cfg.rms_norm_eps,
        };
        let tied = cfg.tie_word_embeddings;
        w.ignore(|k| k.ends_with(".rotary_emb.inv_freq") || (tied && k == "lm_head.weight"));
        w.finish()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            token_adapter: None,
            config,
        })
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
        // `Keep` keeps the model's f32 host copies.
        config["dtype"] = dtype.torch_name().unwrap_or("float32").into();
        let cfg_path = dir.join("config.json");
        let text =
            serde_json::to_string_pretty(&config).map_err(|e| TrainError::json(&cfg_path, e))?;
        std::fs::write(&cfg_path, text).map_err(|e| TrainError::io(&cfg_path, e))?;
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(
            dir.join("model.safetensors"),
            &merged.hf_state(),
            dtype,
            Some(&meta),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn dtype_flags_are_checked_against_the_backend_before_loading() {
        let dev = Default::default();
        for (flag, dtype) in [
            ("f32", DType::F32),
            ("bf16", DType::BF16),
            ("f16", DType::F16),
        ] {
            let o = LoadOptions::from_flag(flag).expect("known flag");
            assert_eq!(o.dtype, dtype);
            o.check_backend::<Flex>(&dev)
                .expect("Flex computes in every float dtype");
        }
        assert!(matches!(
            LoadOptions::from_flag("f8"),
            Err(TrainError::InvalidArgument(_))
        ));
        // A dtype no backend computes weights in is refused before any file is opened.
        let int = LoadOptions { dtype: DType::I32 };
        assert!(matches!(
            int.check_backend::<Flex>(&dev),
            Err(TrainError::DtypeNotSupported { .. })
        ));
        assert!(matches!(
            Llama::<Flex>::from_pretrained("/nonexistent/model", int, &dev),
            Err(TrainError::DtypeNotSupported { .. })
        ));
    }
}
