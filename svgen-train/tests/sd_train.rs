//! LoRA training of the SD UNet: one step against PyTorch (diffusers UNet + peft, fixture from
//! `tools/fixtures/make_sd_lora.py`), exact resume, typed errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use svgen_core::compare::max_abs_diff;
use svgen_train::sd::lora::UNetLoraConfig;
use svgen_train::sd::scheduler::{PredictionType, SchedulerConfig};
use svgen_train::sd::train::{
    diffusion_loss, lora_gradients, preprocess, ImageCaption, LoraAdamW, SdLoraTrainConfig,
    SdLoraTrainer, SdTrainingModels,
};
use svgen_train::sd::unet::UNet2DConditionModel;
use svgen_train::weights::{read_safetensors, HostData, HostTensor};
use svgen_train::{CpuTrainBackend, TrainError};

type AB = CpuTrainBackend;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn host(r: &BTreeMap<String, HostTensor>, key: &str) -> (Vec<f32>, Vec<usize>) {
    let t = r[key].clone();
    let v = match t.data {
        HostData::F32(v) => v,
        HostData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
        other => other.into_f32().expect("float data"),
    };
    (v, t.shape)
}

fn tensor<const D: usize>(r: &BTreeMap<String, HostTensor>, key: &str) -> Tensor<AB, D> {
    let (v, shape) = host(r, key);
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Max abs difference between one of our `[in, r]` / `[r, out]` matrices and torch's
/// transposed one; panics on a non-finite value or a length mismatch.
fn compare(
    ours: Tensor<<AB as burn::tensor::backend::AutodiffBackend>::InnerBackend, 2>,
    torch: &(Vec<f32>, Vec<usize>),
) -> f32 {
    let [r, c] = ours.dims();
    let v: Vec<f32> = ours.into_data().convert::<f32>().to_vec().unwrap();
    let v = transpose(&v, r, c);
    assert_eq!(torch.1, vec![c, r]);
    max_abs_diff(&v, &torch.0)
        .unwrap_or_else(|e| panic!("{e}"))
        .value as f32
}

fn lora_unet() -> UNet2DConditionModel<AB> {
    let mut unet = UNet2DConditionModel::<AB>::from_pretrained(
        fixtures().join("tiny-sd/unet"),
        &Default::default(),
    )
    .unwrap()
    .no_grad();
    unet.load_lora(fixtures().join("lora_diffusers")).unwrap();
    unet
}

#[test]
fn one_step_matches_pytorch() {
    let r = read_safetensors(fixtures().join("lora_reference.safetensors")).unwrap();
    let sched =
        SchedulerConfig::from_file(fixtures().join("tiny-sd/scheduler/scheduler_config.json"))
            .unwrap();
    let (t, _) = host(&r, "train_timesteps");
    let timesteps: Vec<usize> = t.iter().map(|&x| x as usize).collect();
    for (kind, prediction) in [
        ("epsilon", PredictionType::Epsilon),
        ("v_prediction", PredictionType::VPrediction),
    ] {
        let mut unet = lora_unet();
        let loss = diffusion_loss(
            &unet,
            &sched,
            prediction,
            tensor(&r, "train_latents"),
            tensor(&r, "train_noise"),
            &timesteps,
            tensor(&r, "train_encoder_hidden_states"),
        )
        .unwrap();
        let value: f32 = loss.clone().into_scalar();
        let want = host(&r, &format!("loss_{kind}")).0[0];
        assert!(
            (value - want).abs() <= 1e-4,
            "{kind} loss {value} vs {want}"
        );
        let grads = loss.backward();
        let g = lora_gradients(&unet, &grads);
        assert_eq!(g.len(), 2 * unet.attention_linears_mut().len());
        let mut worst = 0.0f32;
        for (key, ours) in &g {
            let (path, half) = key.rsplit_once('.').unwrap();
            let torch = host(&r, &format!("grad_{kind}.unet.{path}.{half}.weight"));
            worst = worst.max(compare(ours.clone(), &torch));
        }
        eprintln!("{kind}: loss {value} (torch {want}), LoRA gradient max abs diff {worst:.3e}");
        assert!(worst <= 1e-4, "{kind}: LoRA gradient max abs diff {worst}");
        if kind == "epsilon" {
            // One AdamW step as torch.optim.AdamW(lr=1e-3, weight_decay=1e-2).
            let mut opt = LoraAdamW::new((0.9, 0.999), 1e-8, 1e-2);
            opt.step(&mut unet, &g, 1e-3, 1.0, 1);
            let mut worst = 0.0f32;
            for (path, lin) in unet.attention_linears_mut() {
                let a = lin.adapter.as_ref().unwrap();
                for (half, p) in [("lora_A", &a.lora_a), ("lora_B", &a.lora_b)] {
                    let torch = host(&r, &format!("adamw_epsilon.unet.{path}.{half}.weight"));
                    worst = worst.max(compare(p.val().inner(), &torch));
                }
            }
            eprintln!("after one AdamW step: max abs diff {worst:.3e}");
            assert!(worst <= 1e-4, "after AdamW: {worst}");
        }
    }
}

/// Silhouette-like images: a dark disc or square on white, with captions.
fn write_dataset(dir: &Path, n: usize) {
    for i in 0..n {
        let size = 48 + 8 * (i as u32 % 3);
        let img = image::RgbImage::from_fn(size + 8, size, |x, y| {
            let (cx, cy) = (size as i64 / 2 + 4, size as i64 / 2);
            let (dx, dy) = (x as i64 - cx, y as i64 - cy);
            let inside = if i % 2 == 0 {
                dx * dx + dy * dy < (size as i64 / 3).pow(2)
            } else {
                dx.abs() < size as i64 / 4 && dy.abs() < size as i64 / 4
            };
            if inside {
                image::Rgb([20, 20, 20])
            } else {
                image::Rgb([250, 250, 250])
            }
        });
        img.save(dir.join(format!("img{i}.png"))).unwrap();
        let caption = if i % 2 == 0 {
            "a black circle"
        } else {
            "a black square"
        };
        std::fs::write(dir.join(format!("img{i}.txt")), caption).unwrap();
    }
}

fn models() -> SdTrainingModels<AB> {
    SdTrainingModels::from_pretrained(fixtures().join("tiny-sd"), &Default::default()).unwrap()
}

fn lora() -> UNetLoraConfig {
    UNetLoraConfig {
        r: 4,
        lora_alpha: 4.0,
        lora_dropout: 0.1,
        ..UNetLoraConfig::default()
    }
}

fn train_cfg() -> SdLoraTrainConfig {
    SdLoraTrainConfig {
        resolution: 64,
        batch_size: 2,
        grad_accum: 2,
        lr: 1e-3,
        total_steps: 4,
        checkpoint_every: 2,
        seed: 11,
        warmup_steps: 1,
        ..SdLoraTrainConfig::default()
    }
}

#[test]
fn resume_is_bit_identical() {
    let data_dir = tempfile::tempdir().unwrap();
    write_dataset(data_dir.path(), 3);
    let data = ImageCaption::load(data_dir.path()).unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[1].caption, "a black square");

    let straight = tempfile::tempdir().unwrap();
    let mut a = SdLoraTrainer::new(models(), lora(), train_cfg(), straight.path()).unwrap();
    let sa = a.train(&data, None).unwrap();
    assert_eq!(sa.steps, 4);

    let split = tempfile::tempdir().unwrap();
    let mut b = SdLoraTrainer::new(models(), lora(), train_cfg(), split.path()).unwrap();
    let sb = b.train(&data, Some(2)).unwrap();
    assert_eq!(sb.steps, 2);
    let ck = sb.last_checkpoint.unwrap();
    assert!(ck.ends_with("checkpoint-2"));
    drop(b);
    let mut c = SdLoraTrainer::resume(models(), lora(), &ck, train_cfg(), split.path()).unwrap();
    let sc = c.train(&data, None).unwrap();
    assert_eq!(sc.steps, 4);

    let (sa_state, sc_state) = (a.unet().lora_state(), c.unet().lora_state());
    assert!(!sa_state.is_empty());
    assert_eq!(sa_state, sc_state, "adapters differ after resume");
    // Same position and log (throughput aside; the loss went through JSON once).
    let (la, lc) = (&a.state().log, &c.state().log);
    assert_eq!(a.state().micro_batches, c.state().micro_batches);
    assert_eq!(la.len(), lc.len());
    for (x, y) in la.iter().zip(lc) {
        assert_eq!((x.step, x.lr, x.grad_norm), (y.step, y.lr, y.grad_norm));
        assert!((x.loss - y.loss).abs() < 1e-12);
    }
    // The adapters moved, and the checkpoints of both runs agree (tensors, metadata, moments).
    let fresh = SdLoraTrainer::new(models(), lora(), train_cfg(), split.path()).unwrap();
    assert_ne!(fresh.unet().lora_state(), sa_state);
    let file = |d: &Path| d.join("checkpoint-4/pytorch_lora_weights.safetensors");
    let (fa, fc) = (file(straight.path()), file(split.path()));
    assert!(read_safetensors(&fa).unwrap() == read_safetensors(&fc).unwrap());
    assert_eq!(
        svgen_train::sd::lora::read_safetensors_metadata(&fa).unwrap(),
        svgen_train::sd::lora::read_safetensors_metadata(&fc).unwrap()
    );
    let opt = |d: &Path| read_safetensors(d.join("checkpoint-4/optimizer.safetensors")).unwrap();
    assert!(opt(straight.path()) == opt(split.path()));
    assert!(split.path().join("loss_curve.png").is_file());
}

