//! The safetensors header (`u64` length, then a JSON object), parsed and checked in full before
//! any tensor byte is read.
//!
//! Checks, in the spirit of usvg's parser limits: the header length is capped
//! ([`MAX_HEADER_BYTES`]) and must fit in the file; every entry has a known dtype, at most
//! [`MAX_RANK`] dimensions, and `data_offsets` inside the data section whose length equals dtype
//! size × element count (checked arithmetic); the entries tile the data section exactly, without
//! overlaps, holes or trailing bytes (as the format requires); keys are unique. Nothing is
//! allocated from a declared size before it has been checked against the file's real length.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::error::Corruption;

/// Largest header accepted (bytes); the `safetensors` crate's limit.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 64;

/// The element type of a stored tensor, as spelled in the safetensors header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// `BOOL`, one byte per element (0 or 1).
    Bool,
    /// `U8`.
    U8,
    /// `I8`.
    I8,
    /// `F8_E4M3`: PyTorch's `float8_e4m3fn` (no infinities, one NaN pattern per sign).
    F8E4M3,
    /// `F8_E5M2`: PyTorch's `float8_e5m2` (the top byte of an IEEE half).
    F8E5M2,
    /// `I16`.
    I16,
    /// `U16`.
    U16,
    /// `F16`: IEEE half.
    F16,
    /// `BF16`: bfloat16.
    BF16,
    /// `I32`.
    I32,
    /// `U32`.
    U32,
    /// `F32`.
    F32,
    /// `I64`.
    I64,
    /// `U64`.
    U64,
    /// `F64`.
    F64,
}

impl Dtype {
    const NAMES: [(&'static str, Dtype); 15] = [
        ("BOOL", Dtype::Bool),
        ("U8", Dtype::U8),
        ("I8", Dtype::I8),
        ("F8_E4M3", Dtype::F8E4M3),
        ("F8_E5M2", Dtype::F8E5M2),
        ("I16", Dtype::I16),
        ("U16", Dtype::U16),
        ("F16", Dtype::F16),
        ("BF16", Dtype::BF16),
        ("I32", Dtype::I32),
        ("U32", Dtype::U32),
        ("F32", Dtype::F32),
        ("I64", Dtype::I64),
        ("U64", Dtype::U64),
        ("F64", Dtype::F64),
    ];

    /// Parses a header name (`"BF16"`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
    }

    /// The header name (`"BF16"`).
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, d)| *d == self)
            .map_or("?", |(n, _)| n)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Whether the elements are floating point.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
        )
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a header, with its byte range relative to the start of the data section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub begin: u64,
    pub end: u64,
}

/// A checked header.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    pub entries: Vec<Entry>,
    pub metadata: BTreeMap<String, String>,
}

/// Header problems: corruption, or a dtype this loader does not know.
#[derive(Debug)]
pub(crate) enum HeaderError {
    Corrupt(Corruption),
    UnknownDtype { key: String, dtype: String },
}

impl From<Corruption> for HeaderError {
    fn from(c: Corruption) -> Self {
        HeaderError::Corrupt(c)
    }
}

/// The header length from the first 8 bytes, checked against the limit and the file length.
pub(crate) fn header_len(prefix: [u8; 8], file_len: u64) -> Result<u64, Corruption> {
    let len = u64::from_le_bytes(prefix);
    if len > MAX_HEADER_BYTES {
        return Err(Corruption::HeaderTooLarge {
            len,
            limit: MAX_HEADER_BYTES,
        });
    }
    if len > file_len.saturating_sub(8) {
        return Err(Corruption::HeaderPastEnd { len, file_len });
    }
    Ok(len)
}

