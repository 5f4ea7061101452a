//! UNet2DConditionModel / AutoencoderKL parity with diffusers on the tiny SD fixture (written by
//! `tools/fixtures/make_sd.py`), sliced attention, LoRA attachment points and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use svgen_train::sd::config::UNet2DConditionConfig;
use svgen_train::sd::unet::UNet2DConditionModel;
use svgen_train::sd::vae::AutoencoderKL;
use svgen_train::weights::{read_safetensors, write_safetensors};
use svgen_train::{CpuBackend, HostTensor, StoreDtype, TrainError};

type B = CpuBackend;
const TOL: f32 = 1e-4;

fn sd_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn tiny() -> PathBuf {
    sd_fixture().join("tiny-sd")
}

struct Reference(BTreeMap<String, HostTensor>);

impl Reference {
    fn load() -> Self {
        Self(
            read_safetensors(sd_fixture().join("unet_vae_reference.safetensors"))
                .expect("reference readable"),
        )
    }

    fn host(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("{key} in reference"));
        let data = match &t.data {
            svgen_train::HostData::F32(v) => v.clone(),
            svgen_train::HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            other => other.clone().into_f32().expect("float data"),
        };
        (t.shape.clone(), data)
    }

    fn t<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        let (shape, data) = self.host(key);
        let shape: [usize; D] = shape.try_into().expect("rank");
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }
}

fn max_abs_diff<const D: usize>(got: Tensor<B, D>, expected: &(Vec<usize>, Vec<f32>)) -> f32 {
    assert_eq!(got.dims().to_vec(), expected.0, "shape");
    let got = got.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    // NaN-safe and length-checked: panics on either.
    svgen_core::compare::max_abs_diff(&got, &expected.1)
        .unwrap_or_else(|e| panic!("{e}"))
        .value as f32
}

fn unet() -> UNet2DConditionModel<B> {
    UNet2DConditionModel::from_pretrained(tiny().join("unet"), &Default::default())
        .expect("unet loads")
}

fn check_unet(model: &UNet2DConditionModel<B>, r: &Reference, suffix: &str, t_key: &str) -> f32 {
    let out = model.forward(
        r.t(&format!("sample{suffix}")),
        r.t(t_key),
        r.t(&format!("encoder_hidden_states{suffix}")),
    );
    max_abs_diff(out, &r.host(&format!("unet_out{suffix}")))
}

#[test]
fn unet_noise_prediction_matches_diffusers() {
    let (model, r) = (unet(), Reference::load());
    // integer timesteps 999 and 1 (int64 in the file, as the parity contract has them)
    let d = check_unet(&model, &r, "", "timestep");
    println!("unet_out max abs diff {d:e}");
    assert!(d <= TOL, "unet_out: {d} > {TOL}");
}

#[test]
fn unet_fractional_timesteps_and_other_latent_sizes_match_diffusers() {
    let (model, r) = (unet(), Reference::load());
    // Euler passes fractional timesteps
    let out = model.forward(
        r.t("sample"),
        r.t("timestep_float"),
        r.t("encoder_hidden_states"),
    );
    let d = max_abs_diff(out, &r.host("unet_out_float"));
    println!("unet_out_float max abs diff {d:e}");
    assert!(d <= TOL, "unet_out_float: {d}");
    // non-square latents, a 5-token context
    let d = check_unet(&model, &r, "_rect", "timestep_rect");
    println!("unet_out_rect max abs diff {d:e}");
    assert!(d <= TOL, "unet_out_rect: {d}");
    // 6x10 latents (not multiples of 4: up path resizes to the skip sizes), one timestep for
    // the whole batch
    let d = check_unet(&model, &r, "_odd", "timestep_odd");
    println!("unet_out_odd max abs diff {d:e}");
    assert!(d <= TOL, "unet_out_odd: {d}");
}

