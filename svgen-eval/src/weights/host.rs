//! Tensors in host memory, in the dtype they were stored in, and their conversions.

use std::borrow::Cow;

use burn::tensor::TensorData;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::error::WeightError;
use super::header::Dtype;

/// Element data of a [`HostTensor`], one variant per stored dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// `BOOL`.
    Bool(Vec<bool>),
    /// `U8`.
    U8(Vec<u8>),
    /// `I8`.
    I8(Vec<i8>),
    /// `F8_E4M3` bit patterns.
    F8E4M3(Vec<u8>),
    /// `F8_E5M2` bit patterns.
    F8E5M2(Vec<u8>),
    /// `I16`.
    I16(Vec<i16>),
    /// `U16`.
    U16(Vec<u16>),
    /// `F16`.
    F16(Vec<f16>),
    /// `BF16`.
    BF16(Vec<bf16>),
    /// `I32`.
    I32(Vec<i32>),
    /// `U32`.
    U32(Vec<u32>),
    /// `F32`.
    F32(Vec<f32>),
    /// `I64`.
    I64(Vec<i64>),
    /// `U64`.
    U64(Vec<u64>),
    /// `F64`.
    F64(Vec<f64>),
}

/// Dispatches `$body` over every variant of a [`HostData`], binding the vector to `$v`.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            HostData::Bool($v) => $body,
            HostData::U8($v) => $body,
            HostData::I8($v) => $body,
            HostData::F8E4M3($v) => $body,
            HostData::F8E5M2($v) => $body,
            HostData::I16($v) => $body,
            HostData::U16($v) => $body,
            HostData::F16($v) => $body,
            HostData::BF16($v) => $body,
            HostData::I32($v) => $body,
            HostData::U32($v) => $body,
            HostData::F32($v) => $body,
            HostData::I64($v) => $body,
            HostData::U64($v) => $body,
            HostData::F64($v) => $body,
        }
    };
}

/// Maps every variant of a [`HostData`] to the same variant, `$body` giving the new vector.
macro_rules! map_same {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            HostData::Bool($v) => HostData::Bool($body),
            HostData::U8($v) => HostData::U8($body),
            HostData::I8($v) => HostData::I8($body),
            HostData::F8E4M3($v) => HostData::F8E4M3($body),
            HostData::F8E5M2($v) => HostData::F8E5M2($body),
            HostData::I16($v) => HostData::I16($body),
            HostData::U16($v) => HostData::U16($body),
            HostData::F16($v) => HostData::F16($body),
            HostData::BF16($v) => HostData::BF16($body),
            HostData::I32($v) => HostData::I32($body),
            HostData::U32($v) => HostData::U32($body),
            HostData::F32($v) => HostData::F32($body),
            HostData::I64($v) => HostData::I64($body),
            HostData::U64($v) => HostData::U64($body),
            HostData::F64($v) => HostData::F64($body),
        }
    };
}

impl HostData {
    /// The dtype the data is held in.
    pub fn dtype(&self) -> Dtype {
        match self {
            HostData::Bool(_) => Dtype::Bool,
            HostData::U8(_) => Dtype::U8,
            HostData::I8(_) => Dtype::I8,
            HostData::F8E4M3(_) => Dtype::F8E4M3,
            HostData::F8E5M2(_) => Dtype::F8E5M2,
            HostData::I16(_) => Dtype::I16,
            HostData::U16(_) => Dtype::U16,
            HostData::F16(_) => Dtype::F16,
            HostData::BF16(_) => Dtype::BF16,
            HostData::I32(_) => Dtype::I32,
            HostData::U32(_) => Dtype::U32,
            HostData::F32(_) => Dtype::F32,
            HostData::I64(_) => Dtype::I64,
            HostData::U64(_) => Dtype::U64,
            HostData::F64(_) => Dtype::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The little-endian bytes, as safetensors stores them (borrowed on little-endian hosts).
    pub(crate) fn le_bytes(&self) -> Cow<'_, [u8]> {
        fn le<T: bytemuck::Pod, const N: usize>(
            v: &[T],
            f: impl Fn(T) -> [u8; N],
        ) -> Cow<'_, [u8]> {
            if cfg!(target_endian = "little") {
                Cow::Borrowed(bytemuck::cast_slice(v))
            } else {
                Cow::Owned(v.iter().flat_map(|&x| f(x)).collect())
            }
        }
        match self {
            HostData::Bool(v) => Cow::Owned(v.iter().map(|&b| u8::from(b)).collect()),
            HostData::U8(v) | HostData::F8E4M3(v) | HostData::F8E5M2(v) => Cow::Borrowed(v),
            HostData::I8(v) => le(v, i8::to_le_bytes),
            HostData::I16(v) => le(v, i16::to_le_bytes),
            HostData::U16(v) => le(v, u16::to_le_bytes),
            HostData::F16(v) => le(v, f16::to_le_bytes),
            HostData::BF16(v) => le(v, bf16::to_le_bytes),
            HostData::I32(v) => le(v, i32::to_le_bytes),
            HostData::U32(v) => le(v, u32::to_le_bytes),
            HostData::F32(v) => le(v, f32::to_le_bytes),
            HostData::I64(v) => le(v, i64::to_le_bytes),
            HostData::U64(v) => le(v, u64::to_le_bytes),
            HostData::F64(v) => le(v, f64::to_le_bytes),
        }
    }

