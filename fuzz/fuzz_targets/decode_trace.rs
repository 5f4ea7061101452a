//! Fuzz target: arbitrary bytes → image decode (PNG/JPEG/BMP/PNM via svgen-trace's bounded
//! decoder, or the packed PBM reader) → threshold → trace → SVG. Every input must give a typed
//! error or a result: no panic, no hang, no unbounded allocation.
//!
//! `cargo +nightly fuzz run decode_trace` (from the `fuzz/` folder).
#![no_main]

use libfuzzer_sys::fuzz_target;
use svgen_trace::preprocess::{decode_image, DecodeLimits, Threshold};
use svgen_trace::{trace, Bitmap, SvgOptions, TraceParams, TurnPolicy};

/// Small limits keep each run fast; the limits themselves are what is being tested.
const MAX_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // First byte picks the parameters, the rest is the file.
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let params = TraceParams {
        turdsize: u32::from(sel & 3),
        turnpolicy: [
            TurnPolicy::Black,
            TurnPolicy::White,
            TurnPolicy::Left,
            TurnPolicy::Right,
            TurnPolicy::Minority,
            TurnPolicy::Majority,
            TurnPolicy::Random,
            TurnPolicy::Minority,
        ][usize::from(sel >> 2 & 7)],
        alphamax: if sel & 0x20 != 0 { 0.0 } else { 1.0 },
        opticurve: sel & 0x40 == 0,
        ..TraceParams::default()
    };
    let bitmap = if sel & 0x80 != 0 {
        Bitmap::from_pbm(file, MAX_PIXELS)
    } else {
        let limits = DecodeLimits {
            max_pixels: MAX_PIXELS,
            max_alloc: 64 << 20,
        };
        decode_image(file, &limits)
            .and_then(|img| Bitmap::from_image_with_limit(&img, &Threshold::default(), MAX_PIXELS))
    };
    if let Ok(bitmap) = bitmap {
        if let Ok(paths) = trace(&bitmap, &params) {
            let _ = paths.to_svg(&SvgOptions::default());
        }
    }
});
