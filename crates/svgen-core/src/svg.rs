//! A parsed SVG document.

use crate::error::SvgError;

/// A parsed, validated SVG document (a resolved `usvg` tree).
#[derive(Debug)]
pub struct Svg {
    tree: usvg::Tree,
}

impl Svg {
    /// Parses an SVG document from bytes.
    pub fn parse(data: &[u8]) -> Result<Svg, SvgError> {
        let opt = usvg::Options::default();
        let tree = usvg::Tree::from_data(data, &opt).map_err(|e| SvgError::Parse(e.to_string()))?;
        Ok(Svg { tree })
    }

    /// The resolved usvg tree.
    pub fn tree(&self) -> &usvg::Tree {
        &self.tree
    }
}
