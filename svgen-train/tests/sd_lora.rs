//! LoRA for the SD UNet: the three file formats against diffusers' own files
//! (`tools/fixtures/make_sd_lora.py`), saving with diffusers' keys, fusing, typed errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use svgen_core::compare::{assert_close, max_abs_diff, Tolerance};
use svgen_train::nn::lora::LoraLinear;
use svgen_train::sd::lora::{
    add_lora, apply_lora, fuse_lora, lora_state, read_safetensors_metadata, save_lora_weights,
    save_peft_adapter, AttnProjection, LoraFile, LoraFormat, UNetLoraConfig, LORA_METADATA_KEY,
    LORA_WEIGHT_NAME, UNET_PREFIX,
};
use svgen_train::weights::{read_safetensors, write_safetensors, HostTensor, StoreDtype};
use svgen_train::{CpuBackend, TrainError};

type B = CpuBackend;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

/// The attention projections of the tiny UNet, read straight from its weight file.
fn attention_linears() -> Vec<(String, LoraLinear<B>)> {
    let device = Default::default();
    let w = read_safetensors(fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let mut out = Vec::new();
    for (key, t) in w {
        let Some(path) = key.strip_suffix(".weight") else {
            continue;
        };
        if AttnProjection::of_path(path).is_none() {
            continue;
        }
        let (o, i) = (t.shape[0], t.shape[1]);
        let data = t.into_f32(&key).unwrap();
        let mut tr = vec![0.0; data.len()];
        for r in 0..o {
            for c in 0..i {
                tr[c * o + r] = data[r * i + c];
            }
        }
        let weight = Param::from_tensor(Tensor::<B, 2>::from_data(
            TensorData::new(tr, [i, o]),
            &device,
        ));
        out.push((path.to_string(), LoraLinear::new(weight)));
    }
    out
}

fn refs(v: &mut [(String, LoraLinear<B>)]) -> Vec<(String, &mut LoraLinear<B>)> {
    v.iter_mut().map(|(p, l)| (p.clone(), l)).collect()
}

/// `s·A·B` of every adapter, `[in, out]`, keyed by path.
fn deltas(v: &mut [(String, LoraLinear<B>)]) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for (p, l) in v.iter() {
        if let Some(a) = &l.adapter {
            let d = a.lora_a.val().matmul(a.lora_b.val()).mul_scalar(a.scale);
            out.insert(p.clone(), d.into_data().convert::<f32>().to_vec().unwrap());
        }
    }
    out
}

/// Max |a − b| over all tensors; panics on different keys, lengths or a non-finite value.
fn max_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0.0f64;
    for (k, x) in a {
        let d = max_abs_diff(x, &b[k]).unwrap_or_else(|e| panic!("{k}: {e}"));
        worst = worst.max(d.value);
    }
    worst as f32
}

fn load(file: impl AsRef<Path>) -> (BTreeMap<String, Vec<f32>>, LoraFormat) {
    let mut lin = attention_linears();
    let f = LoraFile::read(file).unwrap();
    let report = apply_lora(refs(&mut lin), &f).unwrap();
    assert_eq!(report.modules.len(), lin.len());
    (deltas(&mut lin), report.format)
}

