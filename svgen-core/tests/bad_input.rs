//! Hostile and broken inputs: each gets a typed error or is safely ignored, quickly, without a
//! panic and without unbounded memory.

use svgen_core::render::{render, RenderOptions};
use svgen_core::{ExternalResources, ParseOptions, Svg, SvgError};

const NS: &str = r#"xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink""#;

fn svg(body: &str) -> String {
    format!(r#"<svg {NS} viewBox="0 0 100 100">{body}</svg>"#)
}

/// Parses and, when parsing succeeds, renders small (the whole pipeline must hold up).
fn parse_and_render(data: &[u8]) -> Result<Svg, SvgError> {
    let svg = Svg::parse(data)?;
    let img = render(&svg, &RenderOptions::square(32));
    assert_eq!(img.dimensions(), (32, 32));
    Ok(svg)
}

#[test]
fn malformed_xml_is_a_parse_error() {
    for bad in [
        "",
        "not xml at all",
        "<svg",
        "<svg xmlns='http://www.w3.org/2000/svg'><g></svg>",
        "<svg xmlns='http://www.w3.org/2000/svg'><path d='M0 0' d='M1 1'/></svg>",
        "<svg xmlns='http://www.w3.org/2000/svg'>&undefined;</svg>",
        "<?xml version='1.0'?><html/>",
        "\u{feff}<<<>>>",
    ] {
        match parse_and_render(bad.as_bytes()) {
            Err(SvgError::Parse(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad:?}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn non_utf8_and_svgz_are_typed_errors() {
    assert!(matches!(
        Svg::parse(&[b'<', b's', 0xff, 0xfe, b'>']),
        Err(SvgError::NotUtf8)
    ));
    assert!(matches!(
        Svg::parse(&[0x1f, 0x8b, 8, 0, 0, 0]),
        Err(SvgError::Unsupported(_))
    ));
}

#[test]
fn fifty_megabyte_file_is_rejected_by_the_byte_limit_fast() {
    let mut data = svg("").into_bytes();
    data.truncate(data.len() - "</svg>".len());
    let filler = b"<rect width='1' height='1'/>";
    while data.len() < 50 << 20 {
        data.extend_from_slice(filler);
    }
    data.extend_from_slice(b"</svg>");
    let err = Svg::parse(&data).unwrap_err();
    assert!(
        matches!(err, SvgError::TooLarge { what: "input", size, limit }
            if size == data.len() as u64 && limit == ParseOptions::default().max_bytes as u64),
        "{err:?}"
    );
    // Not a timing assertion on the result: the check must not even look at the content, which
    // we show by corrupting it (a full parse would report a syntax error instead).
    let mut corrupt = data;
    corrupt[10] = b'<';
    assert!(matches!(
        Svg::parse(&corrupt),
        Err(SvgError::TooLarge { .. })
    ));
}

#[test]
fn hundred_thousand_nested_groups_are_too_deep() {
    let n = 100_000;
    let body = format!("{}{}", "<g>".repeat(n), "</g>".repeat(n));
    match Svg::parse(svg(&body).as_bytes()) {
        Err(SvgError::TooDeep { depth, limit }) => {
            assert_eq!(limit, 256);
            assert_eq!(depth, n + 1);
        }
        other => panic!("expected TooDeep, got {other:?}"),
    }
}

#[test]
fn nesting_at_the_depth_limit_still_parses_and_renders() {
    // The root <svg> counts as one level.
    // The root <svg> and the <rect> count as levels too.
    let n = ParseOptions::default().max_depth - 2;
    let body = format!(
        "{}<rect width='100' height='100'/>{}",
        "<g>".repeat(n),
        "</g>".repeat(n)
    );
    // Run on a thread with the default 2 MiB stack: the converter and renderer recurse.
    let data = svg(&body);
    std::thread::spawn(move || {
        let svg = parse_and_render(data.as_bytes()).expect("within the limit");
        assert_eq!(svg.stats().depth, n + 2);
        assert_eq!(svg.stats().paths, 1);
    })
    .join()
    .expect("no stack overflow");
}

#[test]
fn deep_nesting_through_use_is_too_deep() {
    // Each level is a <use> of the previous one: shallow source, deep instance tree.
    let mut defs = String::from("<g id='l0'><rect width='1' height='1'/></g>");
    for i in 1..400 {
        defs.push_str(&format!("<g id='l{i}'><use xlink:href='#l{}'/></g>", i - 1));
    }
    let body = format!("<defs>{defs}</defs><use xlink:href='#l399'/>");
    assert!(matches!(
        Svg::parse(svg(&body).as_bytes()),
        Err(SvgError::TooDeep { .. })
    ));
}

#[test]
fn use_expansion_bomb_is_too_many_elements() {
    // Ten <use> of the previous level, 12 levels: 10^12 instances from ~130 elements.
    let mut defs = String::from("<path id='a0' d='M0 0h1v1z'/>");
    for i in 1..=12 {
        defs.push_str(&format!("<g id='a{i}'>"));
        for _ in 0..10 {
            defs.push_str(&format!("<use href='#a{}'/>", i - 1));
        }
        defs.push_str("</g>");
    }
    let body = format!("<defs>{defs}</defs><use href='#a12'/>");
    match Svg::parse(svg(&body).as_bytes()) {
        Err(SvgError::TooManyElements { count, limit }) => assert!(count > limit),
        other => panic!("expected TooManyElements, got {other:?}"),
    }
}

#[test]
fn simple_recursive_use_is_ignored() {
    let body = "<use id='c' href='#c'/><g id='p'><use href='#p'/></g>\
                <g id='g1'><use id='u2' href='#u1'/></g><use id='u1' href='#g1'/>\
                <rect width='10' height='10'/>";
    let svg = parse_and_render(svg(body).as_bytes()).expect("usvg skips these uses");
    assert_eq!(svg.stats().paths, 1);
}

#[test]
fn use_cycle_is_a_typed_error() {
    let body = "<g id='a'><use href='#b'/></g><g id='b'><use href='#a'/></g>\
                <rect width='10' height='10'/>";
    assert!(matches!(
        Svg::parse(svg(body).as_bytes()),
        Err(SvgError::RecursiveUse)
    ));
}

#[test]
fn too_many_elements_in_source() {
    let mut opts = ParseOptions::default();
    opts.max_elements = 1000;
    let body = "<rect width='1' height='1'/>".repeat(1500);
    assert!(matches!(
        Svg::parse_with(svg(&body).as_bytes(), &opts),
        Err(SvgError::TooManyElements { limit: 1000, .. })
    ));
}

#[test]
fn too_many_segments() {
    let mut opts = ParseOptions::default();
    opts.max_path_segments = 1000;
    let d: String = (0..2000)
        .map(|i| format!("L{} {} ", i % 100, i % 37))
        .collect();
    let body = format!("<path d='M0 0 {d}' stroke='black'/>");
    match Svg::parse_with(svg(&body).as_bytes(), &opts) {
        Err(SvgError::TooManySegments { count, limit: 1000 }) => assert!(count > 1000),
        other => panic!("expected TooManySegments, got {other:?}"),
    }
}

#[test]
fn path_data_multiplied_by_use_is_too_large() {
    let mut opts = ParseOptions::default();
    opts.max_bytes = 1 << 20;
    let d: String = "l1 1 ".repeat(20_000); // 100 kB of path data
    let uses = "<use href='#p'/>".repeat(50); // 5 MB once instantiated
    let body = format!("<defs><path id='p' d='M0 0 {d}'/></defs>{uses}");
    assert!(matches!(
        Svg::parse_with(svg(&body).as_bytes(), &opts),
        Err(SvgError::TooLarge {
            what: "path data after <use> instantiation",
            ..
        })
    ));
}

#[test]
fn billion_laughs_is_rejected_before_expansion() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE svg [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&lol9;</text></svg>"#;
    match Svg::parse(bomb.as_bytes()) {
        Err(SvgError::TooLarge { what, size, .. }) => {
            assert_eq!(what, "input after entity expansion");
            assert!(size > 16 << 20);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn quadratic_blowup_is_rejected() {
    // One 100 kB entity referenced 100k times at top level (no nesting at all): 10 GB of text.
    let big = "x".repeat(100_000);
    let refs = "&e;".repeat(100_000);
    let doc = format!(
        "<!DOCTYPE svg [<!ENTITY e \"{big}\">]><svg xmlns='http://www.w3.org/2000/svg'><text>{refs}</text></svg>"
    );
    assert!(matches!(
        Svg::parse(doc.as_bytes()),
        Err(SvgError::TooLarge {
            what: "input after entity expansion",
            ..
        })
    ));
}

#[test]
fn harmless_entities_still_work() {
    // Illustrator-style namespace entities.
    let doc = r##"<?xml version="1.0"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [
  <!ENTITY ns_svg "http://www.w3.org/2000/svg">
  <!ENTITY red "#ff0000">
  <!ENTITY ext SYSTEM "file:///etc/passwd">
]>
<svg xmlns="&ns_svg;" viewBox="0 0 10 10"><rect width="10" height="10" fill="&red;"/></svg>"##;
    let svg = parse_and_render(doc.as_bytes()).expect("entities within limits are fine");
    let img = render(&svg, &RenderOptions::square(16));
    assert_eq!(img.get_pixel(8, 8).0, [255, 0, 0, 255]);
}

#[test]
fn external_entity_is_never_loaded() {
    let doc = r#"<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>"#;
    // Either an error or an empty expansion; never the file's content.
    if let Ok(svg) = Svg::parse(doc.as_bytes()) {
        assert_eq!(svg.stats().paths, 0);
    }
}

fn external_refs() -> Vec<String> {
    let passwd_href = [
        "/etc/passwd",
        "file:///etc/passwd",
        "../../../../etc/passwd",
        "http://example.com/a.png",
        "https://example.com/a.svg",
        "//example.com/a.png",
    ];
    let mut docs = Vec::new();
    for h in passwd_href {
        docs.push(svg(&format!("<image href='{h}' width='10' height='10'/>")));
        docs.push(svg(&format!(
            "<image xlink:href='{h}' width='10' height='10'/>"
        )));
        docs.push(svg(&format!("<use xlink:href='{h}#icon'/>")));
        docs.push(svg(&format!(
            "<filter id='f'><feImage href='{h}'/></filter><rect width='9' height='9' filter='url(#f)'/>"
        )));
    }
    docs
}

#[test]
fn external_references_are_ignored_by_default() {
    // Point one at a real image file too, so that "ignored" is not just "file not found".
    let dir = std::env::temp_dir().join(format!("svgen-core-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("red.png");
    image::RgbaImage::from_pixel(4, 4, image::Rgba([255, 0, 0, 255]))
        .save(&png)
        .unwrap();
    let mut docs = external_refs();
    for h in [
        png.display().to_string(),
        format!("file://{}", png.display()),
    ] {
        docs.push(svg(&format!(
            "<image href='{h}' width='100' height='100'/>"
        )));
    }
    for doc in docs {
        let svg = parse_and_render(doc.as_bytes()).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let img = render(&svg, &RenderOptions::square(16));
        assert!(
            img.pixels().all(|p| p.0 == [255, 255, 255, 255]),
            "{doc}: an external resource was drawn"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn external_references_are_rejected_on_request() {
    let mut opts = ParseOptions::default();
    opts.external_resources = ExternalResources::Reject;
    for doc in external_refs() {
        match Svg::parse_with(doc.as_bytes(), &opts) {
            Err(SvgError::ExternalResource { href }) => assert!(!href.is_empty()),
            other => panic!("{doc}: expected ExternalResource, got {other:?}"),
        }
    }
    // Local references stay allowed.
    let local = svg("<defs><rect id='r' width='5' height='5'/></defs><use href='#r'/>");
    assert!(Svg::parse_with(local.as_bytes(), &opts).is_ok());
}

#[test]
fn oversized_data_uri_is_too_large() {
    let mut opts = ParseOptions::default();
    opts.max_data_uri_bytes = 1000;
    let payload = "A".repeat(2000);
    let doc = svg(&format!(
        "<image href='data:image/png;base64,{payload}' width='10' height='10'/>"
    ));
    assert!(matches!(
        Svg::parse_with(doc.as_bytes(), &opts),
        Err(SvgError::TooLarge { what: "data: URI", size, limit: 1000 }) if size > 1000
    ));
}

/// A valid PNG header claiming `w` × `h` pixels, followed by garbage.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut v = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    v.extend_from_slice(b"IHDR");
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&[0u8; 64]);
    v
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn decompression_bomb_image_is_ignored() {
    let doc = svg(&format!(
        "<image href='data:image/png;base64,{}' width='100' height='100'/>",
        base64(&png_claiming(100_000, 100_000))
    ));
    let svg = parse_and_render(doc.as_bytes()).expect("ignored, not an error");
    let img = render(&svg, &RenderOptions::square(16));
    assert!(img.pixels().all(|p| p.0 == [255, 255, 255, 255]));
}

#[test]
fn embedded_png_data_uri_is_drawn() {
    let mut png = Vec::new();
    image::RgbaImage::from_pixel(2, 2, image::Rgba([0, 0, 255, 255]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let doc = svg(&format!(
        "<image href='data:image/png;base64,{}' width='100' height='100'/>",
        base64(&png)
    ));
    let svg = parse_and_render(doc.as_bytes()).unwrap();
    let img = render(&svg, &RenderOptions::square(16));
    assert_eq!(img.get_pixel(8, 8).0, [0, 0, 255, 255]);
}

#[test]
fn nested_svg_data_uri_is_checked_with_the_same_limits() {
    let inner_ok = svg("<rect width='100' height='100' fill='lime'/>");
    let doc = svg(&format!(
        "<image href='data:image/svg+xml;base64,{}' width='100' height='100'/>",
        base64(inner_ok.as_bytes())
    ));
    let img = render(
        &parse_and_render(doc.as_bytes()).unwrap(),
        &RenderOptions::square(16),
    );
    assert_eq!(img.get_pixel(8, 8).0, [0, 255, 0, 255]);

    // A nested document that is itself too deep is dropped, not rendered.
    let deep = svg(&format!("{}{}", "<g>".repeat(5000), "</g>".repeat(5000)));
    let doc = svg(&format!(
        "<image href='data:image/svg+xml;base64,{}' width='100' height='100'/>",
        base64(deep.as_bytes())
    ));
    parse_and_render(doc.as_bytes()).expect("the bad nested image is ignored");
}

#[test]
fn nan_and_huge_coordinates_are_handled() {
    let cases = [
        "<rect x='NaN' y='0' width='10' height='10'/>",
        "<rect x='0' y='0' width='inf' height='10'/>",
        "<path d='M NaN 0 L 10 10'/>",
        "<path d='M0 0 L 1e39 1e39 L 0 10 z'/>",
        "<path d='M0 0 L 1e308 -1e308 L 0 10 z'/>",
        "<path d='M0 0 L 3.4e38 3.4e38 L -3.4e38 10 z' stroke='black' stroke-width='1e38'/>",
        "<g transform='scale(1e38)'><g transform='scale(1e38)'><rect width='1' height='1'/></g></g>",
        "<g transform='matrix(NaN 0 0 1 0 0)'><rect width='1' height='1'/></g>",
        "<circle cx='1e30' cy='1e30' r='1e30'/>",
        "<rect width='1e-45' height='1e-45'/>",
    ];
    for body in cases {
        let doc = svg(body);
        match parse_and_render(doc.as_bytes()) {
            Ok(svg) => {
                let _ = svg.stats();
            }
            Err(SvgError::NonFinite(_) | SvgError::Parse(_)) => {}
            Err(other) => panic!("{body}: unexpected error {other:?}"),
        }
    }
    // A non-finite document size is a typed error or falls back to a sane default.
    for root in [
        "<svg xmlns='http://www.w3.org/2000/svg' width='1e39' height='10'/>",
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 NaN 10'/>",
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 1e38 1e38'><rect width='1e38' height='1e38'/></svg>",
    ] {
        if let Ok(svg) = parse_and_render(root.as_bytes()) {
            assert!(svg.width().is_finite() && svg.height().is_finite());
        }
    }
}

#[test]
fn marker_bomb_is_too_many_elements() {
    // 2,000 paths in a marker, drawn at each of 20,000 vertices: 40 million paths.
    let marker_body = "<path d='M0 0h1v1z'/>".repeat(2000);
    let d: String = (0..20_000)
        .map(|i| format!("L{} {} ", i % 100, i % 7))
        .collect();
    let body = format!(
        "<defs><marker id='m'>{marker_body}</marker></defs>\
         <path d='M0 0 {d}' marker-mid='url(#m)' stroke='black'/>"
    );
    match Svg::parse(svg(&body).as_bytes()) {
        Err(SvgError::TooManyElements { count, limit }) => assert!(count > limit),
        other => panic!("expected TooManyElements, got {other:?}"),
    }
}

#[test]
fn ordinary_markers_still_render() {
    let body = "<defs><marker id='arrow' markerWidth='4' markerHeight='4' refX='2' refY='2'>\
                <path d='M0 0L4 2L0 4z'/></marker></defs>\
                <path d='M10 50H90' stroke='black' marker-end='url(#arrow)'/>";
    let svg = parse_and_render(svg(body).as_bytes()).unwrap();
    // The line, the arrow head and the marker's clip rectangle.
    assert_eq!(svg.stats().paths, 3);
}

#[test]
fn deepest_nested_svg_image_inside_deepest_document_fits_the_stack() {
    // A document at the depth limit whose innermost element is an image holding another document
    // at the depth limit: the worst case for the recursive converter and renderer.
    let n = ParseOptions::default().max_depth - 2;
    let inner = svg(&format!(
        "{}<rect width='100' height='100' fill='red'/>{}",
        "<g>".repeat(n),
        "</g>".repeat(n)
    ));
    let image = format!(
        "<image href='data:image/svg+xml;base64,{}' width='100' height='100'/>",
        base64(inner.as_bytes())
    );
    let outer = svg(&format!("{}{image}{}", "<g>".repeat(n), "</g>".repeat(n)));
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let svg = parse_and_render(outer.as_bytes()).expect("within the limits");
            let img = render(&svg, &RenderOptions::square(16));
            assert_eq!(img.get_pixel(8, 8).0, [255, 0, 0, 255]);
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
}

#[test]
fn arc_with_astronomical_radius_is_too_many_segments_before_conversion() {
    // svgtypes turns an arc of radius r into about (11·r)^(1/6) cubics: 10^16 here, which would
    // exhaust memory inside the conversion; the pre-scan refuses it quickly instead.
    for d in [
        "M7 12a3.536 3.5e96 0 1 1 -5 -5",
        "M7 12A1e300 1e300 0 1 0 8 12",
        // Radii too small for the end points are scaled up: 1e-4 x 1 to span 1e60 units.
        "M0 0a0.0001 1 0 1 1 1e60 0",
        "M0 0a1 1 0 0 1 1e300 1e300",
    ] {
        let doc = svg(&format!("<path d='{d}' stroke='black'/>"));
        let t = std::time::Instant::now();
        match Svg::parse(doc.as_bytes()) {
            Err(SvgError::TooManySegments { count, limit }) => assert!(count > limit, "{d}"),
            other => panic!("{d}: expected TooManySegments, got {other:?}"),
        }
        assert!(t.elapsed().as_secs_f64() < 5.0, "{d}: {:?}", t.elapsed());
    }
    // The estimate is charged per <use> copy too.
    let mut opts = ParseOptions::default();
    opts.max_path_segments = 100_000;
    let body = format!(
        "<defs><path id='p' d='M0 0A1e20 1e20 0 0 1 5 5'/></defs>{}",
        "<use href='#p'/>".repeat(200)
    );
    assert!(matches!(
        Svg::parse_with(svg(&body).as_bytes(), &opts),
        Err(SvgError::TooManySegments { .. })
    ));
}

#[test]
fn ordinary_and_large_arcs_still_parse() {
    // 20,000 small arcs: four cubics each at most, far under the segment limit.
    let d: String = (0..20_000).map(|_| "a2 2 0 0 1 4 0 ").collect();
    let s = Svg::parse(svg(&format!("<path d='M0 50 {d}' fill='none' stroke='red'/>")).as_bytes())
        .expect("many small arcs parse");
    assert!(s.stats().segments >= 20_000);
    // A large but finite radius: a few hundred cubics, accepted and rendered.
    let s =
        parse_and_render(svg("<path d='M10 50A1e12 1e12 0 0 1 90 50' stroke='black'/>").as_bytes())
            .expect("a radius of 1e12 parses");
    assert!(s.stats().segments >= 1);
}

#[test]
fn far_away_stroke_geometry_renders_without_panicking() {
    // tiny-skia 0.12 panics (alpha_runs.rs:170) on this stroke, which reaches 1e14 units away
    // (found by compacting a mutated Tabler icon). `render` must still return an image.
    let doc = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 240 240" width="24" height="24"><path d="M90 190C47 204 47 165 30 160m120 50V175c0-10 1-14-5-20c28-3 55-14 55-60A46 46 0 00187 63c-100000000000187 6-6 12-5 20v35" fill="none" stroke="black" stroke-width="20" stroke-linecap="round"/></svg>"#;
    let svg = Svg::parse(doc.as_bytes()).expect("finite geometry parses");
    for side in [32, 256] {
        let img = render(&svg, &RenderOptions::square(side));
        assert_eq!(img.dimensions(), (side, side));
        if svgen_core::try_render(&svg, &RenderOptions::square(side)).is_none() {
            // The fallback is the background alone.
            assert!(img.pixels().all(|p| p.0 == [255, 255, 255, 255]));
        }
    }
}
