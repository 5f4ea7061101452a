//! Scheduler parity with diffusers (fixtures from `tools/fixtures/make_sd_schedulers.py`): DDIM, Euler,
//! Euler ancestral and DPM-Solver++ 2M, configured from Stable Diffusion 1.5's `scheduler_config.json`
//! and variants (v-prediction + trailing, linspace with 7 steps, leading + cosine betas + Heun 2M,
//! Karras sigmas). Timesteps must be equal (Karras Euler's fractional ones within 1e-5); sigmas, `init_noise_sigma`, `scale_model_input` and every step output
//! within 1e-5 (relative to max(1, |value|), i.e. `f32` rounding for values above 1).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use serde_json::Value;
use svgen_core::compare::{assert_close, Tolerance};
use svgen_train::sd::scheduler::{add_noise, velocity, Scheduler, SchedulerConfig, SchedulerKind};
use svgen_train::weights::{read_safetensors, HostTensor};
use svgen_train::{CpuBackend, TrainError};

type B = CpuBackend;

const TOL: f64 = 1e-5;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/schedulers")
}

fn kind_of(key: &str) -> SchedulerKind {
    match key {
        "ddim" => SchedulerKind::Ddim,
        "euler" => SchedulerKind::Euler,
        "euler_a" => SchedulerKind::EulerAncestral,
        "dpmpp_2m" => SchedulerKind::DpmSolverMultistep,
        other => panic!("unknown scheduler key {other} in cases.json"),
    }
}

fn f32s(t: &mut BTreeMap<String, HostTensor>, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = t
        .remove(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"));
    let shape = t.shape.clone();
    (shape, t.into_f32(key).expect("float tensor"))
}

fn tensor(t: &mut BTreeMap<String, HostTensor>, key: &str) -> Tensor<B, 4> {
    let (shape, v) = f32s(t, key);
    let shape: [usize; 4] = shape.try_into().expect("4-D fixture tensor");
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("f32 tensor")
}

/// Panics unless max |a−b| / max(1, |b|) ≤ `TOL` (NaN and length checked).
fn assert_rel(what: &str, a: &[f32], b: &[f32]) {
    assert_close(what, a, b, Tolerance::relative(TOL));
}

#[test]
fn schedulers_match_diffusers() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let cfg = SchedulerConfig::from_json(&case["config"]).expect("config parses");
        for key in cases["schedulers"].as_array().unwrap() {
            let key = key.as_str().unwrap();
            let label = format!("{name}/{key}");
            let mut fx = read_safetensors(dir().join(format!("{name}_{key}.safetensors"))).unwrap();
            let mut s =
                Scheduler::from_config(kind_of(key), cfg.clone()).expect("scheduler builds");
            s.set_timesteps(steps).unwrap();

            let (_, ac) = f32s(&mut fx, "alphas_cumprod");
            // Bit-identical: torch's float32 linspace (fused multiply-add) and double-accumulated cumprod.
            assert_eq!(s.alphas_cumprod(), &ac[..], "{label}: alphas_cumprod");

            let (_, ts) = f32s(&mut fx, "timesteps");
            let ours: Vec<f32> = s.timesteps().iter().map(|&t| t as f32).collect();
            if ts.iter().all(|t| t.fract() == 0.0 || t.fract() == 0.5) {
                assert_eq!(ours, ts, "{label}: timesteps");
            } else {
                // Karras-sigma Euler timesteps are log-σ interpolations (np.log in float32): f32 ulps.
                assert_rel(&format!("{label}: timesteps"), &ours, &ts);
            }

            if key != "ddim" {
                let (_, sigmas) = f32s(&mut fx, "sigmas");
                assert_rel(&format!("{label}: sigmas"), s.sigmas(), &sigmas);
            }
            let (_, init) = f32s(&mut fx, "init_noise_sigma");
            assert_rel(
                &format!("{label}: init_noise_sigma"),
                &[s.init_noise_sigma() as f32],
                &init,
            );

            let mut sample = tensor(&mut fx, "sample_0");
            for i in 0..steps {
                let model_output = tensor(&mut fx, &format!("model_output_{i}"));
                let noise = (key == "euler_a").then(|| tensor(&mut fx, &format!("noise_{i}")));
                let scaled = values(s.scale_model_input(sample.clone(), i).unwrap());
                let want_scaled = if key.starts_with("euler") {
                    f32s(&mut fx, &format!("scaled_{i}")).1
                } else {
                    values(sample.clone())
                };
                assert_rel(
                    &format!("{label} step {i}: scale_model_input"),
                    &scaled,
                    &want_scaled,
                );
                let prev = values(s.step(model_output, i, sample, noise).unwrap());
                let want = tensor(&mut fx, &format!("prev_{i}"));
                assert_rel(
                    &format!("{label} step {i}: step output"),
                    &prev,
                    &values(want.clone()),
                );
                // The next step runs on diffusers' output, as the fixture's chain did.
                sample = want;
                checked += 1;
            }
        }
    }
    assert!(checked >= 4 * 10, "only {checked} steps compared");
}