#[test]
fn every_format_gives_the_same_adapters() {
    let fx = fixtures();
    let (reference, fmt) = load(fx.join("lora_diffusers"));
    assert_eq!(fmt, LoraFormat::Peft);
    assert!(!reference.is_empty());
    for (name, want) in [
        (
            "lora_diffusers/pytorch_lora_weights.safetensors",
            LoraFormat::Peft,
        ),
        ("lora_diffusers_old.safetensors", LoraFormat::Diffusers),
        ("lora_kohya.safetensors", LoraFormat::Kohya),
        ("lora_peft", LoraFormat::Peft),
        ("lora_peft_bare.safetensors", LoraFormat::Peft),
    ] {
        let (d, fmt) = load(fx.join(name));
        assert_eq!(fmt, want, "{name}");
        let diff = max_diff(&reference, &d);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}

#[test]
fn attention_processor_form_is_read() {
    // diffusers < 0.17 wrote `<attn>.processor.to_q_lora.down.weight`.
    let fx = fixtures();
    let old = read_safetensors(fx.join("lora_diffusers_old.safetensors")).unwrap();
    let mut renamed = BTreeMap::new();
    for (k, t) in old {
        let k = k.strip_prefix("unet.").unwrap();
        let (module, half) = k.rsplit_once(".lora.").unwrap();
        let (attn, proj) = module.rsplit_once(".to_").unwrap();
        let proj = if proj == "out.0" { "out" } else { proj };
        renamed.insert(format!("{attn}.processor.to_{proj}_lora.{half}"), t);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("attn_procs.safetensors");
    write_safetensors(&p, &renamed, StoreDtype::F32, None).unwrap();
    let (reference, _) = load(fx.join("lora_diffusers_old.safetensors"));
    let (d, fmt) = load(&p);
    assert_eq!(fmt, LoraFormat::Diffusers);
    assert!(max_diff(&reference, &d) == 0.0);
}

#[test]
fn scale_comes_from_metadata_and_alpha() {
    let fx = fixtures();
    let f = LoraFile::read(fx.join("lora_diffusers")).unwrap();
    let s = f.scaling.unwrap();
    assert_eq!((s.r, s.lora_alpha, s.use_rslora), (4, 8.0, false));
    let f = LoraFile::read(fx.join("lora_kohya.safetensors")).unwrap();
    assert!(f.scaling.is_none());
    assert!(f.modules.values().all(|m| m.alpha == Some(8.0)));
    let mut lin = attention_linears();
    apply_lora(refs(&mut lin), &f).unwrap();
    assert!(lin
        .iter()
        .all(|(_, l)| l.adapter.as_ref().unwrap().scale == 2.0));
    // The old form carries no alpha: scale 1 (diffusers' convention alpha = r).
    let f = LoraFile::read(fx.join("lora_diffusers_old.safetensors")).unwrap();
    let mut lin = attention_linears();
    apply_lora(refs(&mut lin), &f).unwrap();
    assert!(lin
        .iter()
        .all(|(_, l)| l.adapter.as_ref().unwrap().scale == 1.0));
}

fn cfg() -> UNetLoraConfig {
    UNetLoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..UNetLoraConfig::default()
    }
}

#[test]
fn saved_file_has_diffusers_keys_and_round_trips() {
    let fx = fixtures();
    let oracle_path = fx.join("lora_diffusers").join(LORA_WEIGHT_NAME);
    let oracle = read_safetensors(&oracle_path).unwrap();
    let mut lin = attention_linears();
    apply_lora(
        refs(&mut lin),
        &LoraFile::read(fx.join("lora_kohya.safetensors")).unwrap(),
    )
    .unwrap();
    let before = deltas(&mut lin);
    let dir = tempfile::tempdir().unwrap();
    let written = save_lora_weights(&refs(&mut lin), &cfg(), dir.path()).unwrap();
    assert_eq!(written, dir.path().join(LORA_WEIGHT_NAME));
    let ours = read_safetensors(&written).unwrap();
    let shapes = |m: &BTreeMap<String, HostTensor>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shapes(&ours), shapes(&oracle));
    // Same values too: the kohya file holds the same weights as diffusers' file.
    for (k, t) in &ours {
        let (a, b) = (
            t.clone().into_f32(k).unwrap(),
            oracle[k].clone().into_f32(k).unwrap(),
        );
        assert_close(k, &a, &b, Tolerance::absolute(1e-6));
    }
    // Metadata: diffusers' header with the unet-prefixed PEFT config.
    let meta = read_safetensors_metadata(&written).unwrap();
    let oracle_meta = read_safetensors_metadata(&oracle_path).unwrap();
    assert_eq!(meta.get("format"), oracle_meta.get("format"));
    let parse = |m: &std::collections::HashMap<String, String>| -> serde_json::Value {
        serde_json::from_str(&m[LORA_METADATA_KEY]).unwrap()
    };
    let (ours_m, oracle_m) = (parse(&meta), parse(&oracle_meta));
    for k in [
        "unet.r",
        "unet.lora_alpha",
        "unet.use_rslora",
        "unet.peft_type",
    ] {
        assert_eq!(
            ours_m[k].as_f64().or(ours_m[k].as_bool().map(f64::from)),
            oracle_m[k]
                .as_f64()
                .or(oracle_m[k].as_bool().map(f64::from)),
            "{k}"
        );
        assert_eq!(ours_m[k].as_str(), oracle_m[k].as_str(), "{k}");
    }
    let targets = |v: &serde_json::Value| {
        let mut t: Vec<String> = v["unet.target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    assert_eq!(targets(&ours_m), targets(&oracle_m));
    // Round trip.
    let (after, fmt) = load(dir.path());
    assert_eq!(fmt, LoraFormat::Peft);
    assert!(max_diff(&before, &after) < 1e-6);
    // PEFT folder round trip, with the oracle's keys.
    let peft = dir.path().join("peft");
    save_peft_adapter(&refs(&mut lin), &cfg(), &peft, Some("tiny-sd")).unwrap();
    let keys: Vec<String> = read_safetensors(peft.join("adapter_model.safetensors"))
        .unwrap()
        .into_keys()
        .collect();
    let oracle_keys: Vec<String> = read_safetensors(fx.join("lora_peft/adapter_model.safetensors"))
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(keys, oracle_keys);
    let (after, _) = load(&peft);
    assert!(max_diff(&before, &after) < 1e-6);
}

#[test]
fn differing_scales_are_folded_on_save() {
    let fx = fixtures();
    let mut lin = attention_linears();
    apply_lora(
        refs(&mut lin),
        &LoraFile::read(fx.join("lora_diffusers_old.safetensors")).unwrap(),
    )
    .unwrap();
    let before = deltas(&mut lin);
    let dir = tempfile::tempdir().unwrap();
    save_lora_weights(&refs(&mut lin), &cfg(), dir.path()).unwrap();
    let (after, _) = load(dir.path());
    assert!(max_diff(&before, &after) < 1e-6);
}

#[test]
fn fresh_adapters_start_at_zero_and_fuse() {
    let mut lin = attention_linears();
    let cross_only = UNetLoraConfig {
        module_filter: vec!["attn2".into()],
        target_modules: [AttnProjection::ToK, AttnProjection::ToV].into(),
        ..cfg()
    };
    let n = add_lora(refs(&mut lin), &cross_only, 3).unwrap();
    assert_eq!(
        n,
        lin.iter()
            .filter(|(p, _)| p.contains("attn2") && (p.ends_with("to_k") || p.ends_with("to_v")))
            .count()
    );
    let d = deltas(&mut lin);
    assert!(d.values().flatten().all(|&x| x == 0.0));
    // Load real weights, fuse, and compare W + delta.
    let mut lin = attention_linears();
    let base: Vec<Vec<f32>> = lin
        .iter()
        .map(|(_, l)| l.weight.val().into_data().to_vec().unwrap())
        .collect();
    apply_lora(
        refs(&mut lin),
        &LoraFile::read(fixtures().join("lora_kohya.safetensors")).unwrap(),
    )
    .unwrap();
    let d = deltas(&mut lin);
    assert_eq!(fuse_lora(refs(&mut lin)), lin.len());
    for ((p, l), w0) in lin.iter().zip(&base) {
        assert!(l.adapter.is_none());
        let w: Vec<f32> = l.weight.val().into_data().to_vec().unwrap();
        assert_eq!(w0.len(), d[p].len(), "{p}: delta length");
        let fused: Vec<f32> = w0.iter().zip(&d[p]).map(|(w0, d)| w0 + d).collect();
        assert_close(p, &w, &fused, Tolerance::absolute(1e-6));
    }
    assert!(lora_state(&refs(&mut lin), UNET_PREFIX, None).is_empty());
}

/// Writes `tensors` (a modified copy of the kohya fixture) to a temp file and loads it.
fn load_modified(edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) -> Result<(), TrainError> {
    let mut t = read_safetensors(fixtures().join("lora_kohya.safetensors")).unwrap();
    edit(&mut t);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lora.safetensors");
    write_safetensors(&p, &t, StoreDtype::F32, None).unwrap();
    let mut lin = attention_linears();
    let f = LoraFile::read(&p)?;
    apply_lora(refs(&mut lin), &f).map(|_| ())
}

const Q: &str = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";

#[test]
fn unknown_key_is_a_typed_error_naming_it() {
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2";
    let bad = format!("{module}.lora_down.weight");
    let err = load_modified(|t| {
        let down = t[&format!("{Q}.lora_down.weight")].clone();
        let up = t[&format!("{Q}.lora_up.weight")].clone();
        t.insert(bad.clone(), down);
        t.insert(format!("{module}.lora_up.weight"), up);
    })
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnexpectedAdapterKey { key } if *key == bad),
        "{err}"
    );
    // Keys that are no LoRA tensor at all.
    let err = load_modified(|t| {
        t.insert("something.else".into(), HostTensor::f32(vec![1], vec![0.0]));
    })
    .unwrap_err();
    assert!(matches!(&err, TrainError::UnexpectedAdapterKey { key } if key == "something.else"));
}

