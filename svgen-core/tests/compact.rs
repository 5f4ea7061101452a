//! Tests of the token-aware writer: equivalence (rendered), token savings, options.
use std::path::PathBuf;

use svgen_core::compact::{compact, path_data_tokens, CompactOptions, Precision};
use svgen_core::{compare_svgs, Cl100k, Svg, TokenCounter};

fn icons() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/icons");
    let mut out = Vec::new();
    for set in ["tabler", "mdi"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(set))
            .expect("icon dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "svg"))
            .collect();
        files.sort();
        for f in files {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((
                format!("{set}/{name}"),
                std::fs::read(&f).expect("read icon"),
            ));
        }
    }
    assert!(out.len() >= 15, "expected the committed icons");
    out
}

/// Compacts, re-parses and compares at 256 px; returns (output, ink IoU, MAE).
fn roundtrip(src: &[u8], opts: &CompactOptions) -> (String, f64, f64) {
    let svg = Svg::parse(src).expect("input parses");
    let out = compact(&svg, opts);
    let back = Svg::parse(out.as_bytes()).unwrap_or_else(|e| panic!("output parses: {e}\n{out}"));
    let d = compare_svgs(&svg, &back, 256);
    (out, d.ink_iou, d.mean_abs_error)
}

#[test]
fn real_icons_stay_visually_equal_with_far_fewer_tokens() {
    let cl = Cl100k::new();
    let (mut before, mut after) = (0, 0);
    for (name, src) in icons() {
        let (out, iou, mae) = roundtrip(&src, &CompactOptions::default());
        assert!(iou >= 0.99, "{name}: ink IoU {iou}\n{out}");
        assert!(mae < 0.005, "{name}: MAE {mae}\n{out}");
        let (b, a) = (cl.count(&String::from_utf8_lossy(&src)), cl.count(&out));
        assert!(a < b, "{name}: {a} tokens, original {b}\n{out}");
        before += b;
        after += a;
    }
    // Measured: about 0.6x on these icons; svgo reaches about 0.85x.
    assert!(
        (after as f64) < 0.75 * before as f64,
        "{after} tokens vs {before}"
    );
}

#[test]
fn output_is_deterministic() {
    for (_, src) in icons() {
        let svg = Svg::parse(&src).expect("parses");
        assert_eq!(
            compact(&svg, &CompactOptions::default()),
            compact(&svg, &CompactOptions::default())
        );
    }
}

#[test]
fn cost_model_matches_cl100k_on_path_data() {
    let cl = Cl100k::new();
    let (mut exact, mut total, mut abs_err, mut tokens) = (0, 0, 0usize, 0usize);
    for (_, src) in icons() {
        let out = compact(
            &Svg::parse(&src).expect("parses"),
            &CompactOptions::default(),
        );
        for d in out.split(" d=\"").skip(1) {
            let d = d.split('"').next().unwrap_or_default();
            let (model, real) = (path_data_tokens(d), cl.count(d));
            total += 1;
            exact += usize::from(model == real);
            abs_err += model.abs_diff(real);
            tokens += real;
        }
    }
    assert!(total >= 15);
    // The model is exact on nearly every path and within 2% overall.
    assert!(exact * 10 >= total * 8, "exact on {exact} of {total}");
    assert!(
        abs_err * 50 <= tokens,
        "total deviation {abs_err} of {tokens}"
    );
}

