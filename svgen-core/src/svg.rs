//! A parsed SVG document, parsed safely from untrusted bytes.
//!
//! [`Svg::parse`] is safe to call on any input: it never reads files or the network, and every
//! resource an input can make the parser spend is bounded by a [`ParseOptions`] limit. Parsing
//! goes in three stages:
//!
//! 1. **Raw checks** on the bytes: size ([`ParseOptions::max_bytes`]), UTF-8, and the size the
//!    document would have once its DTD entities are expanded (catches "billion laughs" and
//!    quadratic-blowup bombs before any expansion happens).
//! 2. **XML pre-scan** of the `roxmltree` document (the same XML parser `usvg` uses; the parsed
//!    document is handed on to `usvg`, so the XML is parsed once): element count and nesting depth
//!    *after* `<use>` instantiation, path data volume after `<use>` instantiation, external
//!    references and `data:` URI sizes, `<text>` policy.
//! 3. **Conversion** by `usvg` with a resolver that refuses every file path / URL and bounds
//!    embedded images, then a walk of the resolved tree that counts path segments and checks that
//!    every transform and bounding box is finite.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use usvg::fontdb;

use crate::error::SvgError;

/// The XLink namespace, in which SVG 1.1 puts `href`.
const XLINK_NS: &str = "http://www.w3.org/1999/xlink";

/// What to do with references to resources outside the document: `<image href="/etc/passwd">`,
/// `file://` and `http://` URLs, `<use href="other.svg#id">`.
///
/// They are never loaded. `data:` URIs are not external: they are decoded (within
/// [`ParseOptions::max_data_uri_bytes`] and [`ParseOptions::max_image_pixels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalResources {
    /// Drop the referencing element as if the resource were missing (the default).
    #[default]
    Ignore,
    /// Fail with [`SvgError::ExternalResource`].
    Reject,
}

/// What to do with `<text>` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextPolicy {
    /// Shape text with the bundled DejaVu fonts (Sans, Serif, Sans Mono; any unknown family falls
    /// back to DejaVu Serif, as browsers fall back to their serif font). The default.
    #[default]
    Render,
    /// Drop all text (no font database at all).
    Ignore,
    /// Fail with [`SvgError::Unsupported`] when the document has a `<text>` element.
    Reject,
}

/// Limits and policies for [`Svg::parse_with`].
///
/// The defaults accept any real-world icon or illustration (Inkscape and Illustrator exports
/// included) while keeping the worst case of a hostile input to roughly a second of CPU and a few
/// hundred MB of memory.
///
/// ```
/// use svgen_core::{ParseOptions, Svg, SvgError};
///
/// let mut opts = ParseOptions::default();
/// opts.max_bytes = 64;
/// let big = format!("<svg xmlns='http://www.w3.org/2000/svg'>{}</svg>", "<g/>".repeat(100));
/// assert!(matches!(Svg::parse_with(big.as_bytes(), &opts), Err(SvgError::TooLarge { .. })));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Maximum size of the input, and of the input after DTD entity expansion, in bytes.
    /// Default: 16 MiB.
    pub max_bytes: usize,
    /// Maximum number of elements, counting each element a `<use>` (or a marker, once per
    /// vertex) instantiates again. The XML parser also stops after `4 × max_elements + 64` nodes
    /// of any kind (elements, text, comments), reported as [`SvgError::TooManyElements`] too.
    /// Default: 200,000.
    pub max_elements: usize,
    /// Maximum element nesting depth, counting the depth `<use>` adds. Default: 256 (real files
    /// rarely exceed 30; the limit keeps the recursive converter and renderer off the stack's end).
    pub max_depth: usize,
    /// Maximum number of path segments in the resolved tree (shapes, text outlines, markers and
    /// `<use>` copies included). Default: 2,000,000.
    pub max_path_segments: usize,
    /// Maximum length of a single `data:` URI (as written, base64 included). Default: 4 MiB.
    pub max_data_uri_bytes: usize,
    /// Maximum pixel count of an embedded raster image; larger ones are ignored (not decoded).
    /// Default: 16,777,216 (4096 × 4096).
    pub max_image_pixels: u64,
    /// What to do with references to external files and URLs. Default: ignore them.
    pub external_resources: ExternalResources,
    /// What to do with `<text>`. Default: render it with the bundled DejaVu fonts.
    pub text: TextPolicy,
    /// Also scan the system's fonts for `<text>` (needs the `system-fonts` crate feature; without
    /// it this flag is ignored). Default: false.
    pub system_fonts: bool,
    /// Viewport size assumed when the document has neither `viewBox` nor absolute `width` and
    /// `height`. Default: 100 × 100.
    pub default_size: (f32, f32),
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            max_bytes: 16 << 20,
            max_elements: 200_000,
            max_depth: 256,
            max_path_segments: 2_000_000,
            max_data_uri_bytes: 4 << 20,
            max_image_pixels: 4096 * 4096,
            external_resources: ExternalResources::Ignore,
            text: TextPolicy::Render,
            system_fonts: false,
            default_size: (100.0, 100.0),
        }
    }
}