#[test]
fn training_continues_from_a_loaded_lora() {
    let data = ImageCaption::load(fixtures().join("lora_train_data")).unwrap();
    assert_eq!(data.len(), 8);
    let mut models = models();
    models
        .unet
        .load_lora(fixtures().join("lora_kohya.safetensors"))
        .unwrap();
    let before = models.unet.lora_state();
    let lora = UNetLoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..UNetLoraConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let cfg = SdLoraTrainConfig {
        total_steps: 2,
        checkpoint_every: 0,
        ..train_cfg()
    };
    let mut t = SdLoraTrainer::continue_adapters(models, lora.clone(), cfg, out.path()).unwrap();
    let summary = t.train(&data, None).unwrap();
    assert_eq!(summary.steps, 2);
    let after = t.unet().lora_state();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert_ne!(before, after, "the loaded adapters must be trained");
    // A rank the adapters do not have is refused up front.
    let mut models = self::models();
    models
        .unet
        .load_lora(fixtures().join("lora_kohya.safetensors"))
        .unwrap();
    let wrong = UNetLoraConfig { r: 8, ..lora };
    assert!(SdLoraTrainer::continue_adapters(models, wrong, train_cfg(), out.path()).is_err());
}

#[test]
fn uncached_encoding_gives_the_same_step() {
    let data_dir = tempfile::tempdir().unwrap();
    write_dataset(data_dir.path(), 2);
    let data = ImageCaption::load(data_dir.path()).unwrap();
    let cfg = |cache| SdLoraTrainConfig {
        total_steps: 1,
        grad_accum: 1,
        cache,
        ..train_cfg()
    };
    let out = tempfile::tempdir().unwrap();
    let mut a = SdLoraTrainer::new(models(), lora(), cfg(true), out.path()).unwrap();
    let mut b = SdLoraTrainer::new(models(), lora(), cfg(false), out.path()).unwrap();
    let la = a.train(&data, None).unwrap().final_loss.unwrap();
    let lb = b.train(&data, None).unwrap().final_loss.unwrap();
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
}

