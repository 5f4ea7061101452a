//! One loader for every Burn model of svgen: Hugging Face safetensors checkpoints, single-file or
//! sharded, in any stored dtype, with keys exactly as in the checkpoint.
//!
//! - **Opening** reads and checks every header up front (see [Limits](#limits)) and keeps the
//!   files open; [`Weights::open`] takes a folder and a stem (`model`,
//!   `diffusion_pytorch_model`, `adapter_model`: `{stem}.safetensors` or
//!   `{stem}.safetensors.index.json`), [`Weights::open_file`] a file or an index.
//! - **Taking** a tensor ([`Weights::take`], [`Weights::tensor`], [`Weights::linear`], ...) reads its
//!   bytes with a positioned read, so host memory holds one tensor at a time: an 8B Llama (16 GB
//!   in 4 shards) or a 12B FLUX transformer loads without holding the files in memory. The model
//!   asks for each tensor by key and shape; a missing key or a wrong shape is a typed error naming
//!   it. [`Weights::finish`] then reports every tensor nobody took.
//! - **Renaming** ([`Weights::rename`], [`Weights::with_key_prefix`],
//!   [`Weights::strip_key_prefix`], [`diffusers_legacy_attention_key`]) adapts other key layouts
//!   before the model takes its tensors.
//! - **Writing**: [`write_safetensors`] (atomic) and [`safetensors_bytes`].
//!
//! # Limits
//! Corrupt files give [`WeightError::Corrupt`] / [`WeightError::BadIndex`], never a panic or an
//! allocation sized by an unchecked field: the header length is capped at [`MAX_HEADER_BYTES`] and
//! must fit in the file; each tensor's `data_offsets` must lie in the data section and span exactly
//! dtype size × element count bytes (checked arithmetic, at most [`MAX_RANK`] dimensions); the
//! tensors must tile the data section without overlaps or holes; shard names in an index must be
//! plain file names, every indexed key must be in the shard the index names, and every shard
//! tensor must be indexed.
//!
//! ```
//! use std::collections::BTreeMap;
//! use burn::backend::Flex;
//! use svgen_eval::weights::{safetensors_bytes, HostTensor, StoreDtype, Weights};
//!
//! let mut t = BTreeMap::new();
//! t.insert("fc.weight".to_string(), HostTensor::f32(vec![3, 2], vec![1., 2., 3., 4., 5., 6.]));
//! t.insert("fc.bias".to_string(), HostTensor::f32(vec![3], vec![0.; 3]));
//! let w = Weights::from_memory(safetensors_bytes(&t, StoreDtype::BF16, None)?, "fc.safetensors")?;
//! // HF `[out, in]` becomes Burn's `[in, out]`.
//! let fc = w.linear::<Flex>("fc", 2, 3, true, &Default::default())?;
//! assert_eq!(fc.weight.dims(), [2, 3]);
//! w.finish()?; // every tensor was used
//! # Ok::<(), svgen_eval::weights::WeightError>(())
//! ```

mod error;
mod header;
mod host;
mod index;
mod io;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use burn::tensor::DType;

pub use error::{Corruption, IndexProblem, WeightError};
pub use header::{Dtype, MAX_HEADER_BYTES, MAX_RANK};
pub use host::{f8_e4m3_to_f32, f8_e5m2_to_f32, transpose, HostData, HostTensor};
pub use index::MAX_INDEX_BYTES;
pub use write::{safetensors_bytes, write_safetensors, StoreDtype};

use header::HeaderError;
use io::{PositionedFile, Source};

/// File stem of transformers checkpoints (`model.safetensors`).
pub const TRANSFORMERS_STEM: &str = "model";
/// File stem of diffusers model checkpoints (`diffusion_pytorch_model.safetensors`).
pub const DIFFUSERS_STEM: &str = "diffusion_pytorch_model";
/// File stem of PEFT adapters (`adapter_model.safetensors`).
pub const PEFT_STEM: &str = "adapter_model";

type Result<T, E = WeightError> = std::result::Result<T, E>;

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    source: Source,
}

#[derive(Debug)]
struct Slot {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute offset of the first byte in the shard.
    offset: u64,
    used: AtomicBool,
}

