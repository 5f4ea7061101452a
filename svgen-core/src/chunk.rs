//! Splitting an SVG into self-contained chunks under a token budget (the thesis' future
//! work: long SVGs fed to a language model piece by piece).
//!
//! [`chunk`] compacts the document, then packs its top-level elements, in painting order, into
//! complete SVG documents. Each chunk repeats the root element (viewBox, size, hoisted
//! presentation attributes) and carries the definitions (gradients, clip paths, masks) its
//! elements reference, so it renders on its own. Groups whose children can be painted
//! separately without changing the picture (no opacity, mask, filter or blending) are opened
//! up when they do not fit whole; their transform and clip are repeated on each part.
//! [`reassemble`] concatenates the chunks back into one document with the same picture.
//!
//! ```
//! use svgen_core::{chunk::{chunk, reassemble}, Cl100k, Svg};
//! let svg = Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
//!     <path d="M1 1h4v4H1z" fill="red"/><path d="M9 1h4v4H9z" fill="blue"/>
//!     <path d="M17 1h4v4h-4z" fill="green"/></svg>"#).unwrap();
//! let chunks = chunk(&svg, &Cl100k::new(), 60).unwrap();
//! assert!(chunks.len() > 1 && chunks.iter().all(|c| c.tokens() <= 60));
//! let whole = reassemble(&chunks);
//! assert!(Svg::parse(whole.as_bytes()).is_ok());
//! ```

use crate::compact::{CompactOptions, Doc, Item};
use crate::tokens::TokenCounter;
use crate::Svg;

/// One self-contained piece of a chunked document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    svg: String,
    tokens: usize,
    header: String,
    defs: Vec<(String, String)>,
    body: String,
}

impl Chunk {
    /// The chunk as a complete SVG document.
    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// Its token count under the counter given to [`chunk`].
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

/// Why a document could not be chunked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// One element (with the root element and the definitions it needs) is over budget on
    /// its own and cannot be split without changing the picture.
    #[error(
        "element {index} needs {tokens} tokens on its own (with root and definitions), over \
         the budget of {max_tokens}"
    )]
    ElementTooLarge {
        /// Index of the element in painting order among the document's splittable units.
        index: usize,
        /// Tokens of a chunk holding only that element.
        tokens: usize,
        /// The budget.
        max_tokens: usize,
    },
    /// The document draws nothing.
    #[error("the document has no visible elements")]
    Empty,
}

/// A unit of painting: an element, wrapped in the attributes of the groups it was taken out of.
struct Unit {
    item: Item,
}

/// Splits `items` into units that can be painted independently, opening groups whose
/// children can be painted separately.
fn units(doc: &Doc, items: &[Item], counter: &dyn TokenCounter, max: usize, out: &mut Vec<Unit>) {
    for it in items {
        let whole = Unit { item: it.clone() };
        let fits = counter.count(&doc.to_svg_string(
            std::slice::from_ref(&whole.item),
            &doc.defs_for(std::slice::from_ref(&whole.item)),
        )) <= max;
        match it {
            Item::El(e) if !fits && e.is_separable() && !e.children().is_empty() => {
                let mut inner = Vec::new();
                units(doc, e.children(), counter, max, &mut inner);
                for u in inner {
                    out.push(Unit {
                        item: Item::El(e.with_children(vec![u.item])),
                    });
                }
            }
            _ => out.push(whole),
        }
    }
}

/// Splits `svg` into self-contained SVG documents of whole elements, in painting order, each
/// at most `max_tokens` tokens under `counter`. The document is first written with
/// [`compact`](crate::compact::compact) default options.
pub fn chunk(
    svg: &Svg,
    counter: &dyn TokenCounter,
    max_tokens: usize,
) -> Result<Vec<Chunk>, ChunkError> {
    chunk_with(svg, &CompactOptions::default(), counter, max_tokens)
}

/// [`chunk`] with explicit compaction options.
pub fn chunk_with(
    svg: &Svg,
    opts: &CompactOptions,
    counter: &dyn TokenCounter,
    max_tokens: usize,
) -> Result<Vec<Chunk>, ChunkError> {
    let doc = Doc::build(svg, opts);
    if doc.items.is_empty() {
        return Err(ChunkError::Empty);
    }
    let mut us = Vec::new();
    units(&doc, &doc.items, counter, max_tokens, &mut us);
    let make = |items: &[Item]| -> Chunk {
        let defs_idx = doc.defs_for(items);
        let svg = doc.to_svg_string(items, &defs_idx);
        let tokens = counter.count(&svg);
        let defs = defs_idx.iter().map(|&i| doc.def_string(i)).collect();
        let body = items.iter().map(|it| doc.item_string(it)).collect();
        Chunk {
            svg,
            tokens,
            header: doc.header(),
            defs,
            body,
        }
    };
    let mut chunks = Vec::new();
    let mut current: Vec<Item> = Vec::new();
    let mut current_chunk: Option<Chunk> = None;
    for (index, u) in us.into_iter().enumerate() {
        let mut trial = current.clone();
        trial.push(u.item.clone());
        let c = make(&trial);
        if c.tokens <= max_tokens {
            current = trial;
            current_chunk = Some(c);
            continue;
        }
        if let Some(done) = current_chunk.take() {
            chunks.push(done);
        }
        let alone = make(std::slice::from_ref(&u.item));
        if alone.tokens > max_tokens {
            return Err(ChunkError::ElementTooLarge {
                index,
                tokens: alone.tokens,
                max_tokens,
            });
        }
        current = vec![u.item];
        current_chunk = Some(alone);
    }
    chunks.extend(current_chunk);
    Ok(chunks)
}

/// Joins chunks (from one call of [`chunk`], in order) back into one document: the root
/// element of the first chunk, each definition once, and every chunk's elements in order.
/// Returns an empty string for no chunks.
pub fn reassemble(chunks: &[Chunk]) -> String {
    let Some(first) = chunks.first() else {
        return String::new();
    };
    let mut s = first.header.clone();
    let mut seen: Vec<&str> = Vec::new();
    for c in chunks {
        for (id, def) in &c.defs {
            if !seen.contains(&id.as_str()) {
                seen.push(id);
                s.push_str(def);
            }
        }
    }
    for c in chunks {
        s.push_str(&c.body);
    }
    s.push_str("</svg>");
    s
}
