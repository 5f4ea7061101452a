//! Fuzz target: arbitrary text → the Hugging Face JSON configuration readers: svgen-eval's
//! `HfConfig` (every getter, CLIP text/vision configs, the CLIP image processor) and the model
//! configs of svgen-train (Llama `config.json` and its RoPE frequencies, PEFT LoRA scaling,
//! diffusers UNet / VAE configs and their derived sizes, the four schedulers with a few step
//! counts).
//!
//! Every input must give a typed error or a value: no panic (overflowing arithmetic included),
//! no hang, no allocation sized by an unchecked field.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run hf_config -- -max_len=16384
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use svgen_eval::hf_config::{HfConfig, OneOrMany};
use svgen_eval::{ClipConfig, ClipImageProcessor, ClipTextConfig, ClipVisionConfig};
use svgen_train::nn::peft::PeftScaling;
use svgen_train::sd::{
    AutoencoderKLConfig, Scheduler, SchedulerConfig, SchedulerKind, UNet2DConditionConfig,
};
use svgen_train::LlamaConfig;

/// Every typed getter on every key of a section (and one level of nested sections).
fn getters(c: &HfConfig, depth: u32) {
    let keys: Vec<String> = c.as_map().keys().cloned().collect();
    for k in &keys {
        let _ = c.get::<usize>(k);
        let _ = c.get::<u32>(k);
        let _ = c.get::<i64>(k);
        let _ = c.get::<f64>(k);
        let _ = c.get::<f32>(k);
        let _ = c.get::<bool>(k);
        let _ = c.get::<String>(k);
        let _ = c.get::<Vec<f64>>(k);
        let _ = c.get::<OneOrMany<usize>>(k);
        let _ = c.positive(k, 1);
        let _ = c.choice(k, 0, &[("a", 1), ("gelu", 2)]);
        let _ = c.require_null(&[k.as_str()]);
        let _ = c.require_false(&[k.as_str()]);
        if depth < 2 {
            if let Ok(s) = c.section(k) {
                getters(&s, depth + 1);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // svgen-eval: HfConfig and the CLIP configs.
    if let Ok(c) = HfConfig::parse(text, "config.json") {
        getters(&c, 0);
        if let Ok(clip) = ClipConfig::from_config(&c) {
            assert!(clip.text.hidden_size % clip.text.num_attention_heads == 0);
            let _ = clip.text.head_dim();
            let _ = clip.vision.head_dim();
            let _ = clip.vision.grid();
            let _ = clip.vision.num_positions();
        }
        if let Ok(t) = ClipTextConfig::from_root(&c) {
            let _ = t.head_dim();
        }
        if let Ok(v) = ClipVisionConfig::from_config(&c) {
            let _ = v.grid();
            let _ = v.num_positions();
        }
        let _ = ClipImageProcessor::from_config(&c);
    }

    // svgen-train: model, adapter and scheduler configs.
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if let Ok(cfg) = LlamaConfig::from_json(&value) {
        let inv = cfg.inv_freq();
        assert_eq!(inv.len(), cfg.head_dim / 2);
        let _ = cfg.to_json();
    }
    let _ = PeftScaling::from_json(&value, "adapter_config.json");
    if let Ok(u) = UNet2DConditionConfig::from_json_str(text) {
        let _ = u.groups();
        let _ = u.heads_per_block();
        let _ = u.time_embed_dim();
        let _ = u.upsampling_factor();
    }
    if let Ok(v) = AutoencoderKLConfig::from_json_str(text) {
        let _ = v.downscale_factor();
    }
    if let Ok(cfg) = SchedulerConfig::from_json(&value) {
        for kind in SchedulerKind::ALL {
            if let Ok(mut s) = Scheduler::from_config(kind, cfg.clone()) {
                for n in [1, 2, 7, 50] {
                    if s.set_timesteps(n).is_ok() {
                        assert_eq!(s.num_inference_steps(), Some(s.timesteps().len()));
                        let _ = s.init_noise_sigma();
                    }
                }
            }
        }
    }
});
