//! In-process text-to-image pipelines as svgen-data
//! [`ImageGenerator`](svgen_data::generate::ImageGenerator)s, shared by Stable
//! Diffusion ([`crate::sd::SdImageGenerator`]) and FLUX ([`crate::flux::FluxImageGenerator`]).
//!
//! # Batching
//! The dataset pipeline calls
//! [`ImageGenerator::generate`](svgen_data::generate::ImageGenerator::generate) from several worker threads, one sample
//! per call. A [`BatchedGenerator`] hands every request to one worker thread that owns the model:
//! it takes the first request, waits up to [`BatchOptions::max_wait`] for more (up to
//! [`BatchOptions::max_batch`]) and generates them as one batch. So with `network_workers ≥
//! max_batch` the model runs full batches.
//!
//! # Determinism
//! Every image has its own seed (the request's, which svgen-data derives from the sample id) and
//! its own random stream, so an image does not depend on the other samples of its batch: a
//! resumed or re-sharded run makes the same image for the same id.
//!
//! # Failures
//! When a batch fails, its samples are generated again one by one, so only the failing sample gets
//! an error (recorded in `failures.jsonl` by svgen-data) and the run continues. A panic inside the
//! model is caught and reported as that sample's error.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, RgbImage};
use svgen_data::generate::{GeneratedImage, GenerationRequest};
use svgen_data::StageError;

use crate::diffusion::scheduler_kind::SchedulerKind;
use crate::error::{Result, TrainError};

/// Largest batch a generator accepts.
pub const MAX_GENERATOR_BATCH: usize = 64;

/// How many truncated sample ids a [`GenerationStats`] keeps (the count is exact).
pub const MAX_LISTED_IDS: usize = 16;

/// One image to generate: its prompt, negative prompt and seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptItem {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (`None`: the pipeline's default, usually `""`).
    pub negative_prompt: Option<String>,
    /// The seed of this image's random stream.
    pub seed: u64,
}

/// What a pipeline returns for a batch.
#[derive(Debug, Clone, Default)]
pub struct BatchOutput {
    /// One image per item, in order.
    pub images: Vec<RgbImage>,
    /// Per item: the text encoders its prompt was cut for (e.g. `"t5 (256 tokens)"`), empty when
    /// nothing was cut.
    pub truncated: Vec<Vec<String>>,
}

/// A pipeline a [`BatchedGenerator`] drives; it lives on the generator's worker thread.
pub trait BatchPipeline: Send + 'static {
    /// Generates one image per item; image `i` must not depend on the other items.
    ///
    /// # Errors
    /// Whatever made the batch fail (bad settings, a prompt the tokenizer rejects, ...).
    fn generate_batch(&mut self, items: &[PromptItem]) -> Result<BatchOutput>;
}

/// Batching settings of a [`BatchedGenerator`] (changeable while it runs).
#[derive(Debug)]
pub struct BatchOptions {
    max_batch: AtomicUsize,
    max_wait_ms: AtomicU64,
}

impl BatchOptions {
    fn new(max_batch: usize, max_wait: Duration) -> Self {
        Self {
            max_batch: AtomicUsize::new(max_batch.clamp(1, MAX_GENERATOR_BATCH)),
            max_wait_ms: AtomicU64::new(u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Largest batch.
    pub fn max_batch(&self) -> usize {
        self.max_batch.load(Ordering::Relaxed)
    }

    /// How long the worker waits for more requests after the first one of a batch.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms.load(Ordering::Relaxed))
    }
}

/// What a generator did so far (see [`BatchedGenerator::stats`]); `Display` prints the lines
/// `build_dataset` adds to its run summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationStats {
    /// The generator's name.
    pub name: String,
    /// Images generated.
    pub images: usize,
    /// Batches run (retries of a failed batch, one sample at a time, count once each).
    pub batches: usize,
    /// Samples that failed.
    pub failed: usize,
    /// Samples whose prompt was cut by a text encoder's limit (as diffusers does).
    pub truncated: usize,
    /// The encoders that cut prompts and how many times (`"t5 (256 tokens)"` → count).
    pub truncated_by: std::collections::BTreeMap<String, usize>,
    /// The first [`MAX_LISTED_IDS`] truncated sample ids.
    pub truncated_ids: Vec<String>,
    /// Time spent generating.
    pub generate_time: Duration,
}

impl std::fmt::Display for GenerationStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.generate_time.as_secs_f64();
        writeln!(
            f,
            "generator {}: {} images in {} batches, {:.1} s ({:.2} images/s), {} failed",
            self.name,
            self.images,
            self.batches,
            secs,
            self.images as f64 / secs.max(1e-9),
            self.failed
        )?;
        if self.truncated > 0 {
            let by: Vec<String> = self
                .truncated_by
                .iter()
                .map(|(k, n)| format!("{n} by {k}"))
                .collect();
            writeln!(
                f,
                "prompts truncated (as diffusers does): {} ({}); first ids: {}",
                self.truncated,
                by.join(", "),
                self.truncated_ids.join(", ")
            )?;
        }
        Ok(())
    }
}