/// The `viewBox` of the root `<svg>` element, as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewBox {
    /// Minimum x.
    pub x: f32,
    /// Minimum y.
    pub y: f32,
    /// Width (> 0).
    pub width: f32,
    /// Height (> 0).
    pub height: f32,
}

/// Counts gathered while parsing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SvgStats {
    /// Elements in the source document (each written element once).
    pub source_elements: usize,
    /// Elements after `<use>` instantiation (an upper estimate of what the renderer sees).
    pub expanded_elements: u64,
    /// Deepest element nesting after `<use>` instantiation.
    pub depth: usize,
    /// Path nodes in the resolved tree (shapes, clip paths, masks, patterns, text outlines).
    pub paths: usize,
    /// Path segments (move/line/quad/cubic/close) in the resolved tree.
    pub segments: u64,
}

/// A parsed, validated SVG document: the resolved `usvg` tree plus its source bytes.
///
/// ```
/// use svgen_core::Svg;
///
/// let svg = Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
///     <path d="M2 2h20v20H2z"/></svg>"#).unwrap();
/// assert_eq!((svg.width(), svg.height()), (24.0, 24.0));
/// assert_eq!(svg.stats().paths, 1);
/// ```
#[derive(Debug, Clone)]
pub struct Svg {
    tree: usvg::Tree,
    source: Arc<[u8]>,
    view_box: Option<ViewBox>,
    stats: SvgStats,
}

impl Svg {
    /// Parses an SVG document from bytes with the default [`ParseOptions`].
    pub fn parse(data: &[u8]) -> Result<Svg, SvgError> {
        Svg::parse_with(data, &ParseOptions::default())
    }

    /// Parses an SVG document from bytes with explicit limits and policies.
    pub fn parse_with(data: &[u8], opts: &ParseOptions) -> Result<Svg, SvgError> {
        let (tree, view_box, stats) = parse_inner(data, opts, 0)?;
        Ok(Svg {
            tree,
            source: Arc::from(data),
            view_box,
            stats,
        })
    }

    /// The resolved usvg tree.
    pub fn tree(&self) -> &usvg::Tree {
        &self.tree
    }

    /// The bytes this document was parsed from.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// The intrinsic width in user units (`width`, else the `viewBox` width, else
    /// [`ParseOptions::default_size`]).
    pub fn width(&self) -> f32 {
        self.tree.size().width()
    }

    /// The intrinsic height in user units.
    pub fn height(&self) -> f32 {
        self.tree.size().height()
    }

    /// The root element's `viewBox`, if it has a valid one.
    pub fn view_box(&self) -> Option<ViewBox> {
        self.view_box
    }

    /// Element, path and segment counts.
    pub fn stats(&self) -> SvgStats {
        self.stats
    }
}

/// Nested SVG images (`<image href="data:image/svg+xml,...">`) may nest this deep.
const MAX_NESTED_SVG: u32 = 1;