#[test]
fn add_noise_matches_ddpm() {
    let mut fx = read_safetensors(dir().join("add_noise.safetensors")).unwrap();
    let cfg = SchedulerConfig::from_file(dir().join("scheduler_config.json")).unwrap();
    let ts: Vec<usize> = fx
        .remove("timesteps")
        .unwrap()
        .into_i64("timesteps")
        .unwrap()
        .into_iter()
        .map(|t| t as usize)
        .collect();
    let original = tensor(&mut fx, "original");
    let noise = tensor(&mut fx, "noise");
    let noisy = values(add_noise(&cfg, original.clone(), noise.clone(), &ts).unwrap());
    let (_, want) = f32s(&mut fx, "noisy");
    assert_rel("add_noise", &noisy, &want);
    let v = values(velocity(&cfg, original, noise, &ts).unwrap());
    let (_, want) = f32s(&mut fx, "velocity");
    assert_rel("velocity", &v, &want);
}

#[test]
fn add_noise_rejects_bad_input() {
    let cfg = SchedulerConfig::stable_diffusion_v1_5();
    let d = Default::default();
    let x = Tensor::<B, 4>::zeros([2, 4, 2, 2], &d);
    let err = add_noise(&cfg, x.clone(), x.clone(), &[1]).unwrap_err();
    assert!(
        matches!(err, TrainError::ShapeMismatch { ref key, .. } if key == "timesteps"),
        "{err}"
    );
    let err = add_noise(&cfg, x.clone(), x.clone(), &[1, 1000]).unwrap_err();
    assert!(err.to_string().contains("1000"), "{err}");
    let other = Tensor::<B, 4>::zeros([2, 4, 2, 3], &d);
    let err = add_noise(&cfg, x, other, &[1, 2]).unwrap_err();
    assert!(
        matches!(err, TrainError::ShapeMismatch { ref key, .. } if key == "noise"),
        "{err}"
    );
}

#[test]
fn from_pretrained_reads_class_name_and_override() {
    // SD1.5's folder names PNDMScheduler: not implemented, but usable with an explicit kind.
    let err = Scheduler::from_pretrained(dir(), None).unwrap_err();
    assert!(
        matches!(err, TrainError::UnknownScheduler(ref n) if n == "PNDMScheduler"),
        "{err}"
    );
    let mut s = Scheduler::from_pretrained(dir(), Some(SchedulerKind::Euler)).unwrap();
    s.set_timesteps(10).unwrap();
    assert_eq!(s.kind(), SchedulerKind::Euler);
    assert_eq!(s.timesteps()[0], 999.0);

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("scheduler_config.json"),
        r#"{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012}"#,
    )
    .unwrap();
    let s = Scheduler::from_pretrained(tmp.path(), None).unwrap();
    assert_eq!(s.kind(), SchedulerKind::DpmSolverMultistep);

    // The tiny pipeline folder ships a DDIMScheduler config.
    let tiny = dir().join("../tiny-sd/scheduler");
    let s = Scheduler::from_pretrained(&tiny, None).unwrap();
    assert_eq!(s.kind(), SchedulerKind::Ddim);

    let err = Scheduler::from_pretrained(tmp.path().join("nope"), None).unwrap_err();
    assert!(matches!(err, TrainError::MissingFolder { .. }), "{err}");
}