#[test]
fn unet_with_linear_projections_and_per_block_lists_matches_diffusers() {
    // SD2-style options: linear proj_in/proj_out, per-block heads / layers / transformer depths,
    // [sin, cos] timestep embedding with freq_shift 1, mid_block_scale_factor 1.5
    let dir = sd_fixture().join("unet-linear");
    let model = UNet2DConditionModel::<B>::from_pretrained(&dir, &Default::default())
        .expect("unet-linear loads");
    assert!(model.config().use_linear_projection);
    assert_eq!(model.config().heads_per_block().unwrap(), vec![2, 4]);
    let r = Reference(read_safetensors(dir.join("reference.safetensors")).unwrap());
    let d = check_unet(&model, &r, "", "timestep");
    println!("unet-linear max abs diff {d:e}");
    assert!(d <= TOL, "unet-linear: {d}");
}

#[test]
fn sliced_attention_equals_full_attention() {
    let r = Reference::load();
    let mut model = unet();
    let full = model.forward(r.t("sample"), r.t("timestep"), r.t("encoder_hidden_states"));
    let full = (
        full.dims().to_vec(),
        full.into_data().convert::<f32>().into_vec::<f32>().unwrap(),
    );
    // 5 does not divide the 64 / 16 / 4 query positions: ragged last chunk at every level
    for slice in [Some(5), Some(1), Some(64)] {
        model.set_attention_slice(slice);
        let sliced = model.forward(r.t("sample"), r.t("timestep"), r.t("encoder_hidden_states"));
        let d = max_abs_diff(sliced, &full);
        println!("slice {slice:?}: max abs diff to full {d:e}");
        assert!(d <= 1e-5, "slice {slice:?}: {d}");
    }
    model.set_attention_slice(None);
    let again = model.forward(r.t("sample"), r.t("timestep"), r.t("encoder_hidden_states"));
    assert_eq!(max_abs_diff(again, &full), 0.0);
}