/// A safetensors checkpoint whose tensors a model takes by key (see the [module](self) docs).
///
/// Taking is `&self` and thread-safe: independent tensors may be read from several threads.
pub struct Weights {
    origin: PathBuf,
    shards: Vec<Shard>,
    slots: Vec<Slot>,
    keys: BTreeMap<String, usize>,
    metadata: BTreeMap<String, String>,
    float_dtype: Option<DType>,
    require_grad: bool,
    transpose_on: Option<TransposeOn>,
}

/// Where [`Weights::linear_weight`] turns a checkpoint's `[out, in]` linear into Burn's
/// `[in, out]` layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransposeOn {
    /// On the host, tiled and multi-threaded, before the upload: the device tensor is
    /// contiguous `[in, out]`.
    Host,
    /// On the device: the `[out, in]` bytes are uploaded as stored and `transpose()` swaps the
    /// strides (a view, no copy, no kernel). Every backend op reads strided layouts, and the
    /// cubecl matmul takes a transposed right-hand side natively.
    Device,
}

impl TransposeOn {
    /// [`TransposeOn::Host`] on the CPU backend `Flex` and `Autodiff<Flex>` (its host matmul is tuned for contiguous
    /// weights and the host transpose is then the only copy), [`TransposeOn::Device`] elsewhere
    /// (the upload is the only copy; no host pass over the weights).
    pub fn for_backend<B: Backend>() -> Self {
        if crate::dtype::is_flex_family::<B>() {
            Self::Host
        } else {
            Self::Device
        }
    }
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("origin", &self.origin)
            .field("shards", &self.shards.len())
            .field("tensors", &self.keys.len())
            .field("float_dtype", &self.float_dtype)
            .field("require_grad", &self.require_grad)
            .field("transpose_on", &self.transpose_on)
            .finish()
    }
}

/// Reads and checks the header of one safetensors source.
fn read_header(path: &Path, source: &Source) -> Result<(header::Header, u64)> {
    let io = |e| WeightError::io(path, e);
    let corrupt = |c| WeightError::corrupt(path, c);
    let file_len = source.len().map_err(io)?;
    if file_len < 8 {
        return Err(corrupt(Corruption::TooShort { len: file_len }));
    }
    let mut prefix = [0u8; 8];
    source.read_exact_at(&mut prefix, 0).map_err(io)?;
    let n = header::header_len(prefix, file_len).map_err(corrupt)?;
    // `n` is at most MAX_HEADER_BYTES and fits in the file.
    let mut json = vec![0u8; n as usize];
    source.read_exact_at(&mut json, 8).map_err(io)?;
    let data_start = 8 + n;
    let h = header::parse_header(&json, file_len - data_start).map_err(|e| match e {
        HeaderError::Corrupt(c) => corrupt(c),
        HeaderError::UnknownDtype { key, dtype } => WeightError::UnsupportedDtype { key, dtype },
    })?;
    Ok((h, data_start))
}

fn open_source(path: &Path) -> Result<Source> {
    let file = std::fs::File::open(path).map_err(|e| WeightError::io(path, e))?;
    Ok(Source::File(PositionedFile::new(file)))
}

/// `prefix.name`, or `name` for an empty prefix.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The names older diffusers VAE checkpoints give their attention layers (`query`, `key`, `value`,
/// `proj_attn`), mapped to the current ones (`to_q`, `to_k`, `to_v`, `to_out.0`), as diffusers
/// converts them on load; `None` for every other key. Use with [`Weights::rename`].
///
/// ```
/// use svgen_eval::weights::diffusers_legacy_attention_key as rename;
/// assert_eq!(
///     rename("decoder.mid_block.attentions.0.proj_attn.weight").as_deref(),
///     Some("decoder.mid_block.attentions.0.to_out.0.weight")
/// );
/// assert_eq!(rename("decoder.conv_in.weight"), None);
/// ```
pub fn diffusers_legacy_attention_key(key: &str) -> Option<String> {
    const RENAMES: [(&str, &str); 4] = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    if !key.contains(".attentions.") {
        return None;
    }
    let (old, new) = RENAMES.iter().find(|(o, _)| key.contains(o))?;
    Some(key.replacen(old, new, 1))
}

