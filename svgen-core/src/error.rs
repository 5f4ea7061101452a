//! Error types shared across svgen.

/// An error from parsing, validating or writing an SVG.
///
/// Every limit of [`ParseOptions`](crate::ParseOptions) that is exceeded has its own variant naming
/// the limit and, where it is known, the size that was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvgError {
    /// The document is not well-formed XML or not a valid SVG.
    #[error("invalid SVG: {0}")]
    Parse(String),

    /// The document is not UTF-8.
    #[error("invalid SVG: the document is not valid UTF-8")]
    NotUtf8,

    /// Something in the document (`what`) is larger than the configured `limit` (in bytes).
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was measured: "input", "input after entity expansion", "data: URI", ...
        what: &'static str,
        /// The size found (bytes); for streamed checks, the size at which the check stopped.
        size: u64,
        /// The configured limit (bytes).
        limit: u64,
    },

    /// Elements are nested deeper than [`ParseOptions::max_depth`](crate::ParseOptions::max_depth)
    /// (counting elements instantiated through `<use>`).
    #[error("elements are nested at least {depth} deep, over the limit of {limit}")]
    TooDeep {
        /// The depth found (at least this deep).
        depth: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The document has more elements than
    /// [`ParseOptions::max_elements`](crate::ParseOptions::max_elements) (counting elements
    /// instantiated through `<use>`).
    #[error("the document has at least {count} elements or XML nodes, over the limit of {limit} elements")]
    TooManyElements {
        /// The number of elements found (at least this many), or the XML parser's node limit
        /// when that stopped the parse.
        count: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The resolved paths have more segments than
    /// [`ParseOptions::max_path_segments`](crate::ParseOptions::max_path_segments).
    #[error("the paths have at least {count} segments, over the limit of {limit}")]
    TooManySegments {
        /// The number of segments found (at least this many).
        count: u64,
        /// The configured limit.
        limit: u64,
    },

    /// A size, coordinate or transform is NaN, infinite or too large to render.
    #[error("non-finite or out-of-range number in {0}")]
    NonFinite(&'static str),

    /// The document refers to an external resource (a file path, `file://` or network URL) and
    /// [`ExternalResources::Reject`](crate::ExternalResources::Reject) is in force.
    #[error("external resource not allowed: {href}")]
    ExternalResource {
        /// The offending reference, shortened to at most 200 characters.
        href: String,
    },

    /// A `<use>` element instantiates itself through a chain of other `<use>` elements (a cycle
    /// that would expand forever).
    #[error("recursive <use> reference")]
    RecursiveUse,

    /// The document uses a feature that is switched off by the options (e.g. `<text>` with
    /// [`TextPolicy::Reject`](crate::TextPolicy::Reject), or gzip-compressed SVGZ input).
    #[error("unsupported SVG feature: {0}")]
    Unsupported(&'static str),
}

/// The message of a caught panic's payload (`panic!` with a literal or a formatted string), for
/// the readers that turn a dependency's panic on corrupt input into a typed error.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}