    /// Float data as f32 (exact for F8/F16/BF16, rounded to nearest for F64); `None` for integers.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(match self {
            HostData::F32(v) => v.clone(),
            _ => return self.clone().into_f32(),
        })
    }

    /// Float data as f32 without a copy when it already is; `None` for integers.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        Some(match self {
            HostData::F32(v) => v,
            HostData::F16(v) => widen(&v, |src, dst| src.convert_to_f32_slice(dst)),
            HostData::BF16(v) => widen(&v, |src, dst| src.convert_to_f32_slice(dst)),
            HostData::F64(v) => v.par_iter().map(|&x| x as f32).collect(),
            HostData::F8E4M3(v) => v.iter().map(|&b| f8_e4m3_to_f32(b)).collect(),
            HostData::F8E5M2(v) => v.iter().map(|&b| f8_e5m2_to_f32(b)).collect(),
            _ => return None,
        })
    }

    /// Integer or boolean data as i64 (booleans as 0/1); `None` for floats and for U64 values
    /// above `i64::MAX`.
    pub fn into_i64(self) -> Option<Vec<i64>> {
        fn cast<T: Copy + Into<i64>>(v: Vec<T>) -> Option<Vec<i64>> {
            Some(v.into_iter().map(Into::into).collect())
        }
        match self {
            HostData::I64(v) => Some(v),
            HostData::Bool(v) => Some(v.into_iter().map(i64::from).collect()),
            HostData::U8(v) => cast(v),
            HostData::I8(v) => cast(v),
            HostData::I16(v) => cast(v),
            HostData::U16(v) => cast(v),
            HostData::I32(v) => cast(v),
            HostData::U32(v) => cast(v),
            HostData::U64(v) => v.into_iter().map(|x| i64::try_from(x).ok()).collect(),
            _ => None,
        }
    }
}

/// Converts 16-bit floats in parallel chunks (half's slice conversion uses F16C where available).
fn widen<T: Sync>(src: &[T], f: impl Fn(&[T], &mut [f32]) + Sync) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| f(s, d));
    out
}

/// `float8_e4m3fn`: bias 7, no infinities, `S.1111.111` is NaN.
pub fn f8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0x0f);
    let man = f32::from(b & 0x07);
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man * 2f32.powi(-9)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// `float8_e5m2`: the upper byte of an IEEE half (bias 15, with infinities and NaNs).
pub fn f8_e5m2_to_f32(b: u8) -> f32 {
    f16::from_bits(u16::from(b) << 8).to_f32()
}

/// A tensor in host memory, row-major, in the dtype it was stored in.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: HostData,
}

impl HostTensor {
    /// A tensor from its shape and data.
    ///
    /// # Errors
    /// [`WeightError::ShapeMismatch`] (naming `key`) when the element count disagrees with the shape.
    pub fn new(key: &str, shape: Vec<usize>, data: HostData) -> Result<Self, WeightError> {
        let t = HostTensor { shape, data };
        t.check(key)?;
        Ok(t)
    }