#[test]
fn diverging_run_is_a_typed_error() {
    let data_dir = tempfile::tempdir().unwrap();
    write_dataset(data_dir.path(), 2);
    let data = ImageCaption::load(data_dir.path()).unwrap();
    let cfg = SdLoraTrainConfig {
        lr: 1e30,
        max_grad_norm: 0.0,
        warmup_steps: 0,
        checkpoint_every: 0,
        total_steps: 6,
        ..train_cfg()
    };
    let out = tempfile::tempdir().unwrap();
    let mut t = SdLoraTrainer::new(models(), lora(), cfg, out.path()).unwrap();
    let err = t.train(&data, None).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFiniteLoss { step, .. } if step > 1),
        "{err}"
    );
}

/// Files are read bounded: a caption or image over its cap is refused from its size, before a
/// byte is read (the files are sparse: `set_len` allocates nothing).
#[test]
fn oversized_caption_and_image_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 1);
    let caption = dir.path().join("img0.txt");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&caption)
        .unwrap()
        .set_len(svgen_core::io::MAX_CAPTION_BYTES + 1)
        .unwrap();
    let err = ImageCaption::from_folder(dir.path()).unwrap_err();
    assert!(
        matches!(&err, TrainError::FileTooLarge { path, limit }
            if path.ends_with("img0.txt") && *limit == svgen_core::io::MAX_CAPTION_BYTES),
        "{err}"
    );
    std::fs::write(&caption, "a caption").unwrap();
    let image = dir.path().join("img0.png");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(svgen_data::generate::MAX_IMAGE_FILE_BYTES + 1)
        .unwrap();
    let err = ImageCaption::from_folder(dir.path()).unwrap_err();
    assert!(
        matches!(&err, TrainError::FileTooLarge { path, .. } if path.ends_with("img0.png")),
        "{err}"
    );
}

