//! Shard indexes (`{stem}.safetensors.index.json`): `{"metadata": {...}, "weight_map": {key: shard}}`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use serde_json::Value;

use super::error::{IndexProblem, WeightError};

/// Largest index file read (bytes); real ones are well under a megabyte.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The parsed index: shard names in first-seen order, and key → position in that list.
#[derive(Debug)]
pub(crate) struct ShardIndex {
    pub shards: Vec<String>,
    pub weight_map: BTreeMap<String, usize>,
}

/// Whether `name` is a plain file name: one normal path component, no separators, no `..`.
fn plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(parts.next(), Some(Component::Normal(c)) if c == name)
        && parts.next().is_none()
        && !name.contains(['/', '\\', ':', '\0'])
        && !name.contains("..")
}

/// Reads and checks an index file.
pub(crate) fn read_index(path: &Path) -> Result<ShardIndex, WeightError> {
    let io = |e| WeightError::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_INDEX_BYTES {
        return Err(WeightError::index(
            path,
            IndexProblem::TooLarge {
                len,
                limit: MAX_INDEX_BYTES,
            },
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_INDEX_BYTES)
        .read_to_end(&mut text)
        .map_err(io)?;
    let syntax = |m: String| WeightError::index(path, IndexProblem::Syntax(m));
    let v: Value = serde_json::from_slice(&text).map_err(|e| syntax(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| syntax("no `weight_map` object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (key, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| syntax(format!("the shard of `{key}` is not a string")))?;
        if !plain_file_name(shard) {
            return Err(WeightError::index(
                path,
                IndexProblem::ShardName {
                    key: key.clone(),
                    shard: shard.to_string(),
                },
            ));
        }
        let i = match shards.iter().position(|s| s == shard) {
            Some(i) => i,
            None => {
                shards.push(shard.to_string());
                shards.len() - 1
            }
        };
        weight_map.insert(key.clone(), i);
    }
    Ok(ShardIndex { shards, weight_map })
}
