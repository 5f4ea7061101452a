//! Prompt templates that steer an image generator towards "SVG-friendly" pictures.
//!
//! ```
//! use svgen_data::prompt::PromptTemplate;
//! let t = PromptTemplate::silhouette();
//! let p = t.render("a fox");
//! assert!(p.prompt.starts_with("A black silhouette of a fox"));
//! assert!(p.negative_prompt.contains("photorealistic"));
//! assert!(PromptTemplate::new("no placeholder", "").is_err());
//! ```

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// The placeholder replaced by the (simplified) caption.
pub const OBJECT: &str = "{object}";

/// A positive template containing [`OBJECT`] and a negative prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTemplate {
    /// Short name recorded in reports (`silhouette`, `flat-vector`, `custom`).
    pub name: String,
    /// Positive template, with `{object}`.
    pub template: String,
    /// Negative prompt (ignored by generators without one, such as DALL-E).
    pub negative: String,
}

/// A rendered prompt pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The positive prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
}

impl PromptTemplate {
    /// A custom template; fails unless `template` contains `{object}`.
    pub fn new(
        template: impl Into<String>,
        negative: impl Into<String>,
    ) -> Result<Self, DataError> {
        let template = template.into();
        if !template.contains(OBJECT) {
            return Err(DataError::Config(format!(
                "prompt template must contain {OBJECT}: {template:?}"
            )));
        }
        Ok(PromptTemplate {
            name: "custom".into(),
            template,
            negative: negative.into(),
        })
    }

    /// The DALL-E silhouette style of the thesis' small dataset: a single black shape with
    /// clear outlines on a white background, no fine detail.
    pub fn silhouette() -> Self {
        PromptTemplate {
            name: "silhouette".into(),
            template: "A black silhouette of {object}, a single solid shape whose outline shows \
                       the main features clearly, high contrast against a plain bright white \
                       background, simple and smooth, without fine detail or thin lines."
                .into(),
            negative: "photorealistic, colour, grey tones, shading, gradients, texture, noise, \
                       background scenery, text, watermark, frame"
                .into(),
        }
    }

    /// The flat-vector style of the thesis' FLUX dataset, with its negative prompt.
    pub fn flat_vector() -> Self {
        PromptTemplate {
            name: "flat-vector".into(),
            template: "Minimal {object}, flat vector-style illustration with clean outlines, \
                       flat fills and high contrast, scalable graphic on a white background."
                .into(),
            negative: "photorealistic, noise, texture, watercolor, gradients, film grain, shading"
                .into(),
        }
    }

    /// The thesis' FLUX.1-schnell prompt (§5.4), word for word, with its negative prompt.
    ///
    /// ```
    /// use svgen_data::prompt::PromptTemplate;
    /// let p = PromptTemplate::thesis_flux().render("a boy wearing headphones");
    /// assert_eq!(
    ///     p.prompt,
    ///     "minimal a boy wearing headphones with clean outlines, flat fills, high contrast, \
    ///      scalable vector-style graphic"
    /// );
    /// ```
    pub fn thesis_flux() -> Self {
        PromptTemplate {
            name: "thesis-flux".into(),
            template: "minimal {object} with clean outlines, flat fills, high contrast, scalable \
                       vector-style graphic"
                .into(),
            negative: "photorealistic, noise, texture, watercolor, gradients, film grain, shading"
                .into(),
        }
    }

    /// The thesis' Stable Diffusion wrapper (§5.3.1), word for word, with the thesis' negative
    /// prompt (the one it gives for FLUX; it gives none for Stable Diffusion).
    pub fn thesis_sd() -> Self {
        PromptTemplate {
            name: "thesis-sd".into(),
            template: "a black-and-white silhouette of {object} on a solid white background".into(),
            ..Self::thesis_flux()
        }
    }

    /// A template by name: `silhouette`, `flat-vector`, `thesis-sd` or `thesis-flux`.
    pub fn by_name(name: &str) -> Result<Self, DataError> {
        match name {
            "silhouette" => Ok(Self::silhouette()),
            "flat-vector" | "flat" => Ok(Self::flat_vector()),
            "thesis-sd" => Ok(Self::thesis_sd()),
            "thesis-flux" => Ok(Self::thesis_flux()),
            other => Err(DataError::Config(format!(
                "unknown prompt template {other:?} (silhouette, flat-vector, thesis-sd, thesis-flux)"
            ))),
        }
    }

    /// Fills `{object}` (every occurrence) with `object`.
    pub fn render(&self, object: &str) -> Prompt {
        Prompt {
            prompt: self.template.replace(OBJECT, object.trim()),
            negative_prompt: self.negative.clone(),
        }
    }
}
