//! Stable Diffusion speed on the CPU backend (Flex): one UNet denoising step, and one VAE decode.
//!
//! ```text
//! cargo bench --features train --bench sd
//! /work/venv/bin/python tools/sd_bench/bench_torch.py   # diffusers on PyTorch CPU, same config
//! ```
//! UNet: SD1.5-shaped (4 levels, 3 cross-attention blocks, 2 layers per block, 8 heads, 768-d
//! cross-attention, 32 GroupNorm groups) at one fifth of SD1.5's widths (64, 128, 256, 256), 32×32
//! latents (256 px images), batch 2 (a classifier-free-guidance pair), 77 text tokens; random
//! weights (timing does not depend on them). Keep in sync with `tools/sd_bench/bench_torch.py`.
//! Also the tiny test fixture's UNet (`tests/fixtures/sd/tiny-sd`, widths 16/32/32, 4 heads) on
//! 64×64 latents, batch 2, 77 tokens (an overhead-bound shape: many small ops), and its VAE decoder
//! on 8×8 latents (64 px), batch 2.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use svgen::train::burn::backend::Flex;
use svgen::train::burn::tensor::{Distribution, Tensor};
use svgen::train::sd::blocks::RandomWeights;
use svgen::train::sd::{AutoencoderKL, UNet2DConditionConfig, UNet2DConditionModel};

type B = Flex;

const UNET_CONFIG: &str = r#"{
    "sample_size": 32, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 128, 256, 256], "layers_per_block": 2, "attention_head_dim": 8,
    "cross_attention_dim": 768, "norm_num_groups": 32
}"#;
const LATENT: usize = 32;
const BATCH: usize = 2;
const TOKENS: usize = 77;

fn unet_step(c: &mut Criterion) {
    let device = Default::default();
    let cfg = UNet2DConditionConfig::from_json_str(UNET_CONFIG).expect("bench config");
    let unet = UNet2DConditionModel::<B>::load(cfg, &mut RandomWeights::new(0), &device)
        .expect("random UNet");
    let sample = Tensor::<B, 4>::random(
        [BATCH, 4, LATENT, LATENT],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let ehs = Tensor::<B, 3>::random(
        [BATCH, TOKENS, 768],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let t = Tensor::<B, 1>::from_floats([999.0, 999.0], &device);
    let mut g = c.benchmark_group("sd");
    g.sample_size(10);
    g.bench_function("unet_step_b2_32x32_sd15_fifth_width", |b| {
        b.iter(|| {
            let out = unet.forward(sample.clone(), t.clone(), ehs.clone());
            // force the lazy graph and the copy back to the host, as a sampler step would
            out.into_data()
        })
    });
    let mut unet = unet;
    // query-sliced attention (bounded memory), 256 queries per chunk
    unet.set_attention_slice(Some(256));
    g.bench_function("unet_step_b2_32x32_sd15_fifth_width_slice256", |b| {
        b.iter(|| {
            unet.forward(sample.clone(), t.clone(), ehs.clone())
                .into_data()
        })
    });
    g.finish();
}

fn unet_step_tiny(c: &mut Criterion) {
    let device = Default::default();
    let unet = UNet2DConditionModel::<B>::from_pretrained(fixture().join("unet"), &device)
        .expect("fixture UNet");
    let sample =
        Tensor::<B, 4>::random([BATCH, 4, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let ehs = Tensor::<B, 3>::random([BATCH, TOKENS, 32], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<B, 1>::from_floats([999.0, 999.0], &device);
    let mut g = c.benchmark_group("sd");
    g.sample_size(10);
    g.bench_function("unet_step_b2_64x64_tiny_sd_fixture", |b| {
        b.iter(|| {
            unet.forward(sample.clone(), t.clone(), ehs.clone())
                .into_data()
        })
    });
    g.finish();
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("svgen-train/tests/fixtures/sd/tiny-sd")
}

fn vae_decode(c: &mut Criterion) {
    let device = Default::default();
    let vae =
        AutoencoderKL::<B>::from_pretrained(fixture().join("vae"), &device).expect("fixture VAE");
    let z = Tensor::<B, 4>::random([BATCH, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let mut g = c.benchmark_group("sd");
    g.sample_size(20);
    g.bench_function("vae_decode_tiny_b2_64px", |b| {
        b.iter(|| vae.decode(z.clone()).into_data())
    });
    g.finish();
}

criterion_group!(benches, unet_step, unet_step_tiny, vae_decode);
criterion_main!(benches);