struct Job {
    id: String,
    item: PromptItem,
    reply: SyncSender<Result<RgbImage>>,
}

/// A [`BatchPipeline`] behind a worker thread, the engine of svgen-data
/// [`ImageGenerator`](svgen_data::generate::ImageGenerator)s (see the
/// [module](self) docs). Dropping it stops the worker.
pub struct BatchedGenerator {
    name: String,
    sender: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    options: Arc<BatchOptions>,
    stats: Arc<Mutex<GenerationStats>>,
}

impl std::fmt::Debug for BatchedGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedGenerator")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A cloneable handle on a generator's statistics, valid after the generator is dropped (e.g.
/// moved into svgen-data's `Stages`).
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Mutex<GenerationStats>>);

impl StatsHandle {
    /// The statistics so far.
    pub fn get(&self) -> GenerationStats {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl BatchedGenerator {
    /// Starts the worker thread owning `pipeline`. `max_batch` is clamped to
    /// `1..=`[`MAX_GENERATOR_BATCH`].
    ///
    /// # Errors
    /// [`TrainError::Io`] when the thread cannot be started.
    pub fn spawn<P: BatchPipeline>(
        pipeline: P,
        name: impl Into<String>,
        max_batch: usize,
        max_wait: Duration,
    ) -> Result<Self> {
        let name = name.into();
        let options = Arc::new(BatchOptions::new(max_batch, max_wait));
        let stats = Arc::new(Mutex::new(GenerationStats {
            name: name.clone(),
            ..GenerationStats::default()
        }));
        let (sender, receiver) = channel::<Job>();
        let worker = {
            let options = Arc::clone(&options);
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name(format!("svgen-{name}"))
                .spawn(move || worker_loop(pipeline, &receiver, &options, &stats))
                .map_err(|e| TrainError::io(PathBuf::from("<generator thread>"), e))?
        };
        Ok(Self {
            name,
            sender: Some(sender),
            worker: Some(worker),
            options,
            stats,
        })
    }

    /// The batching settings.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Sets the largest batch (clamped to `1..=`[`MAX_GENERATOR_BATCH`]).
    pub fn set_max_batch(&self, n: usize) {
        self.options
            .max_batch
            .store(n.clamp(1, MAX_GENERATOR_BATCH), Ordering::Relaxed);
    }

    /// Sets how long the worker waits for more requests after the first of a batch.
    pub fn set_max_wait(&self, wait: Duration) {
        self.options.max_wait_ms.store(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Renames the generator (the dataset's `generator` column).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
        if let Ok(mut s) = self.stats.lock() {
            s.name = self.name.clone();
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> GenerationStats {
        self.stats_handle().get()
    }

    /// A handle on the statistics that outlives the generator.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.stats))
    }

    /// Generates the image of one item (batched with concurrent calls), `id` naming it in the
    /// statistics.
    ///
    /// # Errors
    /// The pipeline's error for this item; [`TrainError::InvalidArgument`] when the worker has
    /// stopped.
    pub fn generate_item(&self, id: &str, item: PromptItem) -> Result<RgbImage> {
        let stopped = || TrainError::InvalidArgument("the generator's worker has stopped".into());
        let sender = self.sender.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = sync_channel(1);
        sender
            .send(Job {
                id: id.to_string(),
                item,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// The name recorded in the dataset.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ImageGenerator::generate` with the item built by the caller (the family generators
    /// decide the negative prompt).
    ///
    /// # Errors
    /// [`StageError`]: bad input for an empty prompt, invalid settings or a tokenizer error;
    /// internal for everything else.
    pub fn generate_request(
        &self,
        request: &GenerationRequest<'_>,
        item: PromptItem,
    ) -> std::result::Result<GeneratedImage, StageError> {
        if request.prompt.trim().is_empty() {
            return Err(StageError::bad_input("empty prompt"));
        }
        let image = self.generate_item(request.id, item).map_err(|e| match e {
            TrainError::InvalidArgument(m) | TrainError::Tokenizer(m) => StageError::bad_input(m),
            other => StageError::internal(other.to_string()),
        })?;
        Ok(GeneratedImage {
            bytes: png_bytes(image)?,
            seed: Some(request.seed),
        })
    }
}

impl Drop for BatchedGenerator {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop.
        self.sender = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// PNG bytes of an image (lossless, so the traced image is the generated one).
fn png_bytes(image: RgbImage) -> std::result::Result<Vec<u8>, StageError> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|e| StageError::internal(format!("PNG encoding: {e}")))?;
    Ok(bytes)
}

fn worker_loop<P: BatchPipeline>(
    mut pipeline: P,
    receiver: &Receiver<Job>,
    options: &BatchOptions,
    stats: &Mutex<GenerationStats>,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + options.max_wait();
        while jobs.len() < options.max_batch() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match receiver.recv_timeout(deadline - now) {
                Ok(job) => jobs.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        run_jobs(&mut pipeline, jobs, stats);
    }
}

/// Runs a batch; on failure, each job alone.
fn run_jobs<P: BatchPipeline>(pipeline: &mut P, jobs: Vec<Job>, stats: &Mutex<GenerationStats>) {
    match run_batch(pipeline, &jobs, stats) {
        Ok(out) => {
            for (job, image) in jobs.into_iter().zip(out) {
                let _ = job.reply.send(Ok(image));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Ok(mut s) = stats.lock() {
                s.failed += 1;
            }
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(_) => {
            for job in jobs {
                run_jobs(pipeline, vec![job], stats);
            }
        }
    }
}

fn run_batch<P: BatchPipeline>(
    pipeline: &mut P,
    jobs: &[Job],
    stats: &Mutex<GenerationStats>,
) -> Result<Vec<RgbImage>> {
    let items: Vec<PromptItem> = jobs.iter().map(|j| j.item.clone()).collect();
    let start = Instant::now();
    let out =
        catch_unwind(AssertUnwindSafe(|| pipeline.generate_batch(&items))).map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            TrainError::InvalidArgument(format!("the pipeline panicked: {message}"))
        })??;
    if out.images.len() != jobs.len() {
        return Err(TrainError::ShapeMismatch {
            key: "images".into(),
            expected: vec![jobs.len()],
            found: vec![out.images.len()],
        });
    }
    if let Ok(mut s) = stats.lock() {
        s.batches += 1;
        s.images += out.images.len();
        s.generate_time += start.elapsed();
        for (job, cut) in jobs.iter().zip(&out.truncated) {
            if cut.is_empty() {
                continue;
            }
            s.truncated += 1;
            for by in cut {
                *s.truncated_by.entry(by.clone()).or_default() += 1;
            }
            if s.truncated_ids.len() < MAX_LISTED_IDS {
                s.truncated_ids.push(job.id.clone());
            }
        }
    }
    Ok(out.images)
}

/// The options of an in-process generator, as `build_dataset --generator sd|flux` takes them;
/// `None` fields take the pipeline's defaults (Stable Diffusion: 25 DPM-Solver++ steps, guidance
/// 7.5, 512²; FLUX.1-schnell: 4 steps, no guidance, 1024², T5 limit 256).
#[derive(Debug, Clone, PartialEq)]
pub struct InProcessOptions {
    /// The diffusers pipeline folder.
    pub model: PathBuf,
    /// A LoRA file or folder (Stable Diffusion).
    pub lora: Option<PathBuf>,
    /// The sampler.
    pub scheduler: Option<SchedulerKind>,
    /// Inference steps.
    pub steps: Option<usize>,
    /// Guidance scale (Stable Diffusion: classifier-free guidance; FLUX: the distilled guidance
    /// embedding of guidance-distilled checkpoints such as FLUX.1-dev).
    pub guidance: Option<f64>,
    /// FLUX's true classifier-free guidance with the negative prompt (`true_cfg_scale`; off at
    /// ≤ 1, as diffusers: then the negative prompt is not used).
    pub true_cfg_scale: Option<f64>,
    /// Image width in pixels.
    pub width: Option<usize>,
    /// Image height in pixels.
    pub height: Option<usize>,
    /// Largest batch.
    pub batch: usize,
    /// FLUX's T5 token limit (`max_sequence_length`).
    pub max_sequence_length: Option<usize>,
    /// Transformer weights in bf16 (default: bf16 on CUDA, f32 on the CPU).
    pub bf16: Option<bool>,
}

impl InProcessOptions {
    /// Options for `model` with every default and batches of 4.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            lora: None,
            scheduler: None,
            steps: None,
            guidance: None,
            true_cfg_scale: None,
            width: None,
            height: None,
            batch: 4,
            max_sequence_length: None,
            bf16: None,
        }
    }

    /// The default wait for more requests: long enough for the dataset's workers to hand in
    /// their next samples, short next to a generation.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(250)
    }
}