fn parse_inner(
    data: &[u8],
    opts: &ParseOptions,
    nesting: u32,
) -> Result<(usvg::Tree, Option<ViewBox>, SvgStats), SvgError> {
    if data.len() > opts.max_bytes {
        return Err(SvgError::TooLarge {
            what: "input",
            size: data.len() as u64,
            limit: opts.max_bytes as u64,
        });
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        return Err(SvgError::Unsupported("gzip-compressed SVG (SVGZ)"));
    }
    let text = std::str::from_utf8(data).map_err(|_| SvgError::NotUtf8)?;
    check_entity_expansion(text, opts.max_bytes as u64)?;

    // Each element brings at most a few non-element nodes (text, comments) with it; the node
    // limit only bounds memory, the exact element check follows in `prescan`.
    let nodes_limit =
        u32::try_from(opts.max_elements.saturating_mul(4).saturating_add(64)).unwrap_or(u32::MAX);
    let xml_opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        nodes_limit,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, xml_opt).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => SvgError::TooManyElements {
            count: u64::from(nodes_limit),
            limit: opts.max_elements as u64,
        },
        other => SvgError::Parse(other.to_string()),
    })?;
    let (mut stats, view_box) = prescan(&doc, opts)?;

    let usvg_opts = usvg_options(opts, nesting);
    let tree = usvg::Tree::from_xmltree(&doc, &usvg_opts).map_err(map_usvg_error)?;
    drop(doc);

    let size = tree.size();
    if !(size.width().is_finite() && size.height().is_finite()) {
        return Err(SvgError::NonFinite("the document size"));
    }
    let mut walk = TreeWalk::default();
    walk.group(tree.root(), opts.max_path_segments as u64)?;
    stats.paths = walk.paths;
    stats.segments = walk.segments;
    Ok((tree, view_box, stats))
}

/// usvg's own cap on the nodes of its internal tree.
const USVG_NODE_LIMIT: u64 = 1_000_000;

fn map_usvg_error(e: usvg::Error) -> SvgError {
    match e {
        usvg::Error::NotAnUtf8Str => SvgError::NotUtf8,
        usvg::Error::ElementsLimitReached
        | usvg::Error::ParsingFailed(roxmltree::Error::NodesLimitReached) => {
            SvgError::TooManyElements {
                count: USVG_NODE_LIMIT,
                limit: USVG_NODE_LIMIT,
            }
        }
        other => SvgError::Parse(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 1: entity expansion bound.
// ---------------------------------------------------------------------------------------------

/// Rejects documents whose DTD entities would expand the text beyond `limit` bytes.
///
/// The estimate is an upper bound: every `&name;` reference anywhere in the text (including in
/// the DTD itself) is charged with the full expanded length of `name`.
fn check_entity_expansion(text: &str, limit: u64) -> Result<(), SvgError> {
    if !text.contains("<!ENTITY") {
        return Ok(());
    }
    let mut values: HashMap<&str, &str> = HashMap::new();
    let mut rest = text;
    while let Some(pos) = rest.find("<!ENTITY") {
        rest = &rest[pos + "<!ENTITY".len()..];
        let decl = rest.trim_start();
        if decl.starts_with('%') {
            continue; // Parameter entities are not expanded in content.
        }
        let name_len = decl
            .find(|c: char| c.is_whitespace() || c == '>')
            .unwrap_or(decl.len());
        let name = &decl[..name_len];
        let after = decl[name_len..].trim_start();
        let value = match after.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let body = &after[1..];
                match body.find(q) {
                    Some(end) => &body[..end],
                    None => return Err(SvgError::Parse("unterminated entity value".into())),
                }
            }
            // External (SYSTEM/PUBLIC) entities are never loaded.
            _ => "",
        };
        // XML: the first declaration of an entity is binding.
        values.entry(name).or_insert(value);
    }

    let mut memo: HashMap<&str, u64> = HashMap::new();
    let mut total = text.len() as u64;
    for (name, token_len) in entity_refs(text) {
        let len = expanded_len(name, &values, &mut memo, 0)?;
        total = total.saturating_add(len).saturating_sub(token_len);
        if total > limit {
            return Err(SvgError::TooLarge {
                what: "input after entity expansion",
                size: total,
                limit,
            });
        }
    }
    Ok(())
}

/// `&name;` references in `s` (character references and the five predefined entities excluded),
/// with the length of the reference token.
fn entity_refs(s: &str) -> impl Iterator<Item = (&str, u64)> {
    s.match_indices('&').filter_map(move |(i, _)| {
        let tail = &s[i + 1..];
        let end = tail.find(';')?;
        let name = &tail[..end];
        let is_name = !name.is_empty()
            && name.len() <= 256
            && !name.starts_with('#')
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        let predefined = matches!(name, "lt" | "gt" | "amp" | "apos" | "quot");
        (is_name && !predefined).then_some((name, end as u64 + 2))
    })
}

fn expanded_len<'a>(
    name: &'a str,
    values: &HashMap<&'a str, &'a str>,
    memo: &mut HashMap<&'a str, u64>,
    depth: u32,
) -> Result<u64, SvgError> {
    if let Some(&len) = memo.get(name) {
        return Ok(len);
    }
    // roxmltree itself refuses entities nested deeper than 10.
    if depth > 12 {
        return Err(SvgError::Parse(
            "entity references nested too deep".to_string(),
        ));
    }
    let Some(value) = values.get(name).copied() else {
        // Unknown entity: roxmltree reports it as an error later.
        return Ok(0);
    };
    let mut len = value.len() as u64;
    for (inner, token_len) in entity_refs(value) {
        let inner_len = expanded_len(inner, values, memo, depth + 1)?;
        len = len.saturating_add(inner_len).saturating_sub(token_len);
    }
    memo.insert(name, len);
    Ok(len)
}