#[test]
fn wrong_shape_is_a_typed_error_naming_the_key() {
    let key = format!("{Q}.lora_up.weight");
    let k2 = key.clone();
    let err = load_modified(move |t| {
        let old = t[&k2].clone();
        let (o, r) = (old.shape[0], old.shape[1]);
        t.insert(k2, HostTensor::f32(vec![o + 1, r], vec![0.0; (o + 1) * r]));
    })
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::ShapeMismatch { key: k, .. } if *k == key),
        "{err}"
    );
}

#[test]
fn missing_half_mixed_formats_and_text_encoder_are_typed_errors() {
    let err = load_modified(|t| {
        t.remove(&format!("{Q}.lora_up.weight"));
    })
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::MissingTensor { key, .. } if key == &format!("{Q}.lora_up.weight")),
        "{err}"
    );
    let te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight";
    let err = load_modified(|t| {
        t.insert(te.into(), HostTensor::f32(vec![4, 32], vec![0.0; 128]));
        t.insert(
            te.replace("lora_down", "lora_up"),
            HostTensor::f32(vec![32, 4], vec![0.0; 128]),
        );
    })
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnsupportedLora { key, reason } if key == te && reason.contains("text-encoder")),
        "{err}"
    );
    let sdxl = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight";
    let err = load_modified(|t| {
        t.insert(sdxl.into(), HostTensor::f32(vec![4, 32], vec![0.0; 128]));
    })
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnsupportedLora { key, .. } if key == sdxl),
        "{err}"
    );
    let mixed = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight";
    let err = load_modified(|t| {
        t.insert(mixed.into(), HostTensor::f32(vec![4, 16], vec![0.0; 64]));
    })
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::UnsupportedLora { key, .. } if key == mixed),
        "{err}"
    );
}