#[test]
fn attention_linears_have_diffusers_paths() {
    let mut model = unet();
    let cfg = model.config().clone();
    assert_eq!(cfg.block_out_channels, vec![16, 32, 32]);
    assert_eq!(cfg.heads_per_block().unwrap(), vec![4, 4, 4]);
    let paths: Vec<(String, usize, usize)> = model
        .attention_linears_mut()
        .into_iter()
        .map(|(p, l)| (p, l.in_features(), l.out_features()))
        .collect();
    // 2 down + 1 mid + 4 up transformers, attn1 + attn2 each, 4 projections each
    assert_eq!(paths.len(), 7 * 2 * 4);
    let find = |p: &str| {
        paths
            .iter()
            .find(|(q, _, _)| q == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    assert_eq!(
        find("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q").1,
        16
    );
    // cross-attention keys come from the 32-wide text states
    let k = find("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k");
    assert_eq!((k.1, k.2), (32, 16));
    find("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0");
    find("up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_v");
    assert!(paths.iter().all(|(p, _, _)| !p.starts_with("up_blocks.0.")));
    // to_out.0 carries its bias
    let mut model = model;
    for (p, lin) in model.attention_linears_mut() {
        assert_eq!(lin.bias.is_some(), p.ends_with("to_out.0"), "{p}");
    }
}

#[test]
fn vae_encode_latent_mean_matches_diffusers() {
    let vae = AutoencoderKL::<B>::from_pretrained(tiny().join("vae"), &Default::default())
        .expect("vae loads");
    let r = Reference::load();
    let dist = vae.encode(r.t("image"));
    let d = max_abs_diff(dist.mean.clone(), &r.host("vae_latent_mean"));
    println!("vae_latent_mean max abs diff {d:e}");
    assert!(d <= TOL, "vae_latent_mean: {d}");
    let d = max_abs_diff(dist.logvar.clone(), &r.host("vae_latent_logvar"));
    println!("vae_latent_logvar max abs diff {d:e}");
    assert!(d <= TOL, "vae_latent_logvar: {d}");
    // sample = mean + exp(logvar / 2) * noise
    let noise = Tensor::<B, 4>::ones(dist.mean.dims(), &Default::default());
    let s = dist.sample(noise);
    let expected = dist.mean.clone() + dist.logvar.clone().mul_scalar(0.5).exp();
    let expected = (
        expected.dims().to_vec(),
        expected.into_data().to_vec::<f32>().unwrap(),
    );
    assert!(max_abs_diff(s, &expected) < 1e-6);
    assert_eq!(vae.config().scaling_factor, 0.18215);
    assert_eq!(vae.config().downscale_factor(), 8);
}

#[test]
fn vae_decode_matches_diffusers() {
    let vae = AutoencoderKL::<B>::from_pretrained(tiny().join("vae"), &Default::default())
        .expect("vae loads");
    let r = Reference::load();
    let d = max_abs_diff(vae.decode(r.t("latents")), &r.host("vae_decoded"));
    println!("vae_decoded max abs diff {d:e}");
    assert!(d <= TOL, "vae_decoded: {d}");
}

/// A copy of the fixture's `unet/` folder in a temp dir, with `edit` applied to its tensors and
/// `edit_cfg` to its config.
fn edited_unet(
    edit: impl FnOnce(&mut BTreeMap<String, HostTensor>),
    edit_cfg: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny().join("unet");
    let mut tensors = read_safetensors(src.join("diffusion_pytorch_model.safetensors")).unwrap();
    edit(&mut tensors);
    write_safetensors(
        dir.path().join("diffusion_pytorch_model.safetensors"),
        &tensors,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_cfg(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn load_err(dir: &Path) -> TrainError {
    UNet2DConditionModel::<B>::from_pretrained(dir, &Default::default())
        .expect_err("load must fail")
}

#[test]
fn missing_unet_folder_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    match load_err(&dir.path().join("unet")) {
        TrainError::MissingFolder { name, path } => {
            assert_eq!(name, "unet");
            assert_eq!(path, dir.path());
        }
        e => panic!("unexpected {e}"),
    }
    match AutoencoderKL::<B>::from_pretrained(dir.path().join("vae"), &Default::default()) {
        Err(TrainError::MissingFolder { name, .. }) => assert_eq!(name, "vae"),
        other => panic!("unexpected {:?}", other.err()),
    }
    // folder present, weights absent
    std::fs::create_dir(dir.path().join("unet")).unwrap();
    std::fs::copy(
        tiny().join("unet/config.json"),
        dir.path().join("unet/config.json"),
    )
    .unwrap();
    let e = load_err(&dir.path().join("unet"));
    assert!(matches!(e, TrainError::Io { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{e}"
    );
}

#[test]
fn wrong_shaped_tensor_names_the_key() {
    let key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let dir = edited_unet(
        |t| {
            let w = t.get_mut(key).unwrap();
            assert_eq!(w.shape, vec![32, 32]);
            w.shape = vec![32, 16];
            if let svgen_train::HostData::F32(v) = &mut w.data {
                v.truncate(32 * 16);
            }
        },
        |_| {},
    );
    match load_err(dir.path()) {
        TrainError::ShapeMismatch {
            key: k,
            expected,
            found,
        } => {
            assert_eq!(k, key);
            assert_eq!(expected, vec![32, 32]);
            assert_eq!(found, vec![32, 16]);
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn missing_tensor_names_the_key() {
    let key = "up_blocks.1.resnets.1.conv_shortcut.weight";
    let dir = edited_unet(
        |t| {
            t.remove(key).expect("fixture has the key");
        },
        |_| {},
    );
    let e = load_err(dir.path());
    assert!(
        matches!(&e, TrainError::MissingTensor { key: k, .. } if k == key),
        "{e}"
    );
}

#[test]
fn unsupported_config_values_name_key_and_value() {
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "down_block_types",
            serde_json::json!([
                "CrossAttnDownBlock2D",
                "SimpleCrossAttnDownBlock2D",
                "DownBlock2D"
            ]),
            "SimpleCrossAttnDownBlock2D",
        ),
        (
            "mid_block_type",
            serde_json::json!("UNetMidBlock2DSimpleCrossAttn"),
            "UNetMidBlock2DSimpleCrossAttn",
        ),
        (
            "addition_embed_type",
            serde_json::json!("text_time"),
            "text_time",
        ),
        (
            "resnet_time_scale_shift",
            serde_json::json!("scale_shift"),
            "scale_shift",
        ),
        ("attention_head_dim", serde_json::json!([4, 4]), "[4, 4]"),
    ];
    for (key, value, shown) in cases {
        let dir = edited_unet(|_| {}, |c| c[key] = value.clone());
        match load_err(dir.path()) {
            TrainError::UnsupportedValue { key: k, value: v } => {
                assert_eq!(k, key);
                assert!(v.contains(shown), "{key}: {v}");
            }
            e => panic!("{key}: unexpected {e}"),
        }
    }
    // the same check on the parsed config
    let e = UNet2DConditionConfig::from_json_str(r#"{"act_fn": "gelu"}"#).unwrap_err();
    assert!(
        e.to_string().contains("act_fn") && e.to_string().contains("gelu"),
        "{e}"
    );
}

#[test]
fn inconsistent_input_shapes_are_typed_errors() {
    let model = unet();
    let d = Default::default();
    let ok = model.try_forward(
        Tensor::zeros([2, 4, 8, 8], &d),
        Tensor::from_floats([10.0], &d),
        Tensor::zeros([2, 3, 32], &d),
    );
    assert_eq!(ok.unwrap().dims(), [2, 4, 8, 8]);
    let cases: [([usize; 4], usize, [usize; 3], &str); 4] = [
        ([2, 3, 8, 8], 2, [2, 7, 32], "`sample`"),
        ([2, 4, 8, 8], 3, [2, 7, 32], "`timestep`"),
        ([2, 4, 8, 8], 2, [2, 7, 16], "`encoder_hidden_states`"),
        ([2, 4, 8, 8], 2, [1, 7, 32], "`encoder_hidden_states`"),
    ];
    for (s, t, c, what) in cases {
        let e = model
            .try_forward(
                Tensor::zeros(s, &d),
                Tensor::zeros([t], &d),
                Tensor::zeros(c, &d),
            )
            .expect_err("inconsistent shapes");
        assert!(
            matches!(&e, TrainError::InvalidArgument(m) if m.contains(what)),
            "{what}: {e}"
        );
    }
    let vae = AutoencoderKL::<B>::from_pretrained(tiny().join("vae"), &d).expect("vae loads");
    assert!(vae.try_decode(Tensor::zeros([1, 3, 8, 8], &d)).is_err());
    assert!(vae.try_encode(Tensor::zeros([1, 4, 64, 64], &d)).is_err());
    assert_eq!(
        vae.try_decode(Tensor::zeros([1, 4, 2, 3], &d))
            .unwrap()
            .dims(),
        [1, 3, 16, 24]
    );
}

#[test]
fn leftover_tensor_is_a_typed_error() {
    // the file has a second resnet in down block 2 that `layers_per_block: 1` has no place for
    let key = "down_blocks.2.resnets.1.conv1.weight";
    let dir = edited_unet(
        |t| {
            let w = t["down_blocks.2.resnets.0.conv1.weight"].clone();
            t.insert(key.into(), w);
        },
        |_| {},
    );
    let e = load_err(dir.path());
    assert!(
        matches!(&e, TrainError::UnexpectedTensor { key: k, .. } if k == key),
        "{e}"
    );
}

#[test]
fn vae_with_legacy_attention_names_loads_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny().join("vae");
    let mut tensors = read_safetensors(src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut renamed = 0;
    for (new, old) in [
        ("to_q", "query"),
        ("to_k", "key"),
        ("to_v", "value"),
        ("to_out.0", "proj_attn"),
    ] {
        for part in ["encoder", "decoder"] {
            for p in ["weight", "bias"] {
                let k = format!("{part}.mid_block.attentions.0.{new}.{p}");
                let t = tensors.remove(&k).expect("fixture key");
                tensors.insert(format!("{part}.mid_block.attentions.0.{old}.{p}"), t);
                renamed += 1;
            }
        }
    }
    assert_eq!(renamed, 16);
    write_safetensors(
        dir.path().join("diffusion_pytorch_model.safetensors"),
        &tensors,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let vae = AutoencoderKL::<B>::from_pretrained(dir.path(), &Default::default())
        .expect("legacy names load");
    let r = Reference::load();
    let d = max_abs_diff(vae.decode(r.t("latents")), &r.host("vae_decoded"));
    assert!(d <= TOL, "legacy vae_decoded: {d}");
}