// ---------------------------------------------------------------------------------------------
// Stage 2: XML pre-scan.
// ---------------------------------------------------------------------------------------------

fn href<'a>(node: roxmltree::Node<'a, '_>) -> Option<&'a str> {
    node.attribute((XLINK_NS, "href"))
        .or_else(|| node.attribute("href"))
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Checks counts, depth, references and text policy; returns the source statistics and the root
/// `viewBox`.
fn prescan(
    doc: &roxmltree::Document,
    opts: &ParseOptions,
) -> Result<(SvgStats, Option<ViewBox>), SvgError> {
    let mut ids: HashMap<&str, roxmltree::NodeId> = HashMap::new();
    let mut source_elements = 0usize;
    let mut max_index = 0usize;
    for node in doc.descendants() {
        max_index = max_index.max(node.id().get_usize());
        if !node.is_element() {
            continue;
        }
        source_elements += 1;
        if let Some(id) = node.attribute("id") {
            ids.entry(id).or_insert(node.id());
        }
        let name = node.tag_name().name();
        if name == "text" && opts.text == TextPolicy::Reject {
            return Err(SvgError::Unsupported("<text> (TextPolicy::Reject)"));
        }
        if let Some(h) = href(node) {
            let h = h.trim();
            let is_resource = matches!(name, "image" | "feImage" | "use" | "tref");
            if is_resource && h.starts_with("data:") {
                if h.len() > opts.max_data_uri_bytes {
                    return Err(SvgError::TooLarge {
                        what: "data: URI",
                        size: h.len() as u64,
                        limit: opts.max_data_uri_bytes as u64,
                    });
                }
            } else if is_resource
                && !h.starts_with('#')
                && opts.external_resources == ExternalResources::Reject
            {
                return Err(SvgError::ExternalResource { href: shorten(h) });
            }
        }
    }
    if source_elements > opts.max_elements {
        return Err(SvgError::TooManyElements {
            count: source_elements as u64,
            limit: opts.max_elements as u64,
        });
    }

    let mut expanded = expand_uses(doc, &ids, max_index + 1, None)?;
    // Markers are instantiated once per vertex of every shape that uses them: charge each shape
    // with (its vertices) x (the largest marker) when the document has markers at all.
    let marker = doc
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "marker")
        .map(|n| expanded[n.id().get_usize()])
        .fold(None, |acc: Option<Expanded>, m| {
            let a = acc.unwrap_or_default();
            Some(Expanded {
                elements: a.elements.max(m.elements),
                depth: a.depth.max(m.depth),
                path_bytes: a.path_bytes.max(m.path_bytes),
                arc_segments: a.arc_segments.max(m.arc_segments),
            })
        });
    if marker.is_some() {
        expanded = expand_uses(doc, &ids, max_index + 1, marker)?;
    }
    let root = doc.root_element();
    let r = expanded[root.id().get_usize()];
    if r.depth as usize > opts.max_depth {
        return Err(SvgError::TooDeep {
            depth: r.depth as usize,
            limit: opts.max_depth,
        });
    }
    if r.elements > opts.max_elements as u64 {
        return Err(SvgError::TooManyElements {
            count: r.elements,
            limit: opts.max_elements as u64,
        });
    }
    if r.arc_segments > opts.max_path_segments as u64 {
        return Err(SvgError::TooManySegments {
            count: r.arc_segments,
            limit: opts.max_path_segments as u64,
        });
    }
    if r.path_bytes > opts.max_bytes as u64 {
        return Err(SvgError::TooLarge {
            what: "path data after <use> instantiation",
            size: r.path_bytes,
            limit: opts.max_bytes as u64,
        });
    }

    let view_box = root.attribute("viewBox").and_then(parse_view_box);
    let stats = SvgStats {
        source_elements,
        expanded_elements: r.elements,
        depth: r.depth as usize,
        ..SvgStats::default()
    };
    Ok((stats, view_box))
}

