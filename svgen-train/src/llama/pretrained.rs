//! HF checkpoint folders: loading (`config.json` + single or sharded safetensors) and writing
//! a standalone checkpoint with the adapters merged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::error::{Result, TrainError};
use crate::llama::attention::Attention;
use crate::llama::config::LlamaConfig;
use crate::llama::model::{DecoderLayer, Llama, Mlp, RmsNorm};
use crate::nn::lora::LoraLinear;
use crate::nn::tensor::{frozen_param, host_f32, transpose};
use crate::weights::{write_safetensors, Checkpoint, HostTensor, StoreDtype};

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
    /// Loads a HF Llama folder (`config.json` + single or sharded safetensors, f32/bf16/f16).
    ///
    /// Missing or mis-shaped tensors give a typed error naming the HF key. The base weights are
    /// frozen (no gradients).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        Self::from_checkpoint(config, &ckpt, options, device)
    }

    /// Loads weights from an opened checkpoint with an explicit configuration.
    pub fn from_checkpoint(
        config: LlamaConfig,
        ckpt: &Checkpoint,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let cfg = &config;
        let mut expected: HashMap<String, Vec<usize>> = HashMap::new();
        expected.insert(
            "model.embed_tokens.weight".into(),
            vec![cfg.vocab_size, cfg.hidden_size],
        );
        expected.insert("model.norm.weight".into(), vec![cfg.hidden_size]);
        if !cfg.tie_word_embeddings {
            expected.insert(
                "lm_head.weight".into(),
                vec![cfg.vocab_size, cfg.hidden_size],
            );
        }
        for l in 0..cfg.num_hidden_layers {
            for (name, shape) in linear_shapes(cfg) {
                expected.insert(format!("model.layers.{l}.{name}.weight"), shape.to_vec());
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                expected.insert(
                    format!("model.layers.{l}.{norm}.weight"),
                    vec![cfg.hidden_size],
                );
            }
        }
        let mut p1: HashMap<String, Param<Tensor<B, 1>>> = HashMap::new();
        let mut p2: HashMap<String, Param<Tensor<B, 2>>> = HashMap::new();
        ckpt.for_each_tensor(|key, t| {
            let Some(shape) = expected.get(key) else {
                return Ok(()); // e.g. rotary inv_freq buffers, or lm_head with tied embeddings
            };
            if &t.shape != shape {
                return Err(TrainError::ShapeMismatch {
                    key: key.into(),
                    expected: shape.clone(),
                    found: t.shape,
                });
            }
            let data = t.into_f32(key)?;
            if shape.len() == 1 {
                p1.insert(
                    key.into(),
                    frozen_param(data, [shape[0]], options.dtype, device),
                );
            } else if key.ends_with("_proj.weight") || key == "lm_head.weight" {
                let (rows, cols) = (shape[0], shape[1]);
                p2.insert(
                    key.into(),
                    frozen_param(
                        transpose(&data, rows, cols),
                        [cols, rows],
                        options.dtype,
                        device,
                    ),
                );
            } else {
                p2.insert(
                    key.into(),
                    frozen_param(data, [shape[0], shape[1]], options.dtype, device),
                );
            }
            Ok(())
        })?;
        let dir = ckpt.dir().to_path_buf();
        let mut take2 = |key: String| {
            p2.remove(&key).ok_or_else(|| TrainError::MissingTensor {
                key,
                path: dir.clone(),
            })
        };
        let embed_tokens = take2("model.embed_tokens.weight".into())?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(take2("lm_head.weight".into())?)
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let mut lin = |name: &str| -> Result<LoraLinear<B>> {
                Ok(LoraLinear::new(take2(format!(
                    "model.layers.{l}.{name}.weight"
                ))?))
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
            let mut norm = |name: &str| -> Result<RmsNorm<B>> {
                let key = format!("model.layers.{l}.{name}.weight");
                let weight = p1.remove(&key).ok_or_else(|| TrainError::MissingTensor {
                    key,
                    path: ckpt.dir().to_path_buf(),
                })?;
                Ok(RmsNorm {
                    weight,
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
        let norm_w = p1
            .remove("model.norm.weight")
            .ok_or_else(|| TrainError::MissingTensor {
                key: "model.norm.weight".into(),
                path: ckpt.dir().to_path_buf(),
            })?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm {
                weight: norm_w,
                eps: cfg.rms_norm_eps,
            },
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
}
