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

// ---------------------------------------------------------------------------------------
// Precision rule, verification, colour, basic shapes, merging
// ---------------------------------------------------------------------------------------

use svgen_core::compact::Verify;

/// Every `*.svg` under `tests/data/<dir>/*/`, sorted.
fn icons_under(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let mut sets: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    let mut out = Vec::new();
    for set in sets {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&set)
            .expect("set dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "svg"))
            .collect();
        files.sort();
        for f in files {
            let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
            out.push((name, std::fs::read(&f).expect("read icon")));
        }
    }
    out
}

/// Ink IoU and colour error (largest per-channel mean absolute error) of `out` against
/// `svg`, both rendered at `size` px.
fn visual(svg: &Svg, out: &str, size: u32) -> (f64, f64) {
    let back = Svg::parse(out.as_bytes()).unwrap_or_else(|e| panic!("output parses: {e}\n{out}"));
    let d = compare_svgs(svg, &back, size);
    (d.ink_iou, d.colour_mae())
}

fn no_verify() -> CompactOptions {
    CompactOptions {
        verify: None,
        ..CompactOptions::default()
    }
}

/// The coarsest coordinate unit of an output, in user units of the input whose larger viewBox
/// side is `side`: a unit of the last decimal written in any path data, scaled back from the
/// output's viewBox.
fn input_unit(out: &str, side: f64) -> f64 {
    let vb: Vec<f64> = out
        .split("viewBox=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_default()
        .split(' ')
        .map(|v| v.parse().expect("viewBox number"))
        .collect();
    assert_eq!(vb.len(), 4, "{out}");
    let decimals = out
        .split(" d=\"")
        .skip(1)
        .filter_map(|d| d.split('"').next())
        .flat_map(|d| d.split(|c: char| !(c.is_ascii_digit() || c == '.')))
        .map(|n| n.rsplit_once('.').map_or(0, |(_, f)| f.len()))
        .max()
        .unwrap_or(0);
    10f64.powi(-(decimals as i32)) * side / vb[2].max(vb[3])
}

#[test]
fn every_committed_and_regression_icon_keeps_ink_and_colour_at_256_and_512_px() {
    let mut all = icons();
    let regression = icons_under("compact_regression");
    assert!(
        regression.len() >= 9,
        "regression sample: {}",
        regression.len()
    );
    all.extend(regression);
    for (name, src) in all {
        let svg = Svg::parse(&src).expect("input parses");
        let out = compact(&svg, &CompactOptions::default());
        for size in [256, 512] {
            let (iou, colour) = visual(&svg, &out, size);
            assert!(iou >= 0.99, "{name} at {size} px: ink IoU {iou}\n{out}");
            assert!(
                colour <= 0.01,
                "{name} at {size} px: colour MAE {colour}\n{out}"
            );
        }
    }
}

#[test]
fn regression_icons_pass_their_own_check_and_the_rule_alone_comes_close() {
    for (name, src) in icons_under("compact_regression") {
        let svg = Svg::parse(&src).expect("input parses");
        let checked = compact(&svg, &CompactOptions::default());
        let (iou, colour) = visual(&svg, &checked, 256);
        let v = Verify::default();
        assert!(iou >= v.min_ink_iou, "{name}: {iou}\n{checked}");
        assert!(colour <= v.max_colour_mae, "{name}: {colour}\n{checked}");
        // Without the rendering check the precision rule alone stays close.
        let rule = compact(&svg, &no_verify());
        let (iou, colour) = visual(&svg, &rule, 256);
        assert!(
            iou >= 0.98 && colour <= 0.01,
            "{name}: {iou} {colour}\n{rule}"
        );
    }
}

#[test]
fn precision_follows_the_viewbox_size() {
    // The same drawing (a fill with three-decimal coordinates and a 2-unit stroke) in
    // viewBoxes of 0.24, 24 and 2400 units.
    let doc = |k: f64| {
        let n = |v: f64| format!("{}", v * k);
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {s} {s}"><path d="M{a} {b}C{c} {d} {e} {f} {g} {h}L{i} {j}z"/><path d="M{k1} {k2}L{l1} {l2}" stroke="black" stroke-width="{w}" fill="none"/></svg>"#,
            s = n(24.0),
            a = n(3.217),
            b = n(4.381),
            c = n(9.733),
            d = n(1.052),
            e = n(17.419),
            f = n(6.877),
            g = n(20.663),
            h = n(14.129),
            i = n(5.904),
            j = n(19.315),
            k1 = n(2.5),
            k2 = n(21.75),
            l1 = n(21.25),
            l2 = n(21.75),
            w = n(2.0),
        )
    };
    let mut units = Vec::new();
    for k in [0.01, 1.0, 100.0] {
        let svg = Svg::parse(doc(k).as_bytes()).expect("parses");
        let out = compact(&svg, &no_verify());
        let (iou, colour) = visual(&svg, &out, 256);
        assert!(
            iou >= 0.99 && colour <= 0.01,
            "scale {k}: {iou} {colour}\n{out}"
        );
        // In units of the unscaled drawing, the coordinate unit does not depend on the scale.
        units.push(input_unit(&out, 24.0 * k) / k);
    }
    assert_eq!(units.len(), 3);
    for u in &units {
        assert!(
            (0.002..=0.05).contains(u),
            "unit {u} of the 24-unit drawing: {units:?}"
        );
    }
    let (lo, hi) = units.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), u| {
        (lo.min(*u), hi.max(*u))
    });
    assert!(
        hi <= 10.0 * lo,
        "units differ by more than one step: {units:?}"
    );
}