fn parse_view_box(s: &str) -> Option<ViewBox> {
    let mut it = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(str::parse::<f32>);
    let vals = [
        it.next()?.ok()?,
        it.next()?.ok()?,
        it.next()?.ok()?,
        it.next()?.ok()?,
    ];
    if it.next().is_some()
        || vals.iter().any(|v| !v.is_finite())
        || vals[2] <= 0.0
        || vals[3] <= 0.0
    {
        return None;
    }
    Some(ViewBox {
        x: vals[0],
        y: vals[1],
        width: vals[2],
        height: vals[3],
    })
}

/// Size of an element's subtree once every `<use>` in it is instantiated.
#[derive(Debug, Clone, Copy, Default)]
struct Expanded {
    elements: u64,
    depth: u32,
    path_bytes: u64,
    /// Upper estimate of the cubic segments the arcs of the path data become.
    arc_segments: u64,
}

/// Computes [`Expanded`] for every element, iteratively (no recursion, so arbitrarily deep input
/// cannot overflow the stack). `<use>` cycles that usvg skips contribute nothing; the others are
/// an error.
fn expand_uses(
    doc: &roxmltree::Document,
    ids: &HashMap<&str, roxmltree::NodeId>,
    len: usize,
    marker: Option<Expanded>,
) -> Result<Vec<Expanded>, SvgError> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; len];
    let mut out = vec![Expanded::default(); len];

    let use_target = |n: roxmltree::Node| -> Option<roxmltree::NodeId> {
        if n.tag_name().name() != "use" {
            return None;
        }
        let h = href(n)?.trim();
        ids.get(h.strip_prefix('#')?).copied()
    };

    let mut budget = 4 * len as u64;
    let root = doc.root_element();
    let mut stack: Vec<(roxmltree::NodeId, bool)> = vec![(root.id(), false)];
    while let Some((id, post)) = stack.pop() {
        let Some(node) = doc.get_node(id) else {
            continue;
        };
        let idx = id.get_usize();
        if !post {
            if state[idx] != NEW {
                continue;
            }
            state[idx] = OPEN;
            stack.push((id, true));
            for child in node.children().filter(|c| c.is_element()) {
                if state[child.id().get_usize()] == NEW {
                    stack.push((child.id(), false));
                }
            }
            if let Some(t) = use_target(node) {
                if state[t.get_usize()] == NEW {
                    stack.push((t, false));
                }
            }
            continue;
        }
        let own_path = ["d", "points"]
            .iter()
            .filter_map(|a| node.attribute(*a))
            .map(|v| v.len() as u64)
            .sum::<u64>();
        let mut e = Expanded {
            elements: 1,
            depth: 1,
            path_bytes: own_path,
            arc_segments: node.attribute("d").map_or(0, arc_segment_estimate),
        };
        if let Some(m) = marker {
            let v = shape_vertices(node);
            if v > 0 {
                e.elements = e.elements.saturating_add(v.saturating_mul(m.elements));
                e.path_bytes = e.path_bytes.saturating_add(v.saturating_mul(m.path_bytes));
                e.arc_segments = e
                    .arc_segments
                    .saturating_add(v.saturating_mul(m.arc_segments));
                e.depth = e.depth.max(m.depth.saturating_add(1));
            }
        }
        let deps = node
            .children()
            .filter(|c| c.is_element())
            .map(|c| c.id())
            .chain(use_target(node));
        for dep in deps {
            let d = dep.get_usize();
            if state[d] != DONE {
                // A cycle through <use>. usvg skips the simple ones (a use of itself, of an
                // ancestor, of an element whose uses point back); the others it would expand
                // until its own node limit, so refuse them up front.
                let target = doc
                    .get_node(dep)
                    .filter(|t| use_target(node) == Some(t.id()));
                match target {
                    Some(t) if usvg_skips_use(node, t, &use_target, &mut budget) => continue,
                    _ => return Err(SvgError::RecursiveUse),
                }
            }
            let x = out[d];
            e.elements = e.elements.saturating_add(x.elements);
            e.depth = e.depth.max(x.depth.saturating_add(1));
            e.path_bytes = e.path_bytes.saturating_add(x.path_bytes);
            e.arc_segments = e.arc_segments.saturating_add(x.arc_segments);
        }
        out[idx] = e;
        state[idx] = DONE;
    }
    Ok(out)
}