mod unet {
    use super::*;
    use svgen_train::sd::unet::UNet2DConditionModel;

    struct Reference {
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        ehs: Tensor<B, 3>,
        base: Tensor<B, 4>,
        lora: Tensor<B, 4>,
    }

    fn tensor<const D: usize>(r: &BTreeMap<String, HostTensor>, key: &str) -> Tensor<B, D> {
        let t = r[key].clone();
        let shape: [usize; D] = t.shape.clone().try_into().unwrap();
        let data = match t.data {
            svgen_train::HostData::F32(v) => v,
            svgen_train::HostData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
            other => other.into_f32().expect("float data"),
        };
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }

    fn reference() -> Reference {
        let r = read_safetensors(fixtures().join("lora_reference.safetensors")).unwrap();
        Reference {
            sample: tensor(&r, "sample"),
            timestep: tensor(&r, "timestep"),
            ehs: tensor(&r, "encoder_hidden_states"),
            base: tensor(&r, "unet_out_base"),
            lora: tensor(&r, "unet_out_lora"),
        }
    }

    fn base_unet() -> UNet2DConditionModel<B> {
        UNet2DConditionModel::from_pretrained(fixtures().join("tiny-sd/unet"), &Default::default())
            .unwrap()
    }

    /// Max |a − b|; panics on different shapes or a non-finite value.
    fn max_abs<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let host = |t: Tensor<B, D>| t.into_data().into_vec::<f32>().unwrap();
        max_abs_diff(&host(a), &host(b))
            .unwrap_or_else(|e| panic!("{e}"))
            .value as f32
    }

    #[test]
    fn every_format_reproduces_diffusers_output() {
        let r = reference();
        let mut unet = base_unet();
        let out = unet.forward(r.sample.clone(), r.timestep.clone(), r.ehs.clone());
        assert!(max_abs(out, r.base.clone()) <= 1e-4);
        // The LoRA moves the output well beyond the tolerance, so the test can fail.
        assert!(max_abs(r.base.clone(), r.lora.clone()) > 1e-2);
        for name in [
            "lora_diffusers",
            "lora_diffusers_old.safetensors",
            "lora_kohya.safetensors",
            "lora_peft",
            "lora_peft_bare.safetensors",
        ] {
            let report = unet.load_lora(fixtures().join(name)).unwrap();
            assert_eq!(report.modules.len(), unet.attention_linears_mut().len());
            let out = unet.forward(r.sample.clone(), r.timestep.clone(), r.ehs.clone());
            let err = max_abs(out, r.lora.clone());
            eprintln!("{name}: UNet output max abs diff {err:.3e}");
            assert!(err <= 1e-4, "{name}: {err}");
        }
        // Fused: same output, no adapters left.
        assert_eq!(unet.fuse_lora(), unet.attention_linears_mut().len());
        assert_eq!(unet.num_lora_params(), 0);
        let out = unet.forward(r.sample, r.timestep, r.ehs);
        let err = max_abs(out, r.lora);
        assert!(err <= 1e-4, "fused: {err}");
    }

    #[test]
    fn text_encoder_lora_is_fused_into_clip() {
        use burn::tensor::Int;
        use svgen_train::sd::lora::load_lora_with_text_encoder;
        use svgen_train::sd::train::load_text_encoder;
        let rf = read_safetensors(fixtures().join("lora_reference.safetensors")).unwrap();
        let r = reference();
        let (ids, shape) = match rf["te_input_ids"].clone() {
            HostTensor {
                shape,
                data: svgen_train::HostData::I64(v),
            } => (v, shape),
            other => panic!("{other:?}"),
        };
        let ids = || {
            Tensor::<B, 2, Int>::from_data(
                TensorData::new(ids.clone(), [shape[0], shape[1]]),
                &Default::default(),
            )
        };
        let te_dir = fixtures().join("tiny-sd/text_encoder");
        let (te, _) = load_text_encoder::<B>(&te_dir, &Default::default()).unwrap();
        let out = te.forward(ids(), None).unwrap().last_hidden_state;
        let base = tensor::<3>(&rf, "te_out_base");
        let want = tensor::<3>(&rf, "te_out_lora");
        assert!(max_abs(out, base) <= 1e-4);
        for name in ["lora_te_diffusers", "lora_te_kohya.safetensors"] {
            let (mut te, te_cfg) = load_text_encoder::<B>(&te_dir, &Default::default()).unwrap();
            let mut unet = base_unet();
            // The UNet alone refuses the file, naming a text-encoder key.
            let err = unet.load_lora(fixtures().join(name)).unwrap_err();
            assert!(
                matches!(&err, TrainError::UnsupportedLora { key, .. } if key.contains("te") || key.starts_with("text_encoder.")),
                "{err}"
            );
            let (report, n) =
                load_lora_with_text_encoder(&mut unet, &mut te, &te_cfg, fixtures().join(name))
                    .unwrap();
            assert_eq!(n, 12, "{name}");
            assert_eq!(report.modules.len(), 56);
            let out = te.forward(ids(), None).unwrap().last_hidden_state;
            let err = max_abs(out, want.clone());
            eprintln!("{name}: text encoder max abs diff {err:.3e}");
            assert!(err <= 1e-4, "{name}: text encoder {err}");
            let out = unet.forward(r.sample.clone(), r.timestep.clone(), r.ehs.clone());
            let err = max_abs(out, r.lora.clone());
            assert!(err <= 1e-4, "{name}: unet {err}");
        }
    }

    #[test]
    fn saved_unet_lora_round_trips_through_the_model() {
        let r = reference();
        let mut unet = base_unet();
        unet.load_lora(fixtures().join("lora_kohya.safetensors"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        unet.save_lora_weights(&cfg(), dir.path()).unwrap();
        let mut fresh = base_unet();
        fresh.load_lora(dir.path()).unwrap();
        assert_eq!(fresh.lora_state(), unet.lora_state());
        let err = max_abs(fresh.forward(r.sample, r.timestep, r.ehs), r.lora);
        assert!(err <= 1e-4, "{err}");
    }
}