impl Weights {
    /// Opens `{stem}.safetensors` in `dir`, or the shards listed by `{stem}.safetensors.index.json`
    /// (stems: [`TRANSFORMERS_STEM`], [`DIFFUSERS_STEM`], [`PEFT_STEM`]).
    ///
    /// # Errors
    /// [`WeightError::Io`] (not found when neither file exists), [`WeightError::Corrupt`],
    /// [`WeightError::BadIndex`], [`WeightError::UnsupportedDtype`] for a dtype this loader does not
    /// know.
    pub fn open(dir: impl AsRef<Path>, stem: &str) -> Result<Self> {
        let dir = dir.as_ref();
        let single = dir.join(format!("{stem}.safetensors"));
        if single.is_file() {
            return Self::open_file(single);
        }
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if index.is_file() {
            return Self::open_file(index);
        }
        Err(WeightError::io(
            single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {stem}.safetensors or {stem}.safetensors.index.json"),
            ),
        ))
    }

    /// Opens one safetensors file, or a shard index (a path ending in `.index.json`; the shards
    /// lie beside it).
    ///
    /// # Errors
    /// As [`Weights::open`].
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let is_index = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"));
        if !is_index {
            let source = open_source(path)?;
            return Self::from_shards(path.to_path_buf(), vec![(path.to_path_buf(), source)], None);
        }
        let index = index::read_index(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards = Vec::with_capacity(index.shards.len());
        for name in &index.shards {
            let p = dir.join(name);
            let source = open_source(&p)?;
            shards.push((p, source));
        }
        Self::from_shards(path.to_path_buf(), shards, Some(index))
    }

    /// Parses a safetensors file held in memory; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`Weights::open`].
    pub fn from_memory(bytes: Vec<u8>, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref().to_path_buf();
        Self::from_shards(origin.clone(), vec![(origin, Source::Memory(bytes))], None)
    }

    /// [`Weights::from_memory`] with svgen-eval's error type.
    ///
    /// # Errors
    /// [`crate::EvalError::WeightFile`] for a malformed file.
    pub fn from_bytes(bytes: Vec<u8>, origin: impl AsRef<Path>) -> crate::Result<Self> {
        Ok(Self::from_memory(bytes, origin)?)
    }

    /// [`Weights::open_file`] (kept under its earlier name).
    ///
    /// # Errors
    /// As [`Weights::open`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_file(path)
    }

    /// Weights over tensors already in memory (serialised once, then read like a file); `origin`
    /// names them in errors.
    ///
    /// # Errors
    /// [`WeightError::ShapeMismatch`] when a tensor's data disagrees with its shape,
    /// [`WeightError::BadKey`] for an empty or reserved name.
    pub fn from_tensors(
        tensors: &BTreeMap<String, HostTensor>,
        origin: impl AsRef<Path>,
    ) -> Result<Self> {
        Self::from_memory(safetensors_bytes(tensors, StoreDtype::Keep, None)?, origin)
    }

    /// Weights from named f32 tensors (`(name, values, shape)`), e.g. random weights for benchmarks.
    ///
    /// # Errors
    /// As [`Weights::from_tensors`]; [`WeightError::BadKey`] for a repeated name.
    pub fn from_f32_tensors(tensors: Vec<(String, Vec<f32>, Vec<usize>)>) -> Result<Self> {
        let origin = PathBuf::from("<memory>");
        let mut map = BTreeMap::new();
        for (name, values, shape) in tensors {
            if map.contains_key(&name) {
                return Err(WeightError::BadKey {
                    key: name,
                    path: origin,
                    reason: "given twice".into(),
                });
            }
            map.insert(name, HostTensor::f32(shape, values));
        }
        Self::from_tensors(&map, origin)
    }

    fn from_shards(
        origin: PathBuf,
        sources: Vec<(PathBuf, Source)>,
        index: Option<index::ShardIndex>,
    ) -> Result<Self> {
        let mut w = Weights {
            origin,
            shards: Vec::with_capacity(sources.len()),
            slots: Vec::new(),
            keys: BTreeMap::new(),
            metadata: BTreeMap::new(),
            float_dtype: None,
            require_grad: true,
            transpose_on: None,
        };
        for (i, (path, source)) in sources.into_iter().enumerate() {
            let (h, data_start) = read_header(&path, &source)?;
            for (k, v) in h.metadata {
                w.metadata.entry(k).or_insert(v);
            }
            for e in h.entries {
                if let Some(index) = &index {
                    if index.weight_map.get(&e.key) != Some(&i) {
                        return Err(WeightError::index(
                            &w.origin,
                            IndexProblem::Unlisted {
                                key: e.key,
                                shard: index.shards[i].clone(),
                            },
                        ));
                    }
                }
                w.keys.insert(e.key, w.slots.len());
                w.slots.push(Slot {
                    shard: i,
                    dtype: e.dtype,
                    shape: e.shape,
                    offset: data_start + e.begin,
                    used: AtomicBool::new(false),
                });
            }
            w.shards.push(Shard { path, source });
        }
        if let Some(index) = &index {
            if let Some((key, &i)) = index
                .weight_map
                .iter()
                .find(|(k, _)| !w.keys.contains_key(*k))
            {
                return Err(WeightError::index(
                    &w.origin,
                    IndexProblem::NotInShard {
                        key: key.clone(),
                        shard: index.shards[i].clone(),
                    },
                ));
            }
        }
        Ok(w)
    }

    /// Float tensors made by [`Weights::tensor`], [`Weights::param`], [`Weights::linear`], ... are
    /// created in `dtype` (default: the device's default float dtype).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.float_dtype = Some(dtype);
        self
    }

    /// Where [`Weights::linear_weight`] transposes (default: [`TransposeOn::for_backend`]).
    pub fn with_transpose_on(mut self, on: TransposeOn) -> Self {
        self.transpose_on = Some(on);
        self
    }

    /// Parameters made by [`Weights::param`], [`Weights::linear`], [`Weights::embedding`] do not
    /// require gradients (frozen base weights under LoRA).
    pub fn frozen(mut self) -> Self {
        self.require_grad = false;
        self
    }

    /// Renames keys: `f` returns the new name, or `None` to keep a key. Renames apply before the
    /// model takes its tensors, and errors name the new keys.
    ///
    /// # Errors
    /// [`WeightError::BadKey`] when two tensors end up with the same name.
    pub fn rename(mut self, mut f: impl FnMut(&str) -> Option<String>) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for (k, i) in std::mem::take(&mut self.keys) {
            let new = f(&k).unwrap_or(k);
            if keys.insert(new.clone(), i).is_some() {
                return Err(WeightError::BadKey {
                    key: new,
                    path: self.origin,
                    reason: "two tensors renamed to the same key".into(),
                });
            }
        }
        self.keys = keys;
        Ok(self)
    }

    /// Puts `prefix` in front of every key (e.g. `text_model.` for a `CLIPTextModel` saved by
    /// transformers 5, which drops the prefix that transformers 4 and `CLIPModel` files carry).
    ///
    /// ```
    /// use svgen_eval::weights::Weights;
    ///
    /// let w = Weights::from_f32_tensors(vec![("a.weight".into(), vec![1.0], vec![1])])?;
    /// let w = w.with_key_prefix("text_model.");
    /// assert!(w.contains("text_model.a.weight"));
    /// # Ok::<(), svgen_eval::weights::WeightError>(())
    /// ```
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        self.keys = std::mem::take(&mut self.keys)
            .into_iter()
            .map(|(k, i)| (format!("{prefix}{k}"), i))
            .collect();
        self
    }

    /// Removes `prefix` from the keys that start with it (PEFT's `base_model.model.`).
    ///
    /// # Errors
    /// [`WeightError::BadKey`] when a stripped key collides with an unprefixed one.
    pub fn strip_key_prefix(self, prefix: &str) -> Result<Self> {
        self.rename(|k| k.strip_prefix(prefix).map(str::to_string))
    }

    /// The checkpoint: the file, the index of a sharded checkpoint, or the in-memory origin.
    pub fn path(&self) -> &Path {
        &self.origin
    }

    /// The files holding the tensors (one for a single file).
    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// The header's `__metadata__` (of all shards; the first value wins).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.slot(key).map(|s| s.shape.as_slice())
    }

    /// Stored dtype of `key`, if present.
    pub fn dtype(&self, key: &str) -> Option<Dtype> {
        self.slot(key).map(|s| s.dtype)
    }

    fn slot(&self, key: &str) -> Option<&Slot> {
        self.keys.get(key).map(|&i| &self.slots[i])
    }

    fn missing(&self, key: &str, expected: &[usize]) -> WeightError {
        WeightError::MissingTensor {
            key: key.into(),
            path: self.origin.clone(),
            expected: expected.to_vec(),
        }
    }

    fn read(&self, key: &str, slot: &Slot, shape: Vec<usize>) -> Result<HostTensor> {
        slot.used.store(true, Ordering::Relaxed);
        let shard = &self.shards[slot.shard];
        // The element count was checked against the file when the header was read.
        let numel = slot.shape.iter().product();
        let data = shard
            .source
            .read_data(slot.dtype, numel, slot.offset)
            .map_err(|e| WeightError::io(&shard.path, e))?;
        HostTensor::new(key, shape, data)
    }

    /// Reads `key`, which must have shape `expected`, in its stored dtype. A scalar stored as `[]`
    /// or `[1]` matches either. Taking a key again reads it again.
    ///
    /// # Errors
    /// [`WeightError::MissingTensor`], [`WeightError::ShapeMismatch`], [`WeightError::Io`].
    pub fn take(&self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        let slot = self.slot(key).ok_or_else(|| self.missing(key, expected))?;
        let scalar = |s: &[usize]| s.len() <= 1 && s.iter().product::<usize>() == 1;
        if slot.shape != expected && !(scalar(&slot.shape) && scalar(expected)) {
            return Err(WeightError::ShapeMismatch {
                key: key.into(),
                expected: expected.to_vec(),
                found: slot.shape.clone(),
            });
        }
        self.read(key, slot, expected.to_vec())
    }

    /// Reads `key` whatever its shape.
    ///
    /// # Errors
    /// [`WeightError::MissingTensor`], [`WeightError::Io`].
    pub fn take_any(&self, key: &str) -> Result<HostTensor> {
        let slot = self.slot(key).ok_or_else(|| self.missing(key, &[]))?;
        self.read(key, slot, slot.shape.clone())
    }

    /// [`Weights::take`] as f32 (F8/F16/BF16 exactly, F64 rounded).
    ///
    /// # Errors
    /// As [`Weights::take`]; [`WeightError::UnsupportedDtype`] for integer data.
    pub fn f32(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        self.take(key, expected)?.into_f32(key)
    }

    /// [`Weights::take`] as i64 (every integer dtype, and booleans as 0/1).
    ///
    /// # Errors
    /// As [`Weights::take`]; [`WeightError::UnsupportedDtype`] for float data.
    pub fn i64(&self, key: &str, expected: &[usize]) -> Result<Vec<i64>> {
        self.take(key, expected)?.into_i64(key)
    }

    /// Values and shape of `key` as f32, whatever its shape (reference files).
    ///
    /// # Errors
    /// As [`Weights::f32`].
    pub fn f32_any(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self.take_any(key)?;
        let shape = t.shape.clone();
        Ok((t.into_f32(key)?, shape))
    }

    /// Values and shape of an integer tensor, whatever its shape (reference files).
    ///
    /// # Errors
    /// As [`Weights::i64`].
    pub fn i64_any(&self, key: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let t = self.take_any(key)?;
        let shape = t.shape.clone();
        Ok((t.into_i64(key)?, shape))
    }

    /// Reads every tensor (small files: adapters, reference outputs).
    ///
    /// # Errors
    /// [`WeightError::Io`].
    pub fn read_all(&self) -> Result<BTreeMap<String, HostTensor>> {
        self.keys()
            .map(|k| Ok((k.to_string(), self.take_any(k)?)))
            .collect()
    }

    /// Marks the keys for which `pred` holds as used, so that [`Weights::finish`] does not report
    /// them (buffers such as `position_ids` or rotary `inv_freq`, parts of a checkpoint that
    /// belong to another model).
    pub fn ignore(&self, pred: impl Fn(&str) -> bool) {
        for (k, &i) in &self.keys {
            if pred(k) {
                self.slots[i].used.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Keys neither taken nor ignored, sorted.
    pub fn unused_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, &i)| !self.slots[i].used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Checks that the model took (or ignored) every tensor.
    ///
    /// # Errors
    /// [`WeightError::UnusedTensors`] listing the others.
    pub fn finish(&self) -> Result<()> {
        let keys = self.unused_keys();
        if keys.is_empty() {
            Ok(())
        } else {
            Err(WeightError::UnusedTensors {
                path: self.origin.clone(),
                keys,
            })
        }
    }

    /// Uploads a float host tensor of rank `D` in the configured dtype ([`Weights::with_dtype`]).
    /// Half-precision data bound for f32 is widened on the host (in parallel) first.
    ///
    /// # Errors
    /// [`WeightError::ShapeMismatch`] for another rank, [`WeightError::UnsupportedDtype`] for
    /// integer data.
    pub fn make_tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        host: HostTensor,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        if host.shape.len() != D {
            return Err(WeightError::ShapeMismatch {
                key: key.into(),
                expected: vec![0; D],
                found: host.shape,
            });
        }
        if !host.dtype().is_float() {
            return Err(WeightError::UnsupportedDtype {
                key: key.into(),
                dtype: format!("{} (a float tensor is expected)", host.dtype()),
            });
        }
        let host = match self.float_dtype {
            None | Some(DType::F32) if host.dtype() != Dtype::F32 => {
                let shape = host.shape.clone();
                HostTensor::f32(shape, host.into_f32(key)?)
            }
            _ => host,
        };
        let data = host.into_tensor_data();
        Ok(match self.float_dtype {
            Some(dtype) => Tensor::from_data(data, (device, dtype)),
            None => Tensor::from_data(data, device),
        })
    }

    /// Wraps a tensor as a parameter, frozen when [`Weights::frozen`] was set.
    pub fn make_param<B: Backend, const D: usize>(&self, t: Tensor<B, D>) -> Param<Tensor<B, D>> {
        let p = Param::from_tensor(t);
        if self.require_grad {
            p
        } else {
            p.set_require_grad(false)
        }
    }

    /// A float tensor of shape `expected`.
    ///
    /// # Errors
    /// As [`Weights::take`] and [`Weights::make_tensor`].
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        self.make_tensor(key, self.take(key, &expected)?, device)
    }

    /// A float tensor of shape `expected` in `dtype`, whatever [`Weights::with_dtype`] says (e.g.
    /// norms kept in f32 in a bf16 model).
    ///
    /// # Errors
    /// As [`Weights::tensor`].
    pub fn tensor_as<B: Backend, const D: usize>(
        &self,
        key: &str,
        expected: [usize; D],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, D>> {
        let host = self.take(key, &expected)?;
        let host = if dtype == DType::F32 && host.dtype() != Dtype::F32 {
            HostTensor::f32(expected.to_vec(), host.into_f32(key)?)
        } else {
            host
        };
        if !host.dtype().is_float() {
            return Err(WeightError::UnsupportedDtype {
                key: key.into(),
                dtype: format!("{} (a float tensor is expected)", host.dtype()),
            });
        }
        Ok(Tensor::from_data(host.into_tensor_data(), (device, dtype)))
    }

    /// A parameter of shape `expected`.
    ///
    /// # Errors
    /// As [`Weights::tensor`].
    pub fn param<B: Backend, const D: usize>(
        &self,
        key: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>> {
        Ok(self.make_param(self.tensor(key, expected, device)?))
    }

    /// The weight of a linear layer: HF `[out, in]` at `key`, returned in Burn's `[in, out]` layout,
    /// transposed where [`Weights::with_transpose_on`] says (by default on the host, tiled and
    /// multi-threaded, for `Flex`, and on the device as a strided view for the other backends).
    ///
    /// # Errors
    /// As [`Weights::tensor`].
    pub fn linear_weight<B: Backend>(
        &self,
        key: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let host = self.take(key, &[d_out, d_in])?;
        match self
            .transpose_on
            .unwrap_or_else(TransposeOn::for_backend::<B>)
        {
            TransposeOn::Host => self.make_tensor(key, host.transposed(key)?, device),
            TransposeOn::Device => Ok(self.make_tensor::<B, 2>(key, host, device)?.transpose()),
        }
    }

    /// A Burn [`Linear`] from `{prefix}.weight` `[out, in]` and, when `bias`, `{prefix}.bias`
    /// `[out]` (an empty prefix reads `weight` and `bias`).
    ///
    /// # Errors
    /// As [`Weights::tensor`].
    pub fn linear<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let weight = self.linear_weight(&join(prefix, "weight"), d_in, d_out, device)?;
        let bias = if bias {
            Some(self.param(&join(prefix, "bias"), [d_out], device)?)
        } else {
            None
        };
        Ok(Linear {
            weight: self.make_param(weight),
            bias,
        })
    }

    /// A Burn [`Embedding`] from `{prefix}.weight` `[n, d]`.
    ///
    /// # Errors
    /// As [`Weights::tensor`].
    pub fn embedding<B: Backend>(
        &self,
        prefix: &str,
        n: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Embedding<B>> {
        Ok(Embedding {
            weight: self.param(&join(prefix, "weight"), [n, d], device)?,
        })
    }
}