/// An upper estimate of the number of cubic segments the elliptical arcs of path data `d` turn
/// into when usvg converts it (svgtypes approximates each arc with cubics to a tolerance of 0.1
/// user units, so the count grows with the radius: about `(11·r)^(1/6)` per full ellipse, 10^16
/// for `r = 10^96`). The conversion would run out of memory before the segment walk of the
/// resolved tree could refuse such a path, so it is estimated from the path data first. Radii
/// too small for the end points are scaled up exactly as the converter does; a non-finite
/// estimate counts as `u64::MAX`.
fn arc_segment_estimate(d: &str) -> u64 {
    use svgtypes::PathSegment as S;
    if !d.bytes().any(|b| b == b'a' || b == b'A') {
        return 0;
    }
    let (mut x, mut y, mut start) = (0.0f64, 0.0f64, (0.0f64, 0.0f64));
    let mut total = 0.0f64;
    for seg in svgtypes::PathParser::from(d) {
        // The converter keeps the segments before the first error and drops the rest.
        let Ok(seg) = seg else { break };
        let (abs, nx, ny) = match seg {
            S::MoveTo { abs, x: px, y: py } => {
                let p = if abs { (px, py) } else { (x + px, y + py) };
                start = p;
                (true, p.0, p.1)
            }
            S::ClosePath { .. } => (true, start.0, start.1),
            S::HorizontalLineTo { abs, x: px } => (abs, px, if abs { y } else { 0.0 }),
            S::VerticalLineTo { abs, y: py } => (abs, if abs { x } else { 0.0 }, py),
            S::LineTo { abs, x, y }
            | S::CurveTo { abs, x, y, .. }
            | S::SmoothCurveTo { abs, x, y, .. }
            | S::Quadratic { abs, x, y, .. }
            | S::SmoothQuadratic { abs, x, y } => (abs, x, y),
            S::EllipticalArc {
                abs,
                rx,
                ry,
                x_axis_rotation,
                x: px,
                y: py,
                ..
            } => {
                let to = if abs { (px, py) } else { (x + px, y + py) };
                total += arc_cubics((x, y), to, rx, ry, x_axis_rotation);
                (true, to.0, to.1)
            }
        };
        (x, y) = if abs { (nx, ny) } else { (x + nx, y + ny) };
    }
    if total.is_finite() {
        // `as` saturates at u64::MAX.
        total as u64
    } else {
        u64::MAX
    }
}

/// The most cubic segments the converter (kurbo's `Arc::append_iter` at tolerance 0.1, after
/// `Arc::from_svg_arc`) makes of one SVG arc; 0 where it draws a straight line instead.
fn arc_cubics(from: (f64, f64), to: (f64, f64), rx: f64, ry: f64, rotation_deg: f64) -> f64 {
    let (rx, ry) = (rx.abs(), ry.abs());
    // kurbo's `SvgArc::is_straight_line`; NaN radii give no segments there either.
    if !(rx > 1e-5 && ry > 1e-5) || from == to {
        return 0.0;
    }
    let (sin, cos) = (rotation_deg.to_radians() % std::f64::consts::TAU).sin_cos();
    let (hx, hy) = ((from.0 - to.0) * 0.5, (from.1 - to.1) * 0.5);
    let (x1, y1) = (cos * hx + sin * hy, -sin * hx + cos * hy);
    let lambda = (x1 / rx).powi(2) + (y1 / ry).powi(2);
    let radius = rx.max(ry) * lambda.sqrt().max(1.0);
    // Subdivisions per full ellipse; an arc sweeps at most one.
    let n = (1.1163 * radius / 0.1).powf(1.0 / 6.0).max(3.999_999);
    if n.is_nan() {
        f64::INFINITY
    } else {
        n.ceil()
    }
}

