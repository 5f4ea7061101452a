//! The (text, image, SVG) dataset pipeline of svgen-data: the README's main job.
//!
//! ```text
//! cargo run --release --example build_dataset                 # embedded default, no network
//! cargo run --release --example build_dataset -- --help       # every stage is a flag
//! cargo run --release --example build_dataset -- stats target/svgen-dataset
//! cargo run --release --example build_dataset -- merge --out all /shared/run1
//! cargo run --release --example build_dataset -- export target/svgen-dataset folder/
//! ```
//!
//! With no arguments it runs the embedded default job: 44 committed captions, images rendered
//! from 44 committed MIT-licensed `@tabler/icons` (every fourth one light-on-dark), background
//! normalisation, svgen-trace, cl100k token counts, 8k-token labels, one Parquet shard in
//! `target/svgen-dataset/`, and a summary table. Rerunning resumes (nothing left to do);
//! `--fresh` starts over.
//!
//! Real runs, e.g. COCO captions simplified by a local Ollama model, images from DALL-E:
//! ```text
//! OPENAI_API_KEY=... cargo run --release --example build_dataset -- \
//!   --captions captions_train2017.json --simplifier-url http://localhost:11434/v1 \
//!   --simplifier-model llama3.1:8b --simplifier-key-env '' --generator dalle \
//!   --template silhouette --out /data/svgen
//! ```
//!
//! Many machines: start the same command as a Slurm job array or a Kubernetes Indexed Job;
//! each worker finds its index in `SLURM_ARRAY_TASK_ID` / `JOB_COMPLETION_INDEX` (count from
//! `SLURM_ARRAY_TASK_COUNT`, `--shard-count` or `SVGEN_SHARD_COUNT`; `--shard i/N` overrides),
//! leaves a completion marker when done, and a relaunch only reruns unfinished workers.
//! `--out` may be an object store URL (`s3://`, `gs://`, `az://`; `--features cloud`).
//! `merge` then checks that every worker finished. See `examples/deploy/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use svgen::data::eval::EvalScorer;
use svgen::data::generate::{
    ImageFolder, ImageGenerator, ImageManifest, OpenAiImages, SourceImages,
};
use svgen::data::http::{EndpointConfig, RetryPolicy};
use svgen::data::prompt::PromptTemplate;
use svgen::data::shard::ResolvedShard;
use svgen::data::simplify::{AnswerCache, CachedSimplifier, CaptionSimplifier, ChatSimplifier};
use svgen::data::source::{open_source, CaptionSource, ChainSource};
use svgen::data::stages::{Cl100k, LabelPolicy, PotraceTracer};
use svgen::data::storage::{ShardCompression, ShardOptions};
use svgen::data::store::OutputLocation;
use svgen::data::tools::MergeOptions;
use svgen::data::{DataError, PipelineConfig, ShardArgs, ShardSpec, Stages};

/// CLIP scoring runs on the CPU (`Flex`) whatever the features.
type B = svgen::eval::burn::backend::Flex;

