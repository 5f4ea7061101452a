//! Writing safetensors files (adapters, checkpoints, reference tensors).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::{json, Map, Value};

use super::error::WeightError;
use super::host::{HostData, HostTensor};

/// The dtype float tensors are written in; integer and boolean tensors keep their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    /// Each tensor in the dtype it holds.
    Keep,
    /// 32-bit floats.
    F32,
    /// bfloat16 (round to nearest even, as `torch.Tensor.to(torch.bfloat16)`).
    BF16,
    /// IEEE half (round to nearest even).
    F16,
}

impl StoreDtype {
    /// The `torch_dtype` / `dtype` spelling used in HF config files (`float32`; `None` for `Keep`).
    pub fn torch_name(self) -> Option<&'static str> {
        match self {
            StoreDtype::Keep => None,
            StoreDtype::F32 => Some("float32"),
            StoreDtype::BF16 => Some("bfloat16"),
            StoreDtype::F16 => Some("float16"),
        }
    }
}

/// `data` as it will be stored: floats converted to `dtype`, the rest unchanged.
fn stored(data: &HostData, dtype: StoreDtype) -> Cow<'_, HostData> {
    if !data.dtype().is_float() || dtype == StoreDtype::Keep || data_matches(data, dtype) {
        return Cow::Borrowed(data);
    }
    let f = data.to_f32().unwrap_or_default();
    Cow::Owned(match dtype {
        StoreDtype::F32 | StoreDtype::Keep => HostData::F32(f),
        StoreDtype::BF16 => HostData::BF16(f.into_iter().map(bf16::from_f32).collect()),
        StoreDtype::F16 => HostData::F16(f.into_iter().map(f16::from_f32).collect()),
    })
}

fn data_matches(data: &HostData, dtype: StoreDtype) -> bool {
    matches!(
        (data, dtype),
        (HostData::F32(_), StoreDtype::F32)
            | (HostData::BF16(_), StoreDtype::BF16)
            | (HostData::F16(_), StoreDtype::F16)
    )
}

/// The header (padded with spaces to a multiple of 8 bytes, as the `safetensors` crate does) and
/// the tensors in key order, after checking every tensor.
fn layout<'a>(
    origin: &Path,
    tensors: &'a BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(Vec<u8>, Vec<&'a String>), WeightError> {
    let mut header = Map::new();
    if let Some(m) = metadata {
        let m: Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut offset = 0u64;
    let mut order = Vec::with_capacity(tensors.len());
    for (key, t) in tensors {
        if key.is_empty() || key == "__metadata__" {
            return Err(WeightError::BadKey {
                key: key.clone(),
                path: origin.to_path_buf(),
                reason: "reserved or empty name".into(),
            });
        }
        t.check(key)?;
        let out_dtype = match (t.dtype().is_float(), dtype) {
            (true, StoreDtype::F32) => super::Dtype::F32,
            (true, StoreDtype::BF16) => super::Dtype::BF16,
            (true, StoreDtype::F16) => super::Dtype::F16,
            _ => t.dtype(),
        };
        let n = (t.data.len() as u64) * out_dtype.size() as u64;
        header.insert(
            key.clone(),
            json!({
                "dtype": out_dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + n],
            }),
        );
        offset += n;
        order.push(key);
    }
    let mut text = serde_json::to_vec(&Value::Object(header)).map_err(|e| WeightError::Io {
        path: origin.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    Ok((text, order))
}

/// Serialises tensors into `out` (one tensor's bytes in memory at a time).
fn write_to(
    out: &mut impl Write,
    origin: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), WeightError> {
    let (header, order) = layout(origin, tensors, dtype, metadata)?;
    let io = |e| WeightError::io(origin, e);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for key in order {
        let data = stored(&tensors[key].data, dtype);
        out.write_all(&data.le_bytes()).map_err(io)?;
    }
    Ok(())
}

/// The bytes of a safetensors file holding `tensors` (see [`write_safetensors`]).
///
/// # Errors
/// As [`write_safetensors`], without the I/O.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<Vec<u8>, WeightError> {
    let mut out = Vec::new();
    write_to(&mut out, Path::new("<memory>"), tensors, dtype, metadata)?;
    Ok(out)
}

/// Writes `tensors` to a safetensors file at `path`: floats in `dtype`, integers and booleans as
/// they are, `metadata` as the header's `__metadata__`. Parent folders are created.
///
/// The file appears atomically: the data goes to a temporary file in the same folder, which is
/// synced and then renamed over `path`, so a crash never leaves a truncated checkpoint behind.
///
/// # Errors
/// [`WeightError::ShapeMismatch`] when a tensor's data disagrees with its shape,
/// [`WeightError::BadKey`] for an empty or reserved (`__metadata__`) name, [`WeightError::Io`].
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), WeightError> {
    let path = path.as_ref();
    // Check everything before creating any file.
    layout(path, tensors, dtype, metadata)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| WeightError::io(&parent, e))?;
    let name = path
        .file_name()
        .map_or_else(|| "weights".into(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| WeightError::io(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        write_to(&mut w, path, tensors, dtype, metadata)?;
        let file = w
            .into_inner()
            .map_err(|e| WeightError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| WeightError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| WeightError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
