//! Bad input never panics or allocates without bound: corrupt and truncated files, 0 × 0 images,
//! headers claiming 100000 × 100000 pixels, all-black and all-white images.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use svgen_trace::batch::{trace_batch, BatchOptions};
use svgen_trace::color::{trace_color, ColorParams};
use svgen_trace::preprocess::{decode_image, open_image, DecodeLimits, MkbitmapParams, Threshold};
use svgen_trace::{trace, Bitmap, TraceError, TraceParams};

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn sample() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(48, 40, |x, y| {
        if (x / 6 + y / 6) % 2 == 0 {
            Rgb([10, 20, 30])
        } else {
            Rgb([240, 230, 220])
        }
    }))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose IHDR claims `w × h` 8-bit grey pixels, followed by a tiny IDAT and IEND.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

/// A 24-bit BMP header claiming `w × h` pixels, with no pixel data.
fn bmp_header(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie)
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

#[test]
fn huge_headers_are_rejected_before_allocating() {
    let limits = DecodeLimits::default();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("pgm", b"P5\n100000 100000\n255\n".to_vec()),
        ("ppm", b"P6\n100000 100000\n255\n\x00\x00\x00".to_vec()),
        ("pbm", b"P4\n100000 100000\n".to_vec()),
        ("png", png_header(100_000, 100_000)),
        ("bmp", bmp_header(100_000, 100_000)),
        ("bmp top-down", bmp_header(100_000, -100_000)),
    ];
    for (name, data) in cases {
        match decode_image(&data, &limits) {
            Err(TraceError::TooLarge { width, height, .. }) => {
                assert_eq!((width, height), (100_000, 100_000), "{name}")
            }
            // The BMP decoder refuses sides over 65535 itself, while reading the header.
            Err(TraceError::Decode(msg)) if name.starts_with("bmp") => {
                assert!(msg.contains("too large"), "{name}: {msg}")
            }
            Err(e) => panic!("{name}: expected TooLarge, got {e}"),
            Ok(img) => panic!("{name}: decoded a {}x{} image", img.width(), img.height()),
        }
        // The batch API reports it per item.
        let res = trace_batch(&[data], &BatchOptions::default()).unwrap();
        assert!(
            matches!(
                res[0],
                Err(TraceError::TooLarge { .. } | TraceError::Decode(_))
            ),
            "{name}"
        );
    }
    // Also potrace's own PBM reader.
    assert!(matches!(
        Bitmap::from_pbm(b"P4\n100000 100000\n", svgen_trace::DEFAULT_PIXEL_LIMIT),
        Err(TraceError::TooLarge { .. })
    ));
}

#[test]
fn the_pixel_limit_is_configurable() {
    let png = encode(&sample(), ImageFormat::Png);
    let tight = DecodeLimits {
        max_pixels: 48 * 40 - 1,
        ..Default::default()
    };
    assert!(matches!(
        decode_image(&png, &tight),
        Err(TraceError::TooLarge { .. })
    ));
    let exact = DecodeLimits {
        max_pixels: 48 * 40,
        ..Default::default()
    };
    assert_eq!(decode_image(&png, &exact).unwrap().width(), 48);
    // mkbitmap's scaling is bounded by the bitmap limit too.
    let img = decode_image(&png, &exact).unwrap();
    let t = Threshold::Mkbitmap(MkbitmapParams::default());
    assert!(Bitmap::from_image_with_limit(&img, &t, 48 * 40 * 4 - 1).is_err());
    assert!(Bitmap::from_image_with_limit(&img, &t, 48 * 40 * 4).is_ok());
}

#[test]
fn truncated_and_corrupt_files_are_decode_errors() {
    let img = sample();
    let limits = DecodeLimits::default();
    for format in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Bmp,
        ImageFormat::Pnm,
    ] {
        let data = encode(&img, format);
        assert!(decode_image(&data, &limits).is_ok(), "{format:?}");
        for cut in [0, 1, 8, 20, data.len() / 2, data.len() - 1] {
            // Up to half the file must be an error. Later cuts may still decode (a PNG missing
            // part of its IEND chunk, a JPEG whose decoder pads missing scan data): no panic is
            // the requirement there.
            let r = decode_image(&data[..cut], &limits);
            if cut <= data.len() / 2 && (format != ImageFormat::Jpeg || cut < 200) {
                assert!(
                    matches!(r, Err(TraceError::Decode(_))),
                    "{format:?} cut at {cut}: {:?}",
                    r.map(|i| (i.width(), i.height()))
                );
            }
        }
        // Flipped bytes in the body: a typed error or some image, never a panic.
        let mut bad = data.clone();
        for i in (data.len() / 3..data.len()).step_by(7) {
            bad[i] ^= 0x5a;
        }
        if let Ok(img) = decode_image(&bad, &limits) {
            let bm = Bitmap::from_image(&img, &Threshold::default()).unwrap();
            trace(&bm, &TraceParams::default()).unwrap();
        }
    }
    for junk in [
        &b""[..],
        b"hello",
        b"\x89PNG\r\n\x1a\n garbage",
        b"P5\n-3 4\n255\n",
        b"P5\n3 4\n0\n",
        b"BM",
    ] {
        assert!(
            matches!(decode_image(junk, &limits), Err(TraceError::Decode(_))),
            "{junk:?}"
        );
    }
    let missing = std::env::temp_dir().join("svgen-trace-no-such-file.png");
    assert!(open_image(&missing, &limits).is_err());
}

#[test]
fn zero_sized_images_trace_to_nothing() {
    for data in [&b"P5\n0 0\n255\n"[..], b"P4\n0 0\n", b"P1\n0 5\n"] {
        match decode_image(data, &DecodeLimits::default()) {
            Err(TraceError::Decode(_)) => {}
            Ok(img) => {
                let bm = Bitmap::from_image(&img, &Threshold::default()).unwrap();
                assert!(trace(&bm, &TraceParams::default()).unwrap().is_empty());
            }
            Err(e) => panic!("{data:?}: unexpected {e}"),
        }
    }
    let empty = DynamicImage::ImageLuma8(GrayImage::new(0, 0));
    for t in [
        Threshold::default(),
        Threshold::Otsu,
        Threshold::Mkbitmap(MkbitmapParams::default()),
    ] {
        let bm = Bitmap::from_image(&empty, &t).unwrap();
        assert_eq!((bm.width(), bm.height()), (0, 0));
        assert!(trace(&bm, &TraceParams::default()).unwrap().is_empty());
    }
    let pl = trace(&Bitmap::new(0, 7).unwrap(), &TraceParams::default()).unwrap();
    assert!(pl.is_empty());
    assert!(trace_color(&empty, &ColorParams::default())
        .unwrap()
        .layers
        .is_empty());
}

#[test]
fn all_white_and_all_black_images() {
    for (v, paths) in [(255u8, 0usize), (0, 1)] {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(37, 23, Luma([v])));
        for t in [Threshold::default(), Threshold::Otsu] {
            let bm = Bitmap::from_image(&img, &t).unwrap();
            let pl = trace(&bm, &TraceParams::default()).unwrap();
            assert_eq!(pl.path_count(), paths, "value {v} {t:?}");
        }
        // mkbitmap's high-pass filter turns any flat image into flat 0.5 grey: all white.
        let bm = Bitmap::from_image(&img, &Threshold::Mkbitmap(MkbitmapParams::default())).unwrap();
        assert!(bm.is_empty());
        // A single colour is all background for colour tracing.
        let t = trace_color(&img, &ColorParams::default()).unwrap();
        assert!(t.layers.is_empty());
    }
}