#[derive(Parser, Debug)]
#[command(
    about = "Build a (text, image, SVG) dataset: captions -> images -> traced SVGs -> Parquet"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Summarise the shards and failures of an output folder.
    Stats {
        /// Output folder of a run.
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Merge a finished run (its N workers' outputs, in one or several folders or object
    /// store URLs): checks that every worker 0..N left exactly one completion marker and that
    /// no id appears twice, then re-cuts the shards.
    Merge {
        /// Destination folder (must hold no shards).
        #[arg(long)]
        out: PathBuf,
        /// Rows per merged shard.
        #[arg(long, default_value_t = 10_000)]
        rows_per_shard: usize,
        /// Also merge folders written before completion markers existed (no check that every
        /// worker finished; duplicate ids are dropped, first row kept).
        #[arg(long)]
        allow_unmarked: bool,
        /// Input folders or URLs.
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Export the shards of a folder as png + svg + metadata.jsonl.
    Export {
        /// Output folder of a run.
        dir: PathBuf,
        /// Destination folder.
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GeneratorKind {
    /// Rasters of the embedded icons (the default job; only with the default captions).
    Default,
    /// OpenAI Images API (DALL-E).
    Dalle,
    /// Pre-generated images in --image-dir named {id}.png.
    Folder,
    /// JSONL manifest {"id","path"} in --image-manifest.
    Manifest,
    /// The image that came with the caption (webdataset tar shards).
    Source,
    /// Stable Diffusion 1.x in-process from a diffusers folder (--model; feature `train`).
    Sd,
    /// FLUX.1 (schnell or dev) in-process from a diffusers folder (--model; feature `train`).
    Flux,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Output: a folder (shared by all workers of a run), file://, or an object store URL
    /// (s3://bucket/prefix, gs://..., az://...; needs `--features cloud`).
    #[arg(long, default_value = "target/svgen-dataset")]
    out: String,
    /// Local staging folder when --out is an object store (default: a folder under the
    /// system temp dir named after the URL).
    #[arg(long)]
    staging: Option<PathBuf>,
    /// Delete the output folder first instead of resuming (single-worker local runs only).
    #[arg(long)]
    fresh: bool,
    /// Caption files: COCO .json, webdataset .tar, .jsonl, .csv or .txt (default: embedded list).
    #[arg(long, num_args = 1..)]
    captions: Vec<PathBuf>,
    /// Only the first N new inputs.
    #[arg(long)]
    limit: Option<usize>,
    /// This worker's part of the input, `i/N`. Default: from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX (see examples/deploy/README.md), else 0/1.
    #[arg(long)]
    shard: Option<ShardSpec>,
    /// Worker count for a Slurm array or Kubernetes Indexed Job (else SVGEN_SHARD_COUNT, else
    /// SLURM_ARRAY_TASK_COUNT).
    #[arg(long)]
    shard_count: Option<u32>,
    /// Slurm array id of worker 0 (else SVGEN_SHARD_BASE, else SLURM_ARRAY_TASK_MIN).
    #[arg(long)]
    shard_base: Option<u64>,

    /// OpenAI-compatible base URL of the caption simplifier (off when absent).
    #[arg(long)]
    simplifier_url: Option<String>,
    /// Simplifier model.
    #[arg(long, default_value = "gpt-4o-mini")]
    simplifier_model: String,
    /// Environment variable with the simplifier's API key ('' = none).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    simplifier_key_env: String,
    /// On-disk cache of simplifier answers (default: <out>/simplify-cache.jsonl).
    #[arg(long)]
    simplify_cache: Option<PathBuf>,

    /// Prompt template: silhouette, flat-vector, thesis-sd, thesis-flux, or a custom text with
    /// {object} (default: thesis-sd for --generator sd, thesis-flux for flux, else silhouette).
    #[arg(long)]
    template: Option<String>,
    /// Negative prompt (replaces the template's; a custom template has none otherwise).
    #[arg(long)]
    negative: Option<String>,

    /// Image generator.
    #[arg(long, value_enum, default_value = "default")]
    generator: GeneratorKind,
    /// Folder of pre-generated images (--generator folder).
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Manifest of pre-generated images (--generator manifest).
    #[arg(long)]
    image_manifest: Option<PathBuf>,
    /// Images API base URL (--generator dalle).
    #[arg(long, default_value = "https://api.openai.com/v1")]
    images_url: String,
    /// Images API model.
    #[arg(long, default_value = "dall-e-3")]
    images_model: String,
    /// Images API size.
    #[arg(long, default_value = "1024x1024")]
    images_size: String,
    /// Environment variable with the Images API key ('' = none).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    images_key_env: String,
    /// Side of the embedded default rasters in pixels.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Every N-th default raster is light-on-dark (0 = none).
    #[arg(long, default_value_t = 4)]
    dark_every: usize,

    /// diffusers pipeline folder (--generator sd|flux).
    #[arg(long)]
    model: Option<PathBuf>,
    /// LoRA file or folder for the UNet (--generator sd).
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Sampler: ddim, euler, euler-a, dpmpp-2m (sd; default dpmpp-2m) or flow-euler (flux).
    #[arg(long)]
    scheduler: Option<String>,
    /// Inference steps (default: sd 25, FLUX.1-schnell 4, FLUX.1-dev 28).
    #[arg(long)]
    steps: Option<usize>,
    /// Guidance scale (sd: classifier-free, default 7.5; flux: the distilled guidance of dev).
    #[arg(long)]
    guidance: Option<f64>,
    /// FLUX true classifier-free guidance with the negative prompt (off at <= 1, the default).
    #[arg(long)]
    true_cfg: Option<f64>,
    /// Image width in pixels (default: sd 512, flux 1024).
    #[arg(long)]
    width: Option<usize>,
    /// Image height in pixels (default: sd 512, flux 1024).
    #[arg(long)]
    height: Option<usize>,
    /// Images per model batch (concurrent samples are batched; raises --network-workers to it).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// FLUX T5 token limit (default: schnell 256, dev 512); longer prompts are truncated.
    #[arg(long)]
    max_sequence_length: Option<usize>,
    /// FLUX transformer/T5 dtype: auto (bf16 on CUDA, f32 on CPU), bf16 or f32, checked against
    /// the backend before loading. Stable Diffusion loads in f32 only (`bf16` is a typed error).
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// FLUX: free the text encoders after each batch's prompts are encoded (lower peak memory,
    /// one encoder load per batch).
    #[arg(long)]
    free_text_encoders: bool,

    /// Concurrent network requests (simplifier + generator).
    #[arg(long, default_value_t = 4)]
    network_workers: usize,
    /// HTTP timeout in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Retries on 429 / 5xx / timeouts (exponential backoff from 1 s).
    #[arg(long, default_value_t = 5)]
    retries: u32,

    /// Turn dark-background normalisation off.
    #[arg(long)]
    no_normalise: bool,
    /// Threads for decode / normalise / trace / count (default: all cores).
    #[arg(long)]
    cpu_workers: Option<usize>,
    /// Positive label below this many tokens (the thesis: 8000; 4000 for the scaled set).
    #[arg(long, default_value_t = 8_000)]
    max_tokens: usize,
    /// Drop negatives instead of storing them.
    #[arg(long)]
    drop_negative: bool,

    /// HF CLIP folder (config.json, model.safetensors, tokenizer.json) for clip_similarity.
    #[arg(long)]
    clip_model: Option<PathBuf>,
    /// Reject samples whose CLIP similarity is below this (recorded in failures.jsonl as
    /// `rejected` at stage `filter`, not written).
    #[arg(long)]
    clip_min: Option<f32>,
    /// LAION aesthetic head (.pth / .safetensors; needs a ViT-L/14 --clip-model).
    #[arg(long)]
    aesthetic_head: Option<PathBuf>,

    /// Rows per Parquet shard.
    #[arg(long, default_value_t = 1_000)]
    rows_per_shard: usize,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 100)]
    rows_per_row_group: usize,
    /// Use snappy instead of zstd.
    #[arg(long)]
    snappy: bool,
    /// Also export png + svg + metadata.jsonl here after the run.
    #[arg(long)]
    export: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn endpoint(url: &str, key_env: &str, a: &RunArgs) -> EndpointConfig {
    EndpointConfig {
        base_url: url.to_string(),
        api_key_env: Some(key_env.to_string()).filter(|k| !k.is_empty()),
        timeout: Duration::from_secs(a.timeout),
        retry: RetryPolicy {
            max_retries: a.retries,
            ..RetryPolicy::default()
        },
        max_response_bytes: svgen::data::http::MAX_RESPONSE_BYTES,
    }
}

/// What decides the content of the rows besides the pipeline settings: every worker of a run
/// must agree on it (it goes into the run's configuration fingerprint).
fn run_tag(a: &RunArgs) -> String {
    let mut tag = format!(
        "captions={:?}|template={:?}|negative={:?}|generator={:?}|image_dir={:?}|\
         image_manifest={:?}|images={}/{}/{}|size={}|dark_every={}|simplifier={:?}/{}|\
         clip={:?}/{:?}|aesthetic={:?}",
        a.captions,
        a.template,
        a.negative,
        a.generator,
        a.image_dir,
        a.image_manifest,
        a.images_url,
        a.images_model,
        a.images_size,
        a.size,
        a.dark_every,
        a.simplifier_url,
        a.simplifier_model,
        a.clip_model,
        a.clip_min,
        a.aesthetic_head
    );
    if matches!(a.generator, GeneratorKind::Sd | GeneratorKind::Flux) {
        // The in-process generator's settings decide the images too.
        tag += &format!(
            "|model={:?}|lora={:?}|scheduler={:?}|steps={:?}|guidance={:?}|true_cfg={:?}|\
             size={:?}x{:?}|max_sequence_length={:?}|dtype={}",
            a.model,
            a.lora,
            a.scheduler,
            a.steps,
            a.guidance,
            a.true_cfg,
            a.width,
            a.height,
            a.max_sequence_length,
            a.dtype
        );
    }
    tag
}

/// What the run summary adds for an in-process generator.
type GeneratorReport = Box<dyn Fn() -> String>;

/// The in-process Stable Diffusion / FLUX generator and its statistics.
#[cfg(feature = "train")]
fn in_process(
    a: &RunArgs,
    flux: bool,
    negative: &str,
) -> Result<(Box<dyn ImageGenerator>, GeneratorReport), Box<dyn std::error::Error>> {
    use svgen::train::diffusion::{InProcessOptions, SchedulerKind};
    use svgen::train::flux::FluxImageGenerator;
    use svgen::train::sd::SdImageGenerator;
    type G = svgen::DefaultBackend;

    let which = if flux { "flux" } else { "sd" };
    let model = a
        .model
        .clone()
        .ok_or_else(|| format!("--generator {which} needs --model DIR (a diffusers folder)"))?;
    let device = Default::default();
    // Checked against the backend before anything is loaded (typed error).
    let bf16 = match a.dtype.as_str() {
        "auto" => None,
        flag => match svgen::eval::dtype::dtype_for_backend::<G>(flag, &device)? {
            svgen::eval::burn::tensor::DType::BF16 => Some(true),
            svgen::eval::burn::tensor::DType::F32 => Some(false),
            _ => {
                return Err(format!("--dtype {flag}: the generators take auto, bf16 or f32").into())
            }
        },
    };
    let options = InProcessOptions {
        lora: a.lora.clone(),
        scheduler: a
            .scheduler
            .as_deref()
            .map(str::parse::<SchedulerKind>)
            .transpose()?,
        steps: a.steps,
        guidance: a.guidance,
        true_cfg_scale: a.true_cfg,
        width: a.width,
        height: a.height,
        batch: a.batch,
        max_sequence_length: a.max_sequence_length,
        bf16,
        free_text_encoders: a.free_text_encoders,
        ..InProcessOptions::new(model)
    };
    let negative = Some(negative.to_string()).filter(|n| !n.trim().is_empty());
    let t0 = std::time::Instant::now();
    let (generator, stats): (Box<dyn ImageGenerator>, _) = if flux {
        let g = FluxImageGenerator::<G>::from_options(&options, negative, &device)?;
        let stats = g.stats_handle();
        (Box::new(g), stats)
    } else {
        let g = SdImageGenerator::<G>::from_options(&options, negative, &device)?;
        let stats = g.stats_handle();
        (Box::new(g), stats)
    };
    eprintln!(
        "loaded {} ({which}) in {:.1} s",
        options.model.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok((generator, Box::new(move || stats.get().to_string())))
}

#[cfg(not(feature = "train"))]
fn in_process(
    _: &RunArgs,
    _: bool,
    _: &str,
) -> Result<(Box<dyn ImageGenerator>, GeneratorReport), Box<dyn std::error::Error>> {
    Err("--generator sd|flux needs the `train` feature".into())
}

fn build_stages(
    a: &RunArgs,
    default_captions: bool,
    work_dir: &std::path::Path,
) -> Result<(Stages, Option<GeneratorReport>), Box<dyn std::error::Error>> {
    let simplifier: Option<Box<dyn CaptionSimplifier>> = match &a.simplifier_url {
        None => None,
        Some(url) => {
            let chat = ChatSimplifier::new(
                &endpoint(url, &a.simplifier_key_env, a),
                &a.simplifier_model,
            )?;
            let cache_path = a
                .simplify_cache
                .clone()
                .unwrap_or_else(|| work_dir.join("simplify-cache.jsonl"));
            Some(Box::new(CachedSimplifier::new(
                chat,
                AnswerCache::open(cache_path)?,
            )))
        }
    };
    let name = a.template.as_deref().unwrap_or(match a.generator {
        GeneratorKind::Sd => "thesis-sd",
        GeneratorKind::Flux => "thesis-flux",
        _ => "silhouette",
    });
    let mut template = match name {
        "silhouette" | "flat-vector" | "flat" | "thesis-sd" | "thesis-flux" => {
            PromptTemplate::by_name(name)?
        }
        custom => PromptTemplate::new(custom, a.negative.clone().unwrap_or_default())?,
    };
    if let Some(negative) = &a.negative {
        template.negative = negative.clone();
    }
    let mut report = None;
    let generator: Box<dyn ImageGenerator> = match a.generator {
        GeneratorKind::Default => {
            if !default_captions {
                return Err("--generator default only works with the embedded captions; choose dalle, folder, manifest or source".into());
            }
            Box::new(svgen::data::default_job::image_source(a.size, a.dark_every))
        }
        GeneratorKind::Dalle => Box::new(OpenAiImages::new(
            &endpoint(&a.images_url, &a.images_key_env, a),
            &a.images_model,
            &a.images_size,
        )?),
        GeneratorKind::Folder => Box::new(ImageFolder::new(
            a.image_dir
                .clone()
                .ok_or("--generator folder needs --image-dir")?,
        )?),
        GeneratorKind::Manifest => Box::new(ImageManifest::open(
            a.image_manifest
                .as_ref()
                .ok_or("--generator manifest needs --image-manifest")?,
        )?),
        GeneratorKind::Source => Box::new(SourceImages),
        GeneratorKind::Sd | GeneratorKind::Flux => {
            let (g, r) = in_process(
                a,
                matches!(a.generator, GeneratorKind::Flux),
                &template.negative,
            )?;
            report = Some(r);
            g
        }
    };
    if !matches!(a.generator, GeneratorKind::Sd | GeneratorKind::Flux) {
        for (set, flag) in [
            (a.model.is_some(), "--model"),
            (a.lora.is_some(), "--lora"),
            (a.scheduler.is_some(), "--scheduler"),
            (a.steps.is_some(), "--steps"),
            (a.guidance.is_some(), "--guidance"),
            (a.free_text_encoders, "--free-text-encoders"),
        ] {
            if set {
                return Err(format!("{flag} applies to --generator sd|flux only").into());
            }
        }
    }
    let (clip, aesthetic) = match &a.clip_model {
        None => {
            if a.clip_min.is_some() || a.aesthetic_head.is_some() {
                return Err("--clip-min and --aesthetic-head need --clip-model".into());
            }
            (None, None)
        }
        Some(dir) => {
            let scorer = EvalScorer::<B>::from_pretrained(
                dir,
                a.aesthetic_head.as_deref(),
                &Default::default(),
            )?;
            (
                Some(scorer.clip_filter(a.clip_min)),
                scorer.aesthetic_scorer(),
            )
        }
    };
    Ok((
        Stages {
            simplifier,
            template,
            generator,
            tracer: Box::new(PotraceTracer::default()),
            counter: Box::new(Cl100k::new()),
            clip,
            aesthetic,
        },
        report,
    ))
}

fn run(a: &RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ResolvedShard { spec, origin } = svgen::data::resolve_shard_from_env(&ShardArgs {
        explicit: a.shard,
        count: a.shard_count,
        base: a.shard_base,
    })?;
    let location = OutputLocation::parse(&a.out)?;
    let (work_dir, mirror) = match &location {
        OutputLocation::Local(dir) => (dir.clone(), None),
        OutputLocation::Store(store) => {
            let staging = a.staging.clone().unwrap_or_else(|| {
                std::env::temp_dir().join("svgen-staging").join(format!(
                    "{:016x}",
                    svgen::data::sample::fnv1a64(a.out.as_bytes())
                ))
            });
            (staging, Some(store.clone()))
        }
    };
    if a.fresh {
        if spec.count > 1 || mirror.is_some() {
            return Err(
                "--fresh would delete the other workers' output too: delete the output \
                        by hand before launching the run"
                    .into(),
            );
        }
        if work_dir.exists() {
            std::fs::remove_dir_all(&work_dir)?;
        }
    }
    std::fs::create_dir_all(&work_dir)?;
    eprintln!("worker {spec} ({origin}), output {}", location.describe());
    let default_captions = a.captions.is_empty();
    let mut source: Box<dyn CaptionSource> = if default_captions {
        Box::new(svgen::data::default_job::caption_source())
    } else {
        let sources = a
            .captions
            .iter()
            .map(open_source)
            .collect::<Result<Vec<_>, DataError>>()?;
        Box::new(ChainSource::new(sources))
    };
    let (stages, report) = build_stages(a, default_captions, &work_dir)?;
    let mut cfg = PipelineConfig::new(&work_dir);
    cfg.shard = spec;
    cfg.mirror = mirror;
    cfg.run_tag = run_tag(a);
    cfg.shard_options = ShardOptions {
        rows_per_shard: a.rows_per_shard,
        rows_per_row_group: a.rows_per_row_group,
        compression: if a.snappy {
            ShardCompression::Snappy
        } else {
            ShardCompression::Zstd
        },
    };
    cfg.network_workers = a.network_workers;
    if report.is_some() {
        // Enough concurrent samples to fill the model's batches.
        cfg.network_workers = cfg.network_workers.max(a.batch);
    }
    if let Some(n) = a.cpu_workers {
        cfg.cpu_workers = n;
    }
    cfg.label = LabelPolicy {
        max_tokens: a.max_tokens,
        drop_negative: a.drop_negative,
    };
    if a.no_normalise {
        cfg.background = None;
    }
    cfg.limit = a.limit;
    cfg.progress = !a.no_progress;
    let summary = svgen::data::run(source.as_mut(), &stages, &cfg)?;
    print!("{summary}");
    if let Some(report) = &report {
        print!("{}", report());
    }
    if let Some(dir) = &a.export {
        let OutputLocation::Local(out) = &location else {
            return Err("--export needs a local --out".into());
        };
        let n = svgen::data::tools::export_folder(out, dir)?;
        println!("exported {n} triplets to {}", dir.display());
    }
    Ok(())
}

fn print_stats(dir: &PathBuf, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let s = svgen::data::tools::stats(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{s}");
    }
    Ok(())
}

fn merge(
    out: &std::path::Path,
    rows_per_shard: usize,
    allow_unmarked: bool,
    inputs: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let stores = inputs
        .iter()
        .map(|i| OutputLocation::parse(i).map(|l| l.run_store()))
        .collect::<Result<Vec<_>, DataError>>()?;
    let options = MergeOptions {
        shard_options: ShardOptions {
            rows_per_shard,
            ..ShardOptions::default()
        },
        allow_unmarked,
    };
    let m = svgen::data::tools::merge_stores(&stores, out, &options)?;
    match m.workers {
        Some(n) => println!(
            "merged {} rows of {n} finished workers into {} shards in {}",
            m.written,
            m.shards.len(),
            out.display()
        ),
        None => println!(
            "merged {} rows ({} duplicates dropped, unchecked) into {} shards in {}",
            m.written,
            m.duplicates,
            m.shards.len(),
            out.display()
        ),
    }
    Ok(())
}

fn main() {
    // Compilation and autotune caches on (cubecl.toml), before the first CUDA device use.
    svgen::eval::gpu::configure_cubecl();
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run(&cli.run),
        Some(Command::Stats { dir, json }) => print_stats(dir, *json),
        Some(Command::Merge {
            out,
            rows_per_shard,
            allow_unmarked,
            inputs,
        }) => merge(out, *rows_per_shard, *allow_unmarked, inputs),
        Some(Command::Export { dir, out }) => svgen::data::tools::export_folder(dir, out)
            .map(|n| println!("exported {n} triplets to {}", out.display()))
            .map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