/// An upper estimate of the vertices of a shape element that can carry markers (numbers in its
/// geometry / 2, plus one per path command); 0 for other elements.
fn shape_vertices(node: roxmltree::Node) -> u64 {
    let attr = match node.tag_name().name() {
        "path" => "d",
        "polyline" | "polygon" => "points",
        "line" => return 2,
        _ => return 0,
    };
    let Some(data) = node.attribute(attr) else {
        return 0;
    };
    let (mut numbers, mut commands, mut in_number) = (0u64, 0u64, false);
    for b in data.bytes() {
        let numeric = b.is_ascii_digit() || b == b'.';
        if numeric && !in_number {
            numbers += 1;
        }
        in_number = numeric;
        if b.is_ascii_alphabetic() && b != b'e' && b != b'E' {
            commands += 1;
        }
    }
    numbers / 2 + commands + 1
}

/// Whether usvg skips `<use>` element `u` whose target `t` is on the current instantiation path:
/// `t` is `u` itself, an ancestor of `u`, another `<use>`, or has a `<use>` descendant pointing
/// back at `u` or `t`. `budget` bounds the total number of nodes these checks may visit.
fn usvg_skips_use<'a, 'i>(
    u: roxmltree::Node<'a, 'i>,
    t: roxmltree::Node<'a, 'i>,
    use_target: &impl Fn(roxmltree::Node<'a, 'i>) -> Option<roxmltree::NodeId>,
    budget: &mut u64,
) -> bool {
    if t == u || t.tag_name().name() == "use" || u.ancestors().any(|a| a == t) {
        return true;
    }
    for d in t.descendants().skip(1) {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if let Some(back) = use_target(d) {
            if back == u.id() || back == t.id() {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Stage 3: conversion options and the walk of the resolved tree.
// ---------------------------------------------------------------------------------------------

/// The bundled DejaVu fonts, loaded once.
fn bundled_fontdb() -> Arc<fontdb::Database> {
    static DB: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = fontdb::Database::new();
        let faces: [&'static [u8]; 8] = [
            dejavu::sans::regular(),
            dejavu::sans::bold(),
            dejavu::sans::oblique(),
            dejavu::sans::bold_oblique(),
            dejavu::serif::regular(),
            dejavu::serif::bold(),
            dejavu::sans_mono::regular(),
            dejavu::sans_mono::bold(),
        ];
        for face in faces {
            db.load_font_source(fontdb::Source::Binary(Arc::new(face)));
        }
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Serif");
        db.set_monospace_family("DejaVu Sans Mono");
        db.set_cursive_family("DejaVu Sans");
        db.set_fantasy_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

fn fontdb_for(opts: &ParseOptions) -> Arc<fontdb::Database> {
    match opts.text {
        TextPolicy::Ignore | TextPolicy::Reject => {
            static EMPTY: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
            EMPTY
                .get_or_init(|| Arc::new(fontdb::Database::new()))
                .clone()
        }
        TextPolicy::Render => {
            #[cfg(feature = "system-fonts")]
            if opts.system_fonts {
                static SYSTEM: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
                return SYSTEM
                    .get_or_init(|| {
                        let mut db = (*bundled_fontdb()).clone();
                        db.load_system_fonts();
                        Arc::new(db)
                    })
                    .clone();
            }
            bundled_fontdb()
        }
    }
}

fn usvg_options(opts: &ParseOptions, nesting: u32) -> usvg::Options<'_> {
    let default_size = usvg::Size::from_wh(opts.default_size.0, opts.default_size.1)
        .unwrap_or_else(|| usvg::Size::from_wh(100.0, 100.0).expect("100x100 is a valid size"));
    let resolve_data = move |mime: &str, data: Arc<Vec<u8>>, _: &usvg::Options| {
        resolve_data_uri(mime, data, opts, nesting)
    };
    usvg::Options {
        resources_dir: None,
        default_size,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(resolve_data),
            // Never touch the file system or the network.
            resolve_string: Box::new(|_, _| None),
        },
        fontdb: fontdb_for(opts),
        ..usvg::Options::default()
    }
}

/// Resolves a decoded `data:` URI of an `<image>`: raster images within the pixel budget, SVG
/// images through our own checked parser (one level deep). Anything else is ignored.
fn resolve_data_uri(
    mime: &str,
    data: Arc<Vec<u8>>,
    opts: &ParseOptions,
    nesting: u32,
) -> Option<usvg::ImageKind> {
    if data.len() > opts.max_data_uri_bytes {
        return None;
    }
    let raster_ok = |data: &[u8]| match imagesize::blob_size(data) {
        Ok(size) => (size.width as u64).saturating_mul(size.height as u64) <= opts.max_image_pixels,
        Err(_) => false,
    };
    let kind = match imagesize::image_type(&data).ok() {
        Some(imagesize::ImageType::Png) if raster_ok(&data) => usvg::ImageKind::PNG(data),
        Some(imagesize::ImageType::Jpeg) if raster_ok(&data) => usvg::ImageKind::JPEG(data),
        Some(imagesize::ImageType::Gif) if raster_ok(&data) => usvg::ImageKind::GIF(data),
        Some(imagesize::ImageType::Webp) if raster_ok(&data) => usvg::ImageKind::WEBP(data),
        Some(_) => return None,
        None if matches!(mime, "image/svg+xml" | "text/plain" | "") && nesting < MAX_NESTED_SVG => {
            let (tree, _, _) = parse_inner(&data, opts, nesting + 1).ok()?;
            usvg::ImageKind::SVG(tree)
        }
        None => return None,
    };
    Some(kind)
}

#[derive(Default)]
struct TreeWalk {
    paths: usize,
    segments: u64,
}

impl TreeWalk {
    /// Counts paths and segments under `root`, including clip paths, masks, patterns, filters,
    /// nested SVG images and text outlines (usvg's "subroots").
    fn group(&mut self, root: &usvg::Group, max_segments: u64) -> Result<(), SvgError> {
        let mut stack = vec![root];
        while let Some(g) = stack.pop() {
            if !g.abs_transform().is_finite() {
                return Err(SvgError::NonFinite("a transform"));
            }
            for node in g.children() {
                match node {
                    usvg::Node::Group(child) => stack.push(child),
                    usvg::Node::Path(p) => {
                        if !p.abs_transform().is_finite() {
                            return Err(SvgError::NonFinite("a transform"));
                        }
                        self.paths += 1;
                        self.segments += p.data().len() as u64;
                        if self.segments > max_segments {
                            return Err(SvgError::TooManySegments {
                                count: self.segments,
                                limit: max_segments,
                            });
                        }
                    }
                    usvg::Node::Image(_) | usvg::Node::Text(_) => {}
                }
                let mut res = Ok(());
                node.subroots(|sub| {
                    if res.is_ok() {
                        res = self.group(sub, max_segments);
                    }
                });
                res?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::arc_segment_estimate;

    /// The cubics svgtypes (the converter usvg uses) actually makes of path data `d`.
    fn converted_cubics(d: &str) -> u64 {
        svgtypes::SimplifyingPathParser::from(d)
            .map_while(Result::ok)
            .filter(|s| matches!(s, svgtypes::SimplePathSegment::CurveTo { .. }))
            .count() as u64
    }

    #[test]
    fn arc_estimate_bounds_the_conversion_closely() {
        for d in [
            "M10 10A5 5 0 0 1 20 10",
            "M10 10a5 5 0 1 1 10 0z m5 5 a1 2 30 1 0 3 3",
            "M0 0A1e6 1e6 0 1 1 1 1",
            "M0 0A1e9 2e9 45 1 0 3 -4",
            "M0 0a0.0001 1 0 1 1 1e9 0",
            "M3 4 h10 v-2 a100 30 -20 0 1 -40 8 Z a7 7 0 1 1 0 1",
            "M1 1 a1 1 0 0 0 0 0",
            "M1 1 a0 5 0 0 0 5 5",
        ] {
            let (est, real) = (arc_segment_estimate(d), converted_cubics(d));
            assert!(est >= real, "{d}: estimate {est} < {real}");
            assert!(est <= 2 * real + 8, "{d}: estimate {est} far above {real}");
        }
        assert_eq!(arc_segment_estimate("M0 0L10 10C1 2 3 4 5 6"), 0);
        // (1.1163 · 3.5e96 / 0.1)^(1/6) ≈ 1.8e16 cubics, counted without converting.
        let bomb = arc_segment_estimate("M0 0a3.5 3.5e96 0 1 1 -5 -5");
        assert!((1.5e16..2.5e16).contains(&(bomb as f64)), "{bomb}");
    }
}