#[test]
fn bad_config_values_are_named() {
    for (json, needle) in [
        (r#"{"beta_schedule": "sigmoid"}"#, "sigmoid"),
        (
            r#"{"prediction_type": "flow_prediction"}"#,
            "flow_prediction",
        ),
        (r#"{"timestep_spacing": "middle"}"#, "middle"),
        (r#"{"num_train_timesteps": "many"}"#, "many"),
        (r#"{"num_train_timesteps": 1000000000000}"#, "1000000000000"),
        (r#"{"beta_end": 1.5}"#, "1.5"),
    ] {
        let err = SchedulerConfig::from_json(&serde_json::from_str(json).unwrap()).unwrap_err();
        assert!(err.to_string().contains(needle), "{json}: {err}");
    }
    let cfg = SchedulerConfig::from_json(&serde_json::json!({
        "algorithm_type": "sde-dpmsolver++", "use_exponential_sigmas": true
    }))
    .unwrap();
    let err = Scheduler::from_config(SchedulerKind::DpmSolverMultistep, cfg.clone()).unwrap_err();
    assert!(err.to_string().contains("use_exponential_sigmas"), "{err}");
    // DDIM ignores DPM-only keys, as diffusers' from_config does.
    Scheduler::from_config(SchedulerKind::Ddim, cfg).unwrap();
    let cfg =
        SchedulerConfig::from_json(&serde_json::json!({"algorithm_type": "dpmsolver"})).unwrap();
    let err = Scheduler::from_config(SchedulerKind::DpmSolverMultistep, cfg).unwrap_err();
    assert!(err.to_string().contains("dpmsolver"), "{err}");
    let err: TrainError = "heun".parse::<SchedulerKind>().unwrap_err();
    assert!(
        matches!(err, TrainError::UnknownScheduler(ref n) if n == "heun"),
        "{err}"
    );
}

#[test]
fn step_misuse_is_an_error() {
    let d = Default::default();
    let x = Tensor::<B, 4>::zeros([1, 4, 2, 2], &d);
    let mut s = Scheduler::from_config(
        SchedulerKind::EulerAncestral,
        SchedulerConfig::stable_diffusion_v1_5(),
    )
    .unwrap();
    assert!(
        s.step(x.clone(), 0, x.clone(), None).is_err(),
        "before set_timesteps"
    );
    s.set_timesteps(5).unwrap();
    assert!(
        s.step(x.clone(), 5, x.clone(), Some(x.clone())).is_err(),
        "index out of range"
    );
    assert!(
        s.step(x.clone(), 0, x.clone(), None).is_err(),
        "Euler a without noise"
    );
    let wrong = Tensor::<B, 4>::zeros([1, 4, 2, 3], &d);
    assert!(matches!(
        s.step(wrong, 0, x.clone(), Some(x.clone())),
        Err(TrainError::ShapeMismatch { .. })
    ));
    assert!(s.set_timesteps(0).is_err());
    assert!(s.set_timesteps(1001).is_err());

    let mut dpm = Scheduler::from_config(
        SchedulerKind::DpmSolverMultistep,
        SchedulerConfig::stable_diffusion_v1_5(),
    )
    .unwrap();
    dpm.set_timesteps(5).unwrap();
    dpm.step(x.clone(), 0, x.clone(), None).unwrap();
    let err = dpm.step(x.clone(), 2, x.clone(), None).unwrap_err();
    assert!(err.to_string().contains("order"), "{err}");
}