/// Hairlines `width` wide, each 0.04 units from the edge of a small filled square, with
/// three-decimal coordinates.
fn hairlines(width: f64) -> String {
    let mut s = String::from(r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">"#);
    for i in 0..5 {
        let y = 2.137 + 4.351 * f64::from(i);
        s.push_str(&format!(
            r#"<path d="M3.113 {y:.3}h5.271v2.019H3.113z"/><path d="M3.113 {:.3}H20.887" stroke="black" stroke-width="{width}"/>"#,
            y + 2.019 + 0.04 + width / 2.0
        ));
    }
    s.push_str("</svg>");
    s
}

#[test]
fn thin_strokes_near_edges_get_finer_coordinates() {
    let thick = Svg::parse(hairlines(1.0).as_bytes()).expect("parses");
    let thin = Svg::parse(hairlines(0.06).as_bytes()).expect("parses");
    let (out_thick, out_thin) = (compact(&thick, &no_verify()), compact(&thin, &no_verify()));
    let (u_thick, u_thin) = (input_unit(&out_thick, 24.0), input_unit(&out_thin, 24.0));
    assert!(
        u_thin * 5.0 <= u_thick,
        "hairline unit {u_thin} vs {u_thick}\n{out_thin}\n{out_thick}"
    );
    for size in [256, 512] {
        let (iou, colour) = visual(&thin, &out_thin, size);
        assert!(
            iou >= 0.99 && colour <= 0.01,
            "{size} px: {iou} {colour}\n{out_thin}"
        );
    }
    // The old default, two decimals for a 24-unit viewBox whatever the strokes, moves the
    // hairlines by up to a sixth of their width: visibly worse.
    let old = compact(
        &thin,
        &CompactOptions {
            precision: Precision::Relative(1000),
            ..CompactOptions::default()
        },
    );
    let (iou_old, _) = visual(&thin, &old, 256);
    let (iou_new, _) = visual(&thin, &out_thin, 256);
    assert!(iou_old < iou_new, "{iou_old} vs {iou_new}\n{old}");
}

#[test]
fn verification_refines_coordinates_until_the_rendering_matches() {
    let svg = Svg::parse(hairlines(0.06).as_bytes()).expect("parses");
    let plain = compact(&svg, &no_verify());
    // A check nothing but the exact picture passes: refined three times, then the closest.
    let strict = CompactOptions {
        verify: Some(Verify {
            size: 256,
            min_ink_iou: 1.0,
            max_colour_mae: 0.0,
        }),
        ..CompactOptions::default()
    };
    let refined = compact(&svg, &strict);
    assert_ne!(refined, plain);
    let (iou_plain, colour_plain) = visual(&svg, &plain, 256);
    let (iou_refined, colour_refined) = visual(&svg, &refined, 256);
    // The closest rendering is kept: higher IoU, or the same with less colour error.
    assert!(
        iou_refined > iou_plain || (iou_refined == iou_plain && colour_refined <= colour_plain),
        "{iou_refined} {colour_refined} vs {iou_plain} {colour_plain}"
    );
    // Fixed precisions are never re-rendered.
    let fixed = CompactOptions {
        precision: Precision::Decimals(1),
        ..strict.clone()
    };
    let fixed_out = compact(&svg, &fixed);
    assert_eq!(
        fixed_out,
        compact(
            &svg,
            &CompactOptions {
                verify: None,
                ..fixed
            }
        )
    );
}

#[test]
fn integer_grid_scales_the_viewbox_and_maps_gradients() {
    let src = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">
        <defs><linearGradient id="g" x1="3.125" y1="4.5" x2="30.25" y2="31.875" gradientUnits="userSpaceOnUse">
        <stop offset="0" stop-color="#f4900c"/><stop offset="1" stop-color="#3b88c3"/></linearGradient>
        <radialGradient id="r" cx="18.5" cy="18.25" r="9.75" gradientUnits="userSpaceOnUse">
        <stop offset="0" stop-color="#ffcc4d"/><stop offset=".7" stop-color="#dd2e44"/></radialGradient></defs>
        <path fill="url(#g)" d="M3.217 4.381c6.516-3.329 11.686 2.496 14.202 5.825 3.244 4.252 5.907 9.922 13.246 10.186L30.663 31.129H3.904z"/>
        <path fill="url(#r)" d="M12.75 13.5h11.5v9.5h-11.5z"/></svg>"##;
    let svg = Svg::parse(src).expect("parses");
    let out = compact(&svg, &CompactOptions::default());
    assert!(
        !out.contains("viewBox=\"0 0 36 36\""),
        "no integer grid:\n{out}"
    );
    assert!(out.contains(r#"width="36" height="36""#), "{out}");
    assert!(
        out.contains("linearGradient") && out.contains("radialGradient"),
        "{out}"
    );
    let (iou, colour) = visual(&svg, &out, 256);
    assert!(iou >= 0.99 && colour <= 0.005, "{iou} {colour}\n{out}");
    let (iou, colour) = visual(&svg, &out, 512);
    assert!(iou >= 0.99 && colour <= 0.005, "{iou} {colour}\n{out}");
    // Without the grid the viewBox stays.
    let kept = compact(
        &svg,
        &CompactOptions {
            integer_grid: false,
            ..CompactOptions::default()
        },
    );
    assert!(kept.contains("viewBox=\"0 0 36 36\""), "{kept}");
}

#[test]
fn rects_and_ellipses_become_elements_and_rotated_ellipses_arcs() {
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="black" stroke-width="2">
        <path d="M5 3h14a2 2 0 0 1 2 2v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/>
        <path d="M21 17a9 3 0 0 1-18 0a9 3 0 0 1 18 0z"/>
        <ellipse cx="12" cy="12" rx="5" ry="2" transform="rotate(30 12 12)"/></svg>"#;
    let svg = Svg::parse(src).expect("parses");
    let out = compact(&svg, &CompactOptions::default());
    assert!(
        out.contains(r#"<rect x="3" y="3" width="18" height="8" rx="2"/>"#),
        "{out}"
    );
    assert!(
        out.contains(r#"<ellipse cx="12" cy="17" rx="9" ry="3"/>"#),
        "{out}"
    );
    // The rotated ellipse is two arcs with a rotation, not eight cubics' worth of numbers.
    let d = out.split(" d=\"").nth(1).unwrap_or_default();
    assert!(d.contains(" 30 ") || d.contains(" -60 "), "{out}");
    assert!(!d.contains(['c', 'C']), "{out}");
    let (iou, colour) = visual(&svg, &out, 512);
    assert!(iou >= 0.99 && colour <= 0.01, "{iou} {colour}\n{out}");
}

#[test]
fn caps_and_joins_that_cannot_show_are_not_written() {
    // Closed smooth outlines: neither caps nor joins can show.
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="black" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
        <circle cx="8" cy="8" r="5"/><path d="M16 12a4 4 0 1 0 0.01 0z"/></svg>"#;
    let svg = Svg::parse(src).expect("parses");
    let out = compact(&svg, &CompactOptions::default());
    assert!(
        !out.contains("linecap") && !out.contains("linejoin"),
        "{out}"
    );
    // A polyline shows both.
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="black" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
        <path d="M4 4l8 8l8-8"/></svg>"#;
    let svg = Svg::parse(src).expect("parses");
    let out = compact(&svg, &CompactOptions::default());
    assert!(out.contains("stroke-linecap=\"round\""), "{out}");
    assert!(out.contains("stroke-linejoin=\"round\""), "{out}");
    let (iou, _) = visual(&svg, &out, 256);
    assert!(iou >= 0.999, "{iou}");
}

#[test]
fn same_style_shapes_merge_over_shapes_they_do_not_overlap() {
    // Red, blue, red: the second red square does not touch the blue one, so it joins the
    // first red path; painting order is unchanged where shapes overlap.
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 30 10">
        <path d="M1 1h4v4H1z" fill="red"/><path d="M11 1h4v4h-4z" fill="blue"/>
        <path d="M21 1h4v4h-4z" fill="red"/></svg>"#;
    let svg = Svg::parse(src).expect("parses");
    let out = compact(&svg, &CompactOptions::default());
    assert_eq!(out.matches("<path").count(), 2, "{out}");
    let (iou, colour) = visual(&svg, &out, 256);
    assert!(iou >= 0.999 && colour <= 1e-3, "{iou} {colour}");
    // The last red square overlaps the blue one: it must stay above it.
    let src = br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 30 10">
        <path d="M1 1h4v4H1z" fill="red"/><path d="M11 1h4v4h-4z" fill="blue"/>
        <path d="M13 3h4v4h-4z" fill="red"/></svg>"#;
    let svg = Svg::parse(src).expect("parses");
    let out = compact(&svg, &CompactOptions::default());
    assert_eq!(out.matches("<path").count(), 3, "{out}");
    let (iou, colour) = visual(&svg, &out, 256);
    assert!(iou >= 0.999 && colour <= 1e-3, "{iou} {colour}");
}