    /// An f32 tensor (no check; [`crate::weights::write_safetensors`] checks before writing).
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        HostTensor {
            shape,
            data: HostData::F32(data),
        }
    }

    /// The dtype the data is held in.
    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    /// The element count the shape implies, `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// Checks that the data holds exactly as many elements as the shape implies.
    ///
    /// # Errors
    /// [`WeightError::ShapeMismatch`] naming `key`, with the shape as `expected` and the element
    /// count as `found`.
    pub fn check(&self, key: &str) -> Result<(), WeightError> {
        if self.numel() != Some(self.data.len()) {
            return Err(WeightError::ShapeMismatch {
                key: key.into(),
                expected: self.shape.clone(),
                found: vec![self.data.len()],
            });
        }
        Ok(())
    }

    /// The float data as f32 (F8/F16/BF16 exactly, F64 rounded).
    ///
    /// # Errors
    /// [`WeightError::UnsupportedDtype`] naming `key` for integer or boolean data.
    pub fn into_f32(self, key: &str) -> Result<Vec<f32>, WeightError> {
        let dtype = self.dtype();
        self.data
            .into_f32()
            .ok_or_else(|| WeightError::UnsupportedDtype {
                key: key.into(),
                dtype: format!("{dtype} (a float tensor is expected)"),
            })
    }

    /// The integer or boolean data as i64.
    ///
    /// # Errors
    /// [`WeightError::UnsupportedDtype`] naming `key` for float data or U64 values above
    /// `i64::MAX`.
    pub fn into_i64(self, key: &str) -> Result<Vec<i64>, WeightError> {
        let dtype = self.dtype();
        self.data
            .into_i64()
            .ok_or_else(|| WeightError::UnsupportedDtype {
                key: key.into(),
                dtype: format!("{dtype} (an integer tensor within i64 is expected)"),
            })
    }

    /// Burn tensor data in the stored dtype (F8 data, which Burn has no element type for, becomes
    /// F32). Pass it to `Tensor::from_data(data, (device, dtype))` to convert on creation.
    pub fn into_tensor_data(self) -> TensorData {
        let shape = self.shape;
        match self.data {
            HostData::Bool(v) => TensorData::new(v, shape),
            HostData::U8(v) => TensorData::new(v, shape),
            HostData::I8(v) => TensorData::new(v, shape),
            d @ (HostData::F8E4M3(_) | HostData::F8E5M2(_)) => {
                TensorData::new(d.into_f32().unwrap_or_default(), shape)
            }
            HostData::I16(v) => TensorData::new(v, shape),
            HostData::U16(v) => TensorData::new(v, shape),
            HostData::F16(v) => TensorData::new(v, shape),
            HostData::BF16(v) => TensorData::new(v, shape),
            HostData::I32(v) => TensorData::new(v, shape),
            HostData::U32(v) => TensorData::new(v, shape),
            HostData::F32(v) => TensorData::new(v, shape),
            HostData::I64(v) => TensorData::new(v, shape),
            HostData::U64(v) => TensorData::new(v, shape),
            HostData::F64(v) => TensorData::new(v, shape),
        }
    }

    /// The transpose of a 2-D tensor (`[rows, cols]` → `[cols, rows]`), in the same dtype.
    ///
    /// # Errors
    /// [`WeightError::ShapeMismatch`] naming `key` when the tensor is not 2-D or its data does not
    /// match its shape.
    pub fn transposed(self, key: &str) -> Result<Self, WeightError> {
        self.check(key)?;
        let [rows, cols] = self.shape[..] else {
            return Err(WeightError::ShapeMismatch {
                key: key.into(),
                expected: vec![0, 0],
                found: self.shape,
            });
        };
        let data = map_same!(self.data, v => transpose(&v, rows, cols));
        Ok(HostTensor {
            shape: vec![cols, rows],
            data,
        })
    }
}

/// Transposes a row-major `[rows, cols]` matrix into `[cols, rows]`: 32×32 tiles, output rows
/// split across threads (memory-bound; several GB/s on a multi-core host).
///
/// # Panics
/// When `src.len() != rows * cols` (callers check shapes first).
pub fn transpose<T: Copy + Send + Sync>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(
        src.len(),
        rows * cols,
        "transpose: data does not match shape"
    );
    let Some(&first) = src.first() else {
        return Vec::new();
    };
    const TILE: usize = 32;
    let mut out = vec![first; src.len()];
    let block = |(bi, chunk): (usize, &mut [T])| {
        // `chunk` holds output rows c0..c0 + chunk.len() / rows, i.e. input columns.
        let c0 = bi * TILE;
        let nc = chunk.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for c in 0..nc {
                let dst = &mut chunk[c * rows + r0..c * rows + r1];
                for (d, r) in dst.iter_mut().zip(r0..r1) {
                    *d = src[r * cols + c0 + c];
                }
            }
        }
    };
    if src.len() < 1 << 16 {
        out.chunks_mut(TILE * rows).enumerate().for_each(block);
    } else {
        out.par_chunks_mut(TILE * rows).enumerate().for_each(block);
    }
    out
}
