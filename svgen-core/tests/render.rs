//! Rendering: sizes, fits, backgrounds, text with the bundled fonts, determinism.

use svgen_core::render::{output_size, render, Fit, RenderOptions, RenderSize, MAX_RENDER_SIDE};
use svgen_core::{ParseOptions, Svg, SvgError, TextPolicy};

fn parse(s: &str) -> Svg {
    Svg::parse(s.as_bytes()).unwrap()
}

/// A 20 x 10 document: left half red, right half blue.
fn halves() -> Svg {
    parse(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10" viewBox="0 0 20 10">
        <rect width="10" height="10" fill="red"/><rect x="10" width="10" height="10" fill="blue"/></svg>"##,
    )
}

#[test]
fn sizes() {
    let svg = halves();
    assert_eq!(
        render(&svg, &RenderOptions::default()).dimensions(),
        (20, 10)
    );
    let opts = RenderOptions::default().with_size(RenderSize::MaxSide(100));
    assert_eq!(render(&svg, &opts).dimensions(), (100, 50));
    let opts = RenderOptions::default().with_size(RenderSize::Exact {
        width: 7,
        height: 3,
    });
    assert_eq!(render(&svg, &opts).dimensions(), (7, 3));
    // Clamped, never zero or gigantic.
    assert_eq!(
        output_size(
            &svg,
            RenderSize::Exact {
                width: 0,
                height: u32::MAX
            }
        ),
        (1, MAX_RENDER_SIDE)
    );
    assert_eq!(
        output_size(&svg, RenderSize::MaxSide(1 << 30)),
        (MAX_RENDER_SIDE, MAX_RENDER_SIDE / 2)
    );
    let huge = parse(r##"<svg xmlns="http://www.w3.org/2000/svg" width="1e9" height="10"/>"##);
    assert_eq!(
        output_size(&huge, RenderSize::Original),
        (MAX_RENDER_SIDE, 1)
    );
}

#[test]
fn fits() {
    let svg = halves();
    // 40 x 40 canvas, contain: drawing is 40 x 20 centred, white bands above and below.
    let img = render(&svg, &RenderOptions::square(40));
    assert_eq!(img.get_pixel(5, 2).0, [255, 255, 255, 255]);
    assert_eq!(img.get_pixel(5, 20).0, [255, 0, 0, 255]);
    assert_eq!(img.get_pixel(35, 20).0, [0, 0, 255, 255]);
    // Stretch fills everything.
    let img = render(&svg, &RenderOptions::square(40).with_fit(Fit::Stretch));
    assert_eq!(img.get_pixel(5, 2).0, [255, 0, 0, 255]);
    assert_eq!(img.get_pixel(35, 38).0, [0, 0, 255, 255]);
    // Cover: 80 x 40 drawing centred in 40 x 40, so the middle 20 units show (red | blue).
    let img = render(&svg, &RenderOptions::square(40).with_fit(Fit::Cover));
    assert_eq!(img.get_pixel(1, 1).0, [255, 0, 0, 255]);
    assert_eq!(img.get_pixel(38, 38).0, [0, 0, 255, 255]);
}

#[test]
fn backgrounds() {
    let svg = parse(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="5" height="10" fill="#00ff00" fill-opacity="0.5"/></svg>"##,
    );
    let img = render(&svg, &RenderOptions::square(10));
    assert_eq!(img.get_pixel(8, 5).0, [255, 255, 255, 255]);
    let p = img.get_pixel(2, 5).0;
    assert_eq!(p[3], 255);
    assert!((126..=129).contains(&p[0]) && p[1] == 255, "{p:?}");

    let img = render(&svg, &RenderOptions::square(10).with_background(None));
    assert_eq!(img.get_pixel(8, 5).0, [0, 0, 0, 0]);
    let p = img.get_pixel(2, 5).0; // straight alpha, not premultiplied
    assert_eq!(p[1], 255);
    assert!((126..=129).contains(&p[3]), "{p:?}");

    let img = render(
        &svg,
        &RenderOptions::square(10).with_background(Some([0, 0, 0, 255])),
    );
    assert_eq!(img.get_pixel(8, 5).0, [0, 0, 0, 255]);
}

#[test]
fn deterministic() {
    let svg = parse(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><defs><linearGradient id="g"><stop offset="0" stop-color="#f80"/><stop offset="1" stop-color="#08f"/></linearGradient></defs>
        <circle cx="12" cy="12" r="9" fill="url(#g)" stroke="#333" stroke-width="1.5" stroke-dasharray="2 1"/>
        <text x="4" y="14" font-size="6">Hi</text></svg>"##,
    );
    let opts = RenderOptions::square(128);
    let first = render(&svg, &opts);
    for _ in 0..3 {
        assert_eq!(render(&svg, &opts), first);
    }
    let reparsed = Svg::parse(svg.source()).unwrap();
    assert_eq!(render(&reparsed, &opts), first);
}

fn ink(img: &image::RgbaImage) -> usize {
    img.pixels()
        .filter(|p| svgen_core::metrics::is_ink(p))
        .count()
}

#[test]
fn text_renders_with_bundled_fonts_for_every_generic_family() {
    for family in [
        "sans-serif",
        "serif",
        "monospace",
        "cursive",
        "NoSuchFont",
        "DejaVu Sans",
    ] {
        let svg = parse(&format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 30"><text x="2" y="24" font-family="{family}" font-size="24">Hello</text></svg>"##
        ));
        assert!(svg.stats().paths > 0, "{family}");
        let img = render(
            &svg,
            &RenderOptions::default().with_size(RenderSize::MaxSide(200)),
        );
        assert!(ink(&img) > 200, "{family}: no text drawn");
    }
}

#[test]
fn text_policies() {
    let doc = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 30"><text x="2" y="24">Hi</text></svg>"##;
    let mut opts = ParseOptions::default();
    opts.text = TextPolicy::Ignore;
    let svg = Svg::parse_with(doc, &opts).unwrap();
    assert_eq!(ink(&render(&svg, &RenderOptions::square(64))), 0);
    opts.text = TextPolicy::Reject;
    assert!(matches!(
        Svg::parse_with(doc, &opts),
        Err(SvgError::Unsupported(_))
    ));
}

#[test]
fn metadata_accessors() {
    let svg = parse(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="48" height="32" viewBox="-1 2 24 16">
        <defs><path id="p" d="M0 0h4v4z"/></defs><use href="#p"/><use href="#p" x="5"/>
        <!-- comment --><g><rect width="1" height="1"/></g></svg>"##,
    );
    assert_eq!((svg.width(), svg.height()), (48.0, 32.0));
    let vb = svg.view_box().unwrap();
    assert_eq!((vb.x, vb.y, vb.width, vb.height), (-1.0, 2.0, 24.0, 16.0));
    let st = svg.stats();
    assert_eq!(st.source_elements, 7);
    assert_eq!(st.expanded_elements, 9);
    assert_eq!(st.paths, 3);
    assert!(st.segments >= 3 * 4);
    assert!(svg.source().starts_with(b"<svg"));
    let no_vb = parse(r##"<svg xmlns="http://www.w3.org/2000/svg" width="5" height="5"/>"##);
    assert_eq!(no_vb.view_box(), None);
}