#[test]
fn circle_becomes_a_circle_element_and_styles_are_hoisted() {
    let src =
        br##"<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24"
        fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"
        stroke-linejoin="round" class="icon"><metadata>editor cruft</metadata>
        <path stroke="none" d="M0 0h24v24H0z" fill="none"/>
        <path d="M3 12a9 9 0 1 0 18 0a9 9 0 1 0 -18 0"/><path d="M9 12l2 2l4 -4"/></svg>"##;
    let (out, iou, _) = roundtrip(src, &CompactOptions::default());
    assert!(iou >= 0.99, "{out}");
    assert!(out.contains(r#"<circle cx="12" cy="12" r="9"/>"#), "{out}");
    assert!(out.starts_with(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="black" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">"#
    ), "{out}");
    assert!(!out.contains("metadata") && !out.contains("class"), "{out}");
}

#[test]
fn overlapping_fills_with_opposite_winding_are_not_merged() {
    // Merging these two would punch a hole (non-zero winding cancels).
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 20">
        <path d="M2 2h12v12H2z"/><path d="M6 6v12h12V6z"/></svg>"#;
    let (out, iou, mae) = roundtrip(src, &CompactOptions::default());
    assert_eq!(out.matches("<path").count(), 2, "{out}");
    assert!(iou > 0.999 && mae < 1e-3, "{out}");
    // Disjoint shapes of the same style are merged.
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 20">
        <path d="M1 1h5v5H1z"/><path d="M10 10h5v5h-5z"/></svg>"#;
    let (out, iou, _) = roundtrip(src, &CompactOptions::default());
    assert_eq!(out.matches("<path").count(), 1, "{out}");
    assert!(iou > 0.999, "{out}");
}

#[test]
fn gradients_clips_masks_opacity_and_transforms_survive() {
    let src = br##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
        width="64" height="48" viewBox="0 0 32 24">
      <defs>
        <linearGradient id="g1" x1="0" y1="0" x2="1" y2="1">
          <stop offset="0" stop-color="#ff0000"/><stop offset="1" stop-color="#0000ff" stop-opacity=".5"/>
        </linearGradient>
        <radialGradient id="g2" cx="16" cy="12" r="8" gradientUnits="userSpaceOnUse">
          <stop offset="0" stop-color="yellow"/><stop offset="1" stop-color="green"/>
        </radialGradient>
        <clipPath id="c"><circle cx="16" cy="12" r="10"/></clipPath>
        <mask id="m"><rect width="32" height="24" fill="white"/><rect x="20" width="4" height="24" fill="black"/></mask>
        <path id="tri" d="M0 0L6 0L3 5z"/>
      </defs>
      <rect x="1" y="1" width="30" height="22" fill="url(#g1)"/>
      <g clip-path="url(#c)"><rect x="4" y="4" width="24" height="16" fill="url(#g2)"/></g>
      <g mask="url(#m)" opacity="0.7"><path d="M2 20 L30 4" stroke="#123456" stroke-width="3"/></g>
      <g transform="translate(3 2) rotate(30)"><use xlink:href="#tri" fill="#0a0"/>
        <path d="M0 8h8" stroke="black" stroke-dasharray="2 1"/></g>
      <g transform="matrix(1 0 .5 1 0 0)"><path d="M10 2h4v4h-4z" stroke="purple" fill="none"/></g>
      <path fill-rule="evenodd" d="M24 14h6v6h-6zM26 16h2v2h-2z" fill="orange"/>
    </svg>"##;
    let (out, iou, mae) = roundtrip(src, &CompactOptions::default());
    assert!(iou >= 0.995 && mae < 0.002, "IoU {iou} MAE {mae}\n{out}");
    for needle in [
        "linearGradient",
        "radialGradient",
        "clipPath",
        "<mask",
        "fill-rule=\"evenodd\"",
        "stroke-dasharray",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    assert!(out.contains(r#"width="64" height="48""#), "{out}");
}

#[test]
fn normalise_viewbox_to_omnisvg_grid() {
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="10 10 24 24">
        <path d="M12.3 12.7h19.1v9.9H12.3z M15 25 L30 31 L15 31 z"/></svg>"#;
    let opts = CompactOptions {
        normalise_viewbox: Some(200.0),
        precision: Precision::Decimals(0),
        ..CompactOptions::default()
    };
    let (out, iou, _) = roundtrip(src, &opts);
    assert!(out.contains(r#"viewBox="0 0 200 200""#), "{out}");
    // Integer coordinates only.
    let d = out
        .split(" d=\"")
        .nth(1)
        .unwrap_or_default()
        .split('"')
        .next()
        .unwrap_or_default();
    assert!(!d.contains('.'), "{d}");
    assert!(iou > 0.98, "{iou}\n{out}");
}

#[test]
fn precision_trades_tokens_for_error() {
    let cl = Cl100k::new();
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">
        <path d="M10.123456 10.654321 C 30.111111 5.222222 70.333333 5.444444 90.555555 10.666666
                 L 90.777777 90.888888 C 70.999999 95.121212 30.343434 95.565656 10.787878 90.909090 z"/></svg>"#;
    let svg = Svg::parse(src).expect("parses");
    let mut last = usize::MAX;
    for p in [4u8, 2, 1, 0] {
        let out = compact(
            &svg,
            &CompactOptions {
                precision: Precision::Decimals(p),
                ..Default::default()
            },
        );
        let t = cl.count(&out);
        assert!(t <= last, "precision {p}: {t} > {last}");
        last = t;
        let d = compare_svgs(&svg, &Svg::parse(out.as_bytes()).expect("parses"), 256);
        assert!(d.ink_iou > 0.98, "precision {p}: {}", d.ink_iou);
    }
}

#[test]
fn simplification_drops_redundant_points_within_tolerance() {
    // A polyline with many nearly collinear points and a speck.
    let mut d = String::from("M0 50");
    for i in 1..=100 {
        let y = 50.0 + if i % 2 == 0 { 0.01 } else { -0.01 };
        d.push_str(&format!(" L{} {y}", i));
    }
    d.push_str(" L100 60 L0 60 z M20 80 h0.05 v0.05 h-0.05 z");
    let src = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="{d}"/></svg>"#
    );
    let svg = Svg::parse(src.as_bytes()).expect("parses");
    // Three decimals keep the 0.01 zigzag (lossless simplification stays below 0.0005).
    let plain = compact(
        &svg,
        &CompactOptions {
            precision: Precision::Decimals(3),
            ..Default::default()
        },
    );
    let simple = compact(
        &svg,
        &CompactOptions {
            precision: Precision::Decimals(3),
            simplify_tolerance: 0.1,
            ..Default::default()
        },
    );
    let cl = Cl100k::new();
    assert!(cl.count(&simple) * 5 < cl.count(&plain), "{simple}");
    let d = simple.split(" d=\"").nth(1).unwrap_or_default();
    assert_eq!(d.matches(['M', 'm']).count(), 1, "speck kept: {simple}");
    let diff = compare_svgs(&svg, &Svg::parse(simple.as_bytes()).expect("parses"), 256);
    assert!(
        diff.ink_iou > 0.99 && diff.mean_abs_error < 0.002,
        "{diff:?}"
    );
}

#[test]
fn output_of_compact_is_a_fixed_point_in_tokens() {
    // Compacting again never costs more tokens.
    let cl = Cl100k::new();
    for (name, src) in icons() {
        let once = compact(
            &Svg::parse(&src).expect("parses"),
            &CompactOptions::default(),
        );
        let twice = compact(
            &Svg::parse(once.as_bytes()).expect("parses"),
            &CompactOptions::default(),
        );
        assert!(
            cl.count(&twice) <= cl.count(&once),
            "{name}\n{once}\n{twice}"
        );
    }
}

#[test]
fn huge_coordinates_and_long_paths_are_handled() {
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">
        <path d="M1e30 1e30L-1e30 5 L 50 50z"/><path d="M10 10h1e-30v80z"/>
        <g transform="scale(1e-20)"><path d="M0 0h1e21v1e21z"/></g></svg>"#;
    if let Ok(svg) = Svg::parse(src) {
        let out = compact(&svg, &CompactOptions::default());
        assert!(Svg::parse(out.as_bytes()).is_ok(), "{out}");
    }
    // 20,000 nearly collinear points with simplification: linear work, one segment left.
    let mut d = String::from("M0 50");
    for i in 1..=20_000 {
        d.push_str(&format!(
            " L{} {}",
            f64::from(i) * 0.005,
            50.0 + f64::from(i % 2) * 0.001
        ));
    }
    let src = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="{d}" stroke="black" fill="none"/></svg>"#
    );
    let svg = Svg::parse(src.as_bytes()).expect("parses");
    let out = compact(
        &svg,
        &CompactOptions {
            simplify_tolerance: 0.05,
            ..Default::default()
        },
    );
    let back = Svg::parse(out.as_bytes()).expect("parses");
    assert!(compare_svgs(&svg, &back, 256).ink_iou > 0.99, "{out}");
    assert!(out.len() < 2_000, "{} bytes", out.len());
}
