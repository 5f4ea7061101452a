//! Chunking into self-contained documents under a token budget, and reassembly.
use svgen_core::{chunk, compare_svgs, reassemble, Chunk, ChunkError, Cl100k, Svg, TokenCounter};

/// A drawing of many separate elements: a grid of coloured tiles, a clipped gradient group and
/// a transformed group.
fn busy_svg() -> Vec<u8> {
    let mut s = String::from(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100" width="200" height="200">
        <defs><linearGradient id="g" x1="0" y1="0" x2="100" y2="0" gradientUnits="userSpaceOnUse">
        <stop offset="0" stop-color="#f80"/><stop offset="1" stop-color="#08f"/></linearGradient>
        <clipPath id="c"><circle cx="50" cy="50" r="30"/></clipPath></defs>"##,
    );
    let colors = ["#e33", "#3a3", "#33e", "#fa0", "#0aa", "#a0a"];
    for i in 0..36 {
        let (x, y) = (3 + (i % 6) * 16, 3 + (i / 6) * 16);
        s.push_str(&format!(
            r#"<path d="M{x} {y}h12v{}l-6 3z" fill="{}"/>"#,
            10 + i % 3,
            colors[i % colors.len()]
        ));
    }
    s.push_str(
        r#"<g clip-path="url(#c)"><rect x="10" y="40" width="80" height="20" fill="url(#g)"/>"#,
    );
    s.push_str(
        r#"<circle cx="30" cy="50" r="12" fill="none" stroke="black" stroke-width="3"/></g>"#,
    );
    s.push_str(r##"<g transform="rotate(20 50 50)"><rect x="35" y="35" width="30" height="6" fill="#222"/>"##);
    s.push_str(
        r##"<rect x="35" y="59" width="30" height="6" fill="#444" opacity=".5"/></g></svg>"##,
    );
    s.into_bytes()
}

#[test]
fn chunks_are_under_budget_self_contained_and_reassemble_to_the_same_picture() {
    let cl = Cl100k::new();
    let svg = Svg::parse(&busy_svg()).expect("parses");
    let chunks: Vec<Chunk> = chunk(&svg, &cl, 150).expect("chunks");
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    for c in &chunks {
        assert!(c.tokens() <= 150, "{} tokens", c.tokens());
        assert_eq!(c.tokens(), cl.count(c.svg()));
        // Each chunk is a complete document that renders on its own.
        let part = Svg::parse(c.svg().as_bytes()).expect("chunk parses");
        assert!(part.tree().root().has_children());
    }
    let whole = reassemble(&chunks);
    let back = Svg::parse(whole.as_bytes()).expect("reassembled parses");
    let d = compare_svgs(&svg, &back, 256);
    assert!(
        d.ink_iou >= 0.999 && d.mean_abs_error < 1e-3,
        "{d:?}\n{whole}"
    );
}

#[test]
fn a_chunk_with_gradient_carries_its_definition() {
    let cl = Cl100k::new();
    let svg = Svg::parse(&busy_svg()).expect("parses");
    let chunks = chunk(&svg, &cl, 150).expect("chunks");
    let with_grad: Vec<&Chunk> = chunks
        .iter()
        .filter(|c| c.svg().contains("url(#"))
        .collect();
    assert!(!with_grad.is_empty());
    for c in with_grad {
        for id in c.svg().split("url(#").skip(1) {
            let id = id.split(')').next().unwrap_or_default();
            assert!(
                c.svg().contains(&format!("id=\"{id}\"")),
                "missing #{id}: {}",
                c.svg()
            );
        }
    }
}

#[test]
fn one_chunk_when_everything_fits() {
    let cl = Cl100k::new();
    let svg = Svg::parse(&busy_svg()).expect("parses");
    let chunks = chunk(&svg, &cl, 100_000).expect("chunks");
    assert_eq!(chunks.len(), 1);
    assert_eq!(reassemble(&chunks), chunks[0].svg());
}

#[test]
fn an_element_over_budget_is_a_typed_error() {
    let cl = Cl100k::new();
    let mut d = String::from("M0 0");
    for i in 0..200 {
        d.push_str(&format!(" L{} {}", i % 97, (i * 7) % 89));
    }
    let src = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="{d}z"/></svg>"#
    );
    let svg = Svg::parse(src.as_bytes()).expect("parses");
    match chunk(&svg, &cl, 100) {
        Err(ChunkError::ElementTooLarge {
            index: 0,
            tokens,
            max_tokens: 100,
        }) => assert!(tokens > 100),
        other => panic!("unexpected {other:?}"),
    }
    assert!(reassemble(&[]).is_empty());
}
