//! Fuzz target: parse → render → compact → parse again.
//!
//! Properties checked on every input:
//! * parsing never panics and returns within the configured limits;
//! * a parsed document renders to exactly the requested size;
//! * `compact` never panics and writes well-formed SVG that parses again (it may exceed a limit
//!   after `<use>` inlining, but never be malformed) and renders.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run parse_render_compact -- -max_len=65536
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use svgen_core::{compact, render, CompactOptions, ParseOptions, RenderOptions, Svg, SvgError};

fuzz_target!(|data: &[u8]| {
    // Tighter limits than the defaults keep each execution fast.
    let mut opts = ParseOptions::default();
    opts.max_bytes = 1 << 20;
    opts.max_elements = 20_000;
    opts.max_path_segments = 200_000;
    let Ok(svg) = Svg::parse_with(data, &opts) else {
        return;
    };
    let render_opts = RenderOptions::square(64);
    let img = render(&svg, &render_opts);
    assert_eq!(img.dimensions(), (64, 64));

    let out = compact(&svg, &CompactOptions::default());
    match Svg::parse_with(out.as_bytes(), &opts) {
        Ok(again) => {
            let img = render(&again, &render_opts);
            assert_eq!(img.dimensions(), (64, 64));
        }
        Err(SvgError::Parse(e)) => panic!("compact wrote malformed SVG ({e}):\n{out}"),
        Err(_) => {} // Over a limit after inlining: allowed.
    }
});