/// The top-level object as (key, value) pairs in file order, so that duplicates are seen.
struct Pairs(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    out.push(kv);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn bad(key: &str, message: impl Into<String>) -> Corruption {
    Corruption::BadEntry {
        key: key.to_string(),
        message: message.into(),
    }
}

fn u64_list(key: &str, v: Option<&Value>, field: &str) -> Result<Vec<u64>, Corruption> {
    let arr = v.and_then(Value::as_array).ok_or_else(|| {
        bad(
            key,
            format!("`{field}` must be a list of non-negative integers"),
        )
    })?;
    arr.iter()
        .map(|x| {
            x.as_u64()
                .ok_or_else(|| bad(key, format!("`{field}` must hold non-negative integers")))
        })
        .collect()
}

fn parse_entry(key: String, v: &Value, data_len: u64) -> Result<Entry, HeaderError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(&key, "entry is not an object"))?;
    let name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(&key, "`dtype` must be a string"))?;
    let Some(dtype) = Dtype::from_name(name) else {
        return Err(HeaderError::UnknownDtype {
            key,
            dtype: name.to_string(),
        });
    };
    let dims = u64_list(&key, obj.get("shape"), "shape")?;
    if dims.len() > MAX_RANK {
        return Err(Corruption::RankTooLarge {
            key,
            rank: dims.len(),
            limit: MAX_RANK,
        }
        .into());
    }
    let offsets = u64_list(&key, obj.get("data_offsets"), "data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(bad(&key, "`data_offsets` must hold two offsets").into());
    };
    let overflow = || Corruption::SizeOverflow {
        key: key.clone(),
        shape: dims.clone(),
    };
    // An empty tensor has no bytes whatever its other dimensions.
    let numel = if dims.contains(&0) {
        0
    } else {
        dims.iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(overflow)?
    };
    let bytes = numel
        .checked_mul(dtype.size() as u64)
        .ok_or_else(overflow)?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| overflow()))
        .collect::<Result<Vec<_>, _>>()?;
    if begin > end || end > data_len {
        return Err(Corruption::OutOfBounds {
            key,
            begin,
            end,
            data_len,
        }
        .into());
    }
    if end - begin != bytes {
        return Err(Corruption::ByteLength {
            key,
            expected: bytes,
            found: end - begin,
        }
        .into());
    }
    // The bytes will be held in memory: they must be addressable.
    usize::try_from(bytes).map_err(|_| overflow())?;
    Ok(Entry {
        key,
        dtype,
        shape,
        begin,
        end,
    })
}

/// Parses and checks the JSON header of a file whose data section has `data_len` bytes.
pub(crate) fn parse_header(json: &[u8], data_len: u64) -> Result<Header, HeaderError> {
    let Pairs(pairs) =
        serde_json::from_slice(json).map_err(|e| Corruption::HeaderSyntax(e.to_string()))?;
    let mut header = Header::default();
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    for (key, v) in pairs {
        if !seen.insert(key.clone()) {
            return Err(Corruption::DuplicateKey(key).into());
        }
        if key == "__metadata__" {
            let obj = v
                .as_object()
                .ok_or_else(|| Corruption::BadMetadata("not an object".into()))?;
            for (k, val) in obj {
                let s = val
                    .as_str()
                    .ok_or_else(|| Corruption::BadMetadata(format!("`{k}` is not a string")))?;
                header.metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        header.entries.push(parse_entry(key, &v, data_len)?);
    }
    check_tiling(&header.entries, data_len)?;
    Ok(header)
}

/// The entries must cover `0..data_len` exactly once.
fn check_tiling(entries: &[Entry], data_len: u64) -> Result<(), Corruption> {
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by_key(|e| (e.begin, e.end));
    let mut cursor = 0u64;
    let mut last: Option<&Entry> = None;
    for e in order {
        if e.begin < cursor {
            return Err(Corruption::Overlap {
                first: last.map(|l| l.key.clone()).unwrap_or_default(),
                second: e.key.clone(),
            });
        }
        if e.begin > cursor {
            return Err(Corruption::Gap {
                begin: cursor,
                end: e.begin,
            });
        }
        if e.end > e.begin {
            cursor = e.end;
            last = Some(e);
        }
    }
    if cursor != data_len {
        return Err(Corruption::Gap {
            begin: cursor,
            end: data_len,
        });
    }
    Ok(())
}