#[test]
fn bad_data_and_settings_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 1);
    std::fs::remove_file(dir.path().join("img0.txt")).unwrap();
    let err = ImageCaption::from_folder(dir.path()).unwrap_err();
    assert!(
        matches!(&err, TrainError::Io { path, .. } if path.ends_with("img0.txt")),
        "{err}"
    );
    std::fs::write(dir.path().join("img0.txt"), "a caption").unwrap();
    std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
    std::fs::write(dir.path().join("broken.txt"), "x").unwrap();
    let err = ImageCaption::from_folder(dir.path()).unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
    let bad = SdLoraTrainConfig {
        resolution: 60,
        ..train_cfg()
    };
    let err = SdLoraTrainer::new(models(), lora(), bad, dir.path())
        .err()
        .unwrap();
    assert!(err.to_string().contains("60"), "{err}");
    let err = SdTrainingModels::<AB>::from_pretrained(dir.path(), &Default::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, TrainError::MissingFolder { name, .. } if name == "unet"),
        "{err}"
    );
}

#[test]
fn preprocess_resizes_and_center_crops() {
    // 4×2 image: left half black, right half white → after resize to 2 px high and a center
    // crop of 2×2 the two middle columns remain.
    let img = image::RgbImage::from_fn(8, 4, |x, _| {
        if x < 4 {
            image::Rgb([0, 0, 0])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    let v = preprocess(&img, 2);
    assert_eq!(v.len(), 12);
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    // Left column darker than the right one in every channel.
    for c in 0..3 {
        assert!(v[c * 4] < v[c * 4 + 1]);
    }
}

#[test]
fn shards_yield_positive_rows_with_their_png() {
    use svgen_data::storage::{ShardOptions, ShardWriter};
    use svgen_data::{Label, Triplet};
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(40, 24, |x, _| image::Rgb([(x * 6) as u8, 0, 0]));
    let png = svgen_data::sample::encode_png(&image::DynamicImage::ImageRgb8(img.clone())).unwrap();
    let row = |id: &str, label: Label, simplified: Option<&str>| Triplet {
        id: id.into(),
        source: "test".into(),
        caption: format!("caption of {id}"),
        simplified: simplified.map(str::to_string),
        prompt: "p".into(),
        negative_prompt: None,
        generator: "g".into(),
        seed: Some(1),
        image: png.clone(),
        width: 40,
        height: 24,
        svg: "<svg/>".into(),
        n_tokens: 3,
        tokenizer: "cl100k_base".into(),
        label,
        clip_similarity: None,
        aesthetic: None,
        created_at: 0,
    };
    let mut w = ShardWriter::create(
        dir.path().join("shard-00000.parquet"),
        &ShardOptions::default(),
    )
    .unwrap();
    w.write(row("a", Label::Positive, Some("a red ramp")))
        .unwrap();
    w.write(row("b", Label::Negative, None)).unwrap();
    w.write(row("c", Label::Positive, None)).unwrap();
    w.finish().unwrap();
    let data = ImageCaption::load(dir.path()).unwrap();
    let got: Vec<(&str, &str)> = data
        .iter()
        .map(|d| (d.id.as_str(), d.caption.as_str()))
        .collect();
    assert_eq!(got, [("a", "a red ramp"), ("c", "caption of c")]);
    assert_eq!(data[0].image().unwrap(), img);
}
