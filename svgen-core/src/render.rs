//! Rasterising an [`Svg`] with resvg + tiny-skia.
//!
//! Rendering is deterministic: the same document and options give the same pixels on every run
//! and machine (resvg renders on the CPU with no fonts or files looked up at render time).

use image::RgbaImage;
use resvg::tiny_skia;

use crate::svg::Svg;

/// The largest side of an image [`render`] produces; larger requested sizes are clamped to it
/// (keeping the aspect ratio for [`RenderSize::Original`] and [`RenderSize::MaxSide`]).
pub const MAX_RENDER_SIDE: u32 = 8192;

/// The size of the rendered image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenderSize {
    /// The document's intrinsic size (`width`/`height`, else its `viewBox`), rounded up.
    #[default]
    Original,
    /// Exactly `width` × `height` pixels; [`Fit`] decides how the drawing is placed.
    Exact {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The intrinsic aspect ratio, scaled so that the longer side is this many pixels.
    MaxSide(u32),
}

/// How the drawing is placed into an [`RenderSize::Exact`] canvas whose aspect ratio differs
/// from the document's. (With the other sizes the canvas has the document's aspect ratio and all
/// fits agree.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Scale uniformly so the whole drawing fits, centred (letterboxed with the background).
    #[default]
    Contain,
    /// Scale uniformly so the drawing covers the canvas, centred (cropped).
    Cover,
    /// Scale each axis independently to fill the canvas exactly.
    Stretch,
}

/// Options for [`render`].
///
/// ```
/// use svgen_core::render::{render, RenderOptions, RenderSize};
/// use svgen_core::Svg;
///
/// let svg = Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">
///     <rect width="5" height="10"/></svg>"#).unwrap();
/// let img = render(&svg, &RenderOptions::square(32));
/// assert_eq!(img.dimensions(), (32, 32));
/// assert_eq!(img.get_pixel(0, 16).0, [0, 0, 0, 255]); // the black rectangle
/// assert_eq!(img.get_pixel(31, 16).0, [255, 255, 255, 255]); // white background
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RenderOptions {
    /// Output size. Default: the document's intrinsic size.
    pub size: RenderSize,
    /// Placement in an exact-size canvas. Default: [`Fit::Contain`].
    pub fit: Fit,
    /// Straight (not premultiplied) RGBA background, or `None` for transparent. Default: opaque
    /// white, as CLIP scoring and the raster metrics expect.
    pub background: Option<[u8; 4]>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            size: RenderSize::Original,
            fit: Fit::Contain,
            background: Some([255, 255, 255, 255]),
        }
    }
}

impl RenderOptions {
    /// A `side` × `side` canvas, drawing contained and centred, white background.
    pub fn square(side: u32) -> Self {
        RenderOptions {
            size: RenderSize::Exact {
                width: side,
                height: side,
            },
            ..RenderOptions::default()
        }
    }

    /// Sets the output size.
    pub fn with_size(mut self, size: RenderSize) -> Self {
        self.size = size;
        self
    }

    /// Sets the fit.
    pub fn with_fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }

    /// Sets the background (`None`: transparent).
    pub fn with_background(mut self, background: Option<[u8; 4]>) -> Self {
        self.background = background;
        self
    }
}

fn clamp_side(v: f64) -> u32 {
    if v.is_finite() {
        v.ceil().clamp(1.0, f64::from(MAX_RENDER_SIDE)) as u32
    } else {
        1
    }
}

/// The pixel size [`render`] will produce for `svg` with `size`.
pub fn output_size(svg: &Svg, size: RenderSize) -> (u32, u32) {
    let (w, h) = (f64::from(svg.width()), f64::from(svg.height()));
    match size {
        RenderSize::Exact { width, height } => (
            width.clamp(1, MAX_RENDER_SIDE),
            height.clamp(1, MAX_RENDER_SIDE),
        ),
        RenderSize::Original => {
            let scale = (f64::from(MAX_RENDER_SIDE) / w.max(h)).min(1.0);
            (clamp_side(w * scale), clamp_side(h * scale))
        }
        RenderSize::MaxSide(side) => {
            let side = f64::from(side.clamp(1, MAX_RENDER_SIDE));
            let scale = side / w.max(h);
            (clamp_side(w * scale), clamp_side(h * scale))
        }
    }
}

/// Renders `svg` into a straight-alpha RGBA image.
///
/// The drawing's intrinsic rectangle (`0 0 width height`, the `viewBox` mapped by usvg) is placed
/// into the canvas according to [`RenderOptions::fit`]. Sizes are clamped to
/// [`MAX_RENDER_SIDE`], so this never allocates more than 256 MiB.
///
/// Never panics: should the rasteriser fail on some geometry (tiny-skia 0.12 can panic on strokes
/// about 10^30 units away from the canvas), the image is the background alone; [`try_render`]
/// tells that case apart.
pub fn render(svg: &Svg, opts: &RenderOptions) -> RgbaImage {
    try_render(svg, opts).unwrap_or_else(|| {
        let (width, height) = output_size(svg, opts.size);
        let px = opts.background.unwrap_or([0; 4]);
        RgbaImage::from_pixel(width, height, image::Rgba(px))
    })
}

/// As [`render`], but `None` where the rasteriser fails (panics) on the document's geometry,
/// instead of an image of the background alone.
pub fn try_render(svg: &Svg, opts: &RenderOptions) -> Option<RgbaImage> {
    let (width, height) = output_size(svg, opts.size);
    let mut pixmap = match tiny_skia::Pixmap::new(width, height) {
        Some(p) => p,
        // Unreachable for sizes in 1..=MAX_RENDER_SIDE; fall back to an empty image.
        None => return Some(RgbaImage::new(width, height)),
    };
    if let Some([r, g, b, a]) = opts.background {
        pixmap.fill(tiny_skia::Color::from_rgba8(r, g, b, a));
    }

    let (sw, sh) = (svg.width(), svg.height());
    let (cw, ch) = (width as f32, height as f32);
    let (kx, ky) = (cw / sw, ch / sh);
    let (sx, sy) = match opts.fit {
        Fit::Stretch => (kx, ky),
        Fit::Contain => (kx.min(ky), kx.min(ky)),
        Fit::Cover => (kx.max(ky), kx.max(ky)),
    };
    let tx = (cw - sw * sx) / 2.0;
    let ty = (ch - sh * sy) / 2.0;
    let transform = tiny_skia::Transform::from_row(sx, 0.0, 0.0, sy, tx, ty);
    if transform.is_finite() {
        // The pixmap is written only by the rasteriser and dropped if it fails part-way, so no
        // broken state is observed after an unwind.
        let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            resvg::render(svg.tree(), transform, &mut pixmap.as_mut())
        }));
        drawn.ok()?;
    }

    let mut out = Vec::with_capacity(pixmap.data().len());
    for p in pixmap.pixels() {
        let c = p.demultiply();
        out.extend_from_slice(&[c.red(), c.green(), c.blue(), c.alpha()]);
    }
    Some(RgbaImage::from_raw(width, height, out).unwrap_or_else(|| RgbaImage::new(width, height)))
}
