//! Reading and writing safetensors files (single or sharded HF checkpoints) on the host.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Result, TrainError};

/// The element data of a [`HostTensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// Floating point data (f64/f32/bf16/f16 are all widened or narrowed to f32).
    F32(Vec<f32>),
    /// Integer data (all integer dtypes widened to i64).
    I64(Vec<i64>),
}

/// A tensor held in host memory, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: HostData,
}

impl HostTensor {
    /// A float tensor.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: HostData::F32(data),
        }
    }

    /// The float data, or a typed error naming `key` when the tensor holds integers.
    pub fn into_f32(self, key: &str) -> Result<Vec<f32>> {
        match self.data {
            HostData::F32(v) => Ok(v),
            HostData::I64(_) => Err(TrainError::UnsupportedDtype {
                key: key.into(),
                dtype: "integer (float expected)".into(),
            }),
        }
    }

    /// The integer data, or a typed error naming `key` when the tensor holds floats.
    pub fn into_i64(self, key: &str) -> Result<Vec<i64>> {
        match self.data {
            HostData::I64(v) => Ok(v),
            HostData::F32(_) => Err(TrainError::UnsupportedDtype {
                key: key.into(),
                dtype: "float (integer expected)".into(),
            }),
        }
    }
}

fn safetensors_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn decode(key: &str, dtype: Dtype, bytes: &[u8]) -> Result<HostData> {
    fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    Ok(match dtype {
        Dtype::F32 => HostData::F32(chunks::<4>(bytes).map(f32::from_le_bytes).collect()),
        Dtype::F64 => HostData::F32(
            chunks::<8>(bytes)
                .map(|c| f64::from_le_bytes(c) as f32)
                .collect(),
        ),
        Dtype::BF16 => HostData::F32(
            chunks::<2>(bytes)
                .map(|c| half::bf16::from_le_bytes(c).to_f32())
                .collect(),
        ),
        Dtype::F16 => HostData::F32(
            chunks::<2>(bytes)
                .map(|c| half::f16::from_le_bytes(c).to_f32())
                .collect(),
        ),
        Dtype::I64 => HostData::I64(chunks::<8>(bytes).map(i64::from_le_bytes).collect()),
        Dtype::I32 => HostData::I64(
            chunks::<4>(bytes)
                .map(|c| i32::from_le_bytes(c) as i64)
                .collect(),
        ),
        Dtype::U8 => HostData::I64(bytes.iter().map(|&b| b as i64).collect()),
        Dtype::BOOL => HostData::I64(bytes.iter().map(|&b| (b != 0) as i64).collect()),
        other => {
            return Err(TrainError::UnsupportedDtype {
                key: key.into(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| TrainError::io(path, e))
}

/// Reads every tensor of one safetensors file.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, HostTensor>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| safetensors_err(path, e))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let data = decode(name, view.dtype(), view.data())?;
        out.insert(
            name.to_string(),
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// The on-disk dtype used when writing float tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    /// 32-bit float.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
}

/// Writes float / integer tensors into a safetensors file.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: StoreDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (dt, bytes) = match (&t.data, dtype) {
            (HostData::F32(v), StoreDtype::F32) => {
                (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            (HostData::F32(v), StoreDtype::BF16) => (
                Dtype::BF16,
                v.iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (HostData::F32(v), StoreDtype::F16) => (
                Dtype::F16,
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            (HostData::I64(v), _) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        encoded.push((name.clone(), dt, t.shape.clone(), bytes));
    }
    let mut views = Vec::with_capacity(encoded.len());
    for (name, dt, shape, bytes) in &encoded {
        let view = safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
            .map_err(|e| safetensors_err(path, e))?;
        views.push((name.clone(), view));
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
        }
    }
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| safetensors_err(path, e))
}

/// A Hugging Face checkpoint folder: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// Key -> index into `files`, when an index file names it.
    index: Option<HashMap<String, usize>>,
}

impl Checkpoint {
    /// Opens a checkpoint folder. Fails with a typed error if neither layout is present.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.is_file() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| TrainError::io(&index_path, e))?;
            let v: Value =
                serde_json::from_str(&text).map_err(|e| TrainError::json(&index_path, e))?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| TrainError::json(&index_path, "no `weight_map` object"))?;
            let mut files: Vec<PathBuf> = Vec::new();
            let mut by_name: HashMap<String, usize> = HashMap::new();
            let mut index = HashMap::new();
            for (key, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    TrainError::json(&index_path, format!("`{key}`: not a string"))
                })?;
                if file.contains("..") || file.contains('/') || file.contains('\\') {
                    return Err(TrainError::json(
                        &index_path,
                        format!("shard name `{file}` must be a plain file name"),
                    ));
                }
                let next = files.len();
                let i = *by_name.entry(file.to_string()).or_insert(next);
                if i == next {
                    files.push(dir.join(file));
                }
                index.insert(key.clone(), i);
            }
            return Ok(Self {
                dir,
                files,
                index: Some(index),
            });
        }
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Ok(Self {
                dir,
                files: vec![single],
                index: None,
            });
        }
        Err(TrainError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors or model.safetensors.index.json",
            ),
        ))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Visits every tensor, one file at a time (so at most one shard is held in host memory).
    /// Keys named by the index must be present in the shard the index names.
    pub fn for_each_tensor(&self, mut f: impl FnMut(&str, HostTensor) -> Result<()>) -> Result<()> {
        for (i, path) in self.files.iter().enumerate() {
            let bytes = read_file(path)?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| safetensors_err(path, e))?;
            if let Some(index) = &self.index {
                for (key, &fi) in index {
                    if fi == i && st.tensor(key).is_err() {
                        return Err(TrainError::MissingTensor {
                            key: key.clone(),
                            path: path.clone(),
                        });
                    }
                }
            }
            for (name, view) in st.iter() {
                let data = decode(name, view.dtype(), view.data())?;
                let shape = view.shape().to_vec();
                let n: usize = shape.iter().product();
                let len = match &data {
                    HostData::F32(v) => v.len(),
                    HostData::I64(v) => v.len(),
                };
                if len != n {
                    return Err(safetensors_err(path, format!("`{name}`: truncated data")));
                }
                f(name, HostTensor { shape, data })?;
            }
        }
        Ok(())
    }
}
