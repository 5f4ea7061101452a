//! The triplet record written to shards, and small helpers shared by the stages.

use serde::{Deserialize, Serialize};

/// Token-count label of a sample (the thesis' positive / negative split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Fewer tokens than the threshold: usable as a training target.
    Positive,
    /// At or above the threshold.
    Negative,
}

impl Label {
    /// `"positive"` or `"negative"` (the value stored in the `label` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Positive => "positive",
            Label::Negative => "negative",
        }
    }

    /// Parses the stored value.
    pub fn parse(s: &str) -> Option<Label> {
        match s {
            "positive" => Some(Label::Positive),
            "negative" => Some(Label::Negative),
            _ => None,
        }
    }
}

/// One (text, image, SVG) triplet: a row of a shard. See [`crate::storage`] for the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triplet {
    /// Stable unique id of the input record.
    pub id: String,
    /// Caption source name (`coco`, a file stem, ...).
    pub source: String,
    /// The original caption.
    pub caption: String,
    /// The simplified caption (`None` when no simplifier ran).
    pub simplified: Option<String>,
    /// The prompt sent to the generator.
    pub prompt: String,
    /// The negative prompt (`None` when empty).
    pub negative_prompt: Option<String>,
    /// Generator name.
    pub generator: String,
    /// Seed used by the generator, if seedable.
    pub seed: Option<i64>,
    /// The traced image, PNG-encoded (after background normalisation).
    #[serde(skip)]
    pub image: Vec<u8>,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The traced SVG document.
    pub svg: String,
    /// Tokens of `svg` under `tokenizer`.
    pub n_tokens: u32,
    /// Tokenizer name (`cl100k_base`).
    pub tokenizer: String,
    /// Positive / negative by token threshold.
    pub label: Label,
    /// CLIP cosine similarity between image and caption, when a scorer ran.
    pub clip_similarity: Option<f32>,
    /// LAION aesthetic score, when a scorer ran.
    pub aesthetic: Option<f32>,
    /// Creation time, microseconds since the Unix epoch (UTC).
    pub created_at: i64,
}

/// FNV-1a 64-bit hash: stable across platforms, Rust versions and runs (unlike `std`'s
/// `DefaultHasher`), so sharding and seeds never change.
///
/// ```
/// assert_eq!(svgen_data::sample::fnv1a64(b""), 0xcbf29ce484222325);
/// assert_eq!(svgen_data::sample::fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
/// ```
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The generation seed of a sample: a 31-bit hash of its id (fits every generator's seed type).
pub fn seed_for_id(id: &str) -> u64 {
    fnv1a64(id.as_bytes()) & 0x7fff_ffff
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// PNG-encodes an image.
pub fn encode_png(img: &image::DynamicImage) -> Result<Vec<u8>, String> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(out.into_inner())
}

/// Whether `bytes` start with the PNG signature.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}
