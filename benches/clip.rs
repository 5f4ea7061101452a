//! CLIP benchmarks (Flex CPU backend; `--features cuda` for CUDA).
//!
//! - `clip_vision_vit_b32_batch8_224`: vision tower + projection of ViT-B/32 shape (random weights),
//!   batch 8 at 224 px. `tools/clip_bench/run.py` runs this and PyTorch (transformers) in the same run.
//! - `clip_preprocess_8x640x480`: PIL-exact CLIP preprocessing of 8 images.
//!
//! `cargo bench --bench clip`

use criterion::{criterion_group, criterion_main, Criterion};
use svgen::eval::burn::prelude::*;
use svgen::eval::{ClipConfig, ClipImageProcessor, ClipVisionModel, Weights};
use svgen::DefaultBackend as B;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Random weights with the HF key names of a `CLIPVisionModel` + `visual_projection`.
fn random_vision(cfg: &ClipConfig) -> Weights {
    let v = &cfg.vision;
    let (d, i, p) = (v.hidden_size, v.intermediate_size, v.patch_size);
    let mut r = Lcg(42);
    let mut t: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, r: &mut Lcg| {
        let n = shape.iter().product();
        t.push((name, r.vec(n, scale), shape));
    };
    let pre = "vision_model";
    add(
        format!("{pre}.embeddings.class_embedding"),
        vec![d],
        0.1,
        &mut r,
    );
    add(
        format!("{pre}.embeddings.patch_embedding.weight"),
        vec![d, 3, p, p],
        0.05,
        &mut r,
    );
    add(
        format!("{pre}.embeddings.position_embedding.weight"),
        vec![v.num_positions(), d],
        0.1,
        &mut r,
    );
    for ln in ["pre_layrnorm", "post_layernorm"] {
        add(format!("{pre}.{ln}.weight"), vec![d], 0.1, &mut r);
        add(format!("{pre}.{ln}.bias"), vec![d], 0.1, &mut r);
    }
    for l in 0..v.num_hidden_layers {
        let lp = format!("{pre}.encoder.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(
                format!("{lp}.self_attn.{proj}.weight"),
                vec![d, d],
                0.05,
                &mut r,
            );
            add(format!("{lp}.self_attn.{proj}.bias"), vec![d], 0.05, &mut r);
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            add(format!("{lp}.{ln}.weight"), vec![d], 0.1, &mut r);
            add(format!("{lp}.{ln}.bias"), vec![d], 0.1, &mut r);
        }
        add(format!("{lp}.mlp.fc1.weight"), vec![i, d], 0.05, &mut r);
        add(format!("{lp}.mlp.fc1.bias"), vec![i], 0.05, &mut r);
        add(format!("{lp}.mlp.fc2.weight"), vec![d, i], 0.05, &mut r);
        add(format!("{lp}.mlp.fc2.bias"), vec![d], 0.05, &mut r);
    }
    add(
        "visual_projection.weight".into(),
        vec![cfg.projection_dim, d],
        0.05,
        &mut r,
    );
    Weights::from_f32_tensors(t).expect("valid random weights")
}

fn vision(c: &mut Criterion) {
    let device = Default::default();
    let cfg = ClipConfig::default(); // transformers' defaults = ViT-B/32
    let w = random_vision(&cfg);
    let model = ClipVisionModel::<B>::load(&cfg.vision, &w, "vision_model", &device).expect("load");
    let proj = w
        .linear::<B>(
            "visual_projection",
            cfg.vision.hidden_size,
            cfg.projection_dim,
            false,
            &device,
        )
        .expect("projection");
    let mut r = Lcg(7);
    let px = Tensor::<B, 4>::from_data(
        TensorData::new(r.vec(8 * 3 * 224 * 224, 4.0), [8, 3, 224, 224]),
        &device,
    );
    let mut g = c.benchmark_group("clip");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(12));
    g.bench_function("clip_vision_vit_b32_batch8_224", |b| {
        b.iter(|| {
            let out = model.forward(px.clone()).expect("forward");
            let f = proj.forward(out.pooler_output);
            // force the computation (and a device sync on CUDA)
            f.into_data()
        })
    });
    let imgs: Vec<image::RgbImage> = (0..8)
        .map(|k| {
            image::RgbImage::from_fn(640, 480, |x, y| {
                image::Rgb([(x + k) as u8, (y * 2) as u8, (x ^ y) as u8])
            })
        })
        .collect();
    let p = ClipImageProcessor::default();
    g.bench_function("clip_preprocess_8x640x480", |b| {
        b.iter(|| {
            p.preprocess_batch::<B>(&imgs, &device)
                .expect("preprocess")
                .into_data()
        })
    });
    g.finish();
}

criterion_group!(benches, vision);
criterion_main!(benches);
