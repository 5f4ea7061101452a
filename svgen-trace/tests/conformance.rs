//! Conformance against the real `potrace` 1.16 binary (Debian package `potrace`, installed by
//! `.ci/run`).
//!
//! For every bitmap of a generated corpus and every option set, both our SVG and
//! `potrace -s`'s are rasterised by the same renderer (svgen-core / resvg) at the bitmap's
//! resolution. Pass criteria (issue 3):
//! - the XOR of the two rasterisations is at most 0.1% of the pixels in every case;
//! - the number of paths and of curve segments is identical in at least 95% of the cases.
//!
//! The test prints a per-case table (`cargo test -p svgen-trace --test conformance -- --nocapture`).

use std::io::Write;
use std::process::{Command, Stdio};

use svgen_core::render::{render, Fit, RenderOptions, RenderSize};
use svgen_core::Svg;
use svgen_trace::{trace, Bitmap, SvgOptions, TraceParams, TurnPolicy};

/// A named test bitmap.
struct Case {
    name: String,
    bitmap: Bitmap,
}

/// Deterministic xorshift generator (the corpus must not change between runs).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rasterises an SVG document with svgen-core and thresholds it (ink = black).
fn raster_svg(svg: &str, width: u32, height: u32) -> Bitmap {
    let doc = Svg::parse(svg.as_bytes()).expect("corpus SVG parses");
    let img = render(
        &doc,
        &RenderOptions::default()
            .with_size(RenderSize::Exact { width, height })
            .with_fit(Fit::Stretch),
    );
    Bitmap::from_fn(width, height, |x, y| {
        let p = img.get_pixel(x, y).0;
        (u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) < 3 * 128
    })
    .expect("bitmap fits")
}

fn text_page(width: u32, height: u32, family: &str, sizes: &[u32], seed: u64) -> Bitmap {
    const WORDS: &[&str] = &[
        "Potrace",
        "traces",
        "bitmaps",
        "into",
        "smooth",
        "scalable",
        "curves;",
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog.",
        "Sphinx",
        "of",
        "black",
        "quartz,",
        "judge",
        "my",
        "vow!",
        "0123456789",
        "@#&amp;%",
        "(){}[]",
        "Äöü",
        "ßæø",
        "€£¥",
        "→←",
    ];
    let mut rng = Rng(seed);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let mut y = 0u32;
    let mut i = 0usize;
    loop {
        let size = sizes[i % sizes.len()];
        i += 1;
        y += size + size / 3;
        if y + size / 4 > height {
            break;
        }
        let mut line = String::new();
        while line.len() * size as usize * 55 / 100 < width as usize {
            line.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
            line.push(' ');
        }
        svg.push_str(&format!(
            r#"<text x="4" y="{y}" font-family="{family}" font-size="{size}">{line}</text>"#
        ));
    }
    svg.push_str("</svg>");
    raster_svg(&svg, width, height)
}

/// A smooth blob (sum of radial bumps) with circular holes and islands inside the holes.
fn silhouette(width: u32, height: u32, seed: u64) -> Bitmap {
    let mut rng = Rng(seed);
    let (w, h) = (f64::from(width), f64::from(height));
    let bumps: Vec<(f64, f64, f64)> = (0..7)
        .map(|_| {
            (
                w * (0.25 + 0.5 * rng.unit()),
                h * (0.25 + 0.5 * rng.unit()),
                w.min(h) * (0.12 + 0.12 * rng.unit()),
            )
        })
        .collect();
    let holes: Vec<(f64, f64, f64)> = bumps.iter().map(|&(x, y, r)| (x, y, r * 0.45)).collect();
    Bitmap::from_fn(width, height, |x, y| {
        let (px, py) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
        let field: f64 = bumps
            .iter()
            .map(|&(cx, cy, r)| (-((px - cx).powi(2) + (py - cy).powi(2)) / (r * r)).exp())
            .sum();
        let mut inside = field > 0.5;
        for &(cx, cy, r) in &holes[..3] {
            let d = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
            if d < r {
                inside = d < r * 0.4; // a hole with an island
            }
        }
        inside
    })
    .expect("bitmap fits")
}

/// Box-blurred uniform noise, thresholded, plus salt-and-pepper speckles.
fn noise(width: u32, height: u32, blur: usize, speckle: f64, seed: u64) -> Bitmap {
    let mut rng = Rng(seed);
    let (w, h) = (width as usize, height as usize);
    let raw: Vec<f64> = (0..w * h).map(|_| rng.unit()).collect();
    let mut sm = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            let mut n = 0.0;
            for yy in y.saturating_sub(blur)..(y + blur + 1).min(h) {
                for xx in x.saturating_sub(blur)..(x + blur + 1).min(w) {
                    s += raw[yy * w + xx];
                    n += 1.0;
                }
            }
            sm[y * w + x] = s / n;
        }
    }
    let flips: Vec<bool> = (0..w * h).map(|_| rng.unit() < speckle).collect();
    Bitmap::from_fn(width, height, |x, y| {
        let i = y as usize * w + x as usize;
        (sm[i] > 0.5) != flips[i]
    })
    .expect("bitmap fits")
}

fn icon(file: &str, side: u32) -> Bitmap {
    let path = format!("{}/tests/data/tabler/{file}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).expect("icon fixture present");
    raster_svg(&src, side, side)
}

fn corpus() -> Vec<Case> {
    let mut c = Vec::new();
    let mut add = |name: &str, bitmap: Bitmap| {
        c.push(Case {
            name: name.to_owned(),
            bitmap,
        })
    };
    add(
        "text-sans",
        text_page(640, 360, "DejaVu Sans", &[14, 20, 28], 1),
    );
    add(
        "text-serif",
        text_page(560, 300, "DejaVu Serif", &[11, 17, 40], 2),
    );
    add(
        "text-mono-small",
        text_page(400, 160, "DejaVu Sans Mono", &[9, 10, 12], 3),
    );
    add("silhouette-a", silhouette(420, 380, 11));
    add("silhouette-b", silhouette(300, 500, 12));
    add("noise-speckles", noise(200, 160, 3, 0.01, 21));
    add("noise-coarse", noise(240, 240, 6, 0.002, 22));
    add("noise-pixel", noise(96, 80, 0, 0.0, 23));
    for (file, side) in [
        ("outline-home.svg", 96),
        ("outline-camera.svg", 128),
        ("outline-bike.svg", 200),
        ("outline-settings.svg", 64),
        ("filled-heart.svg", 128),
        ("filled-star.svg", 48),
        ("filled-bell.svg", 160),
        ("filled-mood-smile.svg", 256),
    ] {
        add(
            &format!("icon-{}-{side}", file.trim_end_matches(".svg")),
            icon(file, side),
        );
    }
    add("1x1-black", Bitmap::from_fn(1, 1, |_, _| true).unwrap());
    add("1x1-white", Bitmap::new(1, 1).unwrap());
    add("empty", Bitmap::new(40, 30).unwrap());
    add("full", Bitmap::from_fn(40, 30, |_, _| true).unwrap());
    add(
        "lines",
        Bitmap::from_fn(50, 40, |x, y| {
            y == 5 || x == 7 || (x == y && y > 10) || (y == 30 && x % 2 == 0)
        })
        .unwrap(),
    );
    add(
        "checker-1",
        Bitmap::from_fn(32, 24, |x, y| (x + y) % 2 == 0).unwrap(),
    );
    add(
        "checker-3",
        Bitmap::from_fn(60, 45, |x, y| (x / 3 + y / 3) % 2 == 0).unwrap(),
    );
    c
}

/// Potrace's option sets from the issue; `TraceParams` equivalents.
fn option_sets() -> Vec<(&'static str, Vec<&'static str>, TraceParams)> {
    let d = TraceParams::default();
    vec![
        ("default", vec![], d),
        (
            "-t10 -a0 -n -zw",
            vec!["-t", "10", "-a", "0", "-n", "-z", "white"],
            TraceParams {
                turdsize: 10,
                alphamax: 0.0,
                opticurve: false,
                turnpolicy: TurnPolicy::White,
                ..d
            },
        ),
        (
            "-a1.334 -O1",
            vec!["-a", "1.334", "-O", "1"],
            TraceParams {
                alphamax: 1.334,
                opttolerance: 1.0,
                ..d
            },
        ),
        (
            "--longcurve",
            vec!["--longcurve"],
            TraceParams {
                opticurve: false,
                ..d
            },
        ),
    ]
}

fn run_potrace(bitmap: &Bitmap, args: &[&str]) -> String {
    let mut child = Command::new("potrace")
        .args(["-s", "-o", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the `potrace` binary (Debian package potrace 1.16) must be installed");
    let pbm = bitmap.to_pbm();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&pbm));
    let out = child.wait_with_output().expect("potrace runs");
    writer.join().expect("writer").expect("write pbm");
    assert!(out.status.success(), "potrace failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// (paths, segments) counted from SVG path data as potrace writes it: one path per `M`/`m`,
/// one segment per `c` triple, one corner per two `l` points.
fn count_svg(svg: &str) -> (usize, usize) {
    let mut paths = 0;
    let mut curves = 0;
    let mut lines = 0;
    for attr in svg.split(" d=\"").skip(1) {
        let data = &attr[..attr.find('"').unwrap_or(attr.len())];
        let mut op = ' ';
        let mut nums = 0usize;
        let mut flush = |op: char, nums: usize| match op {
            'c' => curves += nums / 6,
            'l' => lines += nums / 2,
            _ => {}
        };
        for tok in data
            .split(|c: char| c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            let mut t = tok;
            while let Some(ch) = t.chars().next().filter(|c| c.is_ascii_alphabetic()) {
                flush(op, nums);
                nums = 0;
                op = ch;
                if ch == 'M' || ch == 'm' {
                    paths += 1;
                }
                t = &t[1..];
            }
            let t = t.trim_end_matches(['z', 'Z']);
            if !t.is_empty() {
                nums += 1;
            }
            if tok.ends_with(['z', 'Z']) {
                flush(op, nums);
                nums = 0;
                op = ' ';
            }
        }
        flush(op, nums);
    }
    (paths, curves + lines / 2)
}

fn rasterise(svg: &str, width: u32, height: u32) -> Vec<bool> {
    let doc = Svg::parse(svg.as_bytes()).expect("SVG parses");
    let img = render(
        &doc,
        &RenderOptions::default()
            .with_size(RenderSize::Exact { width, height })
            .with_fit(Fit::Stretch),
    );
    img.pixels()
        .map(|p| (u32::from(p.0[0]) + u32::from(p.0[1]) + u32::from(p.0[2])) < 3 * 128)
        .collect()
}

#[test]
fn matches_potrace() {
    let corpus = corpus();
    assert!(corpus.len() >= 20);
    let mut rows = Vec::new();
    let (mut total, mut same_counts, mut identical) = (0usize, 0usize, 0usize);
    let mut worst_xor: f64 = 0.0;
    let mut failures = Vec::new();
    for case in &corpus {
        let (w, h) = (case.bitmap.width(), case.bitmap.height());
        for (oname, args, params) in option_sets() {
            let ours = trace(&case.bitmap, &params).expect("trace");
            let ours_svg = ours.to_svg(&SvgOptions::default());
            let theirs_svg = run_potrace(&case.bitmap, &args);
            let (op, os) = count_svg(&ours_svg);
            assert_eq!(
                (op, os),
                (ours.path_count(), ours.segment_count()),
                "{}",
                case.name
            );
            let (tp, ts) = count_svg(&theirs_svg);
            let body = |s: &str| s[s.find("<g ").unwrap_or(0)..].to_owned();
            let same_body = body(&ours_svg) == body(&theirs_svg);
            // Set SVGEN_CONFORMANCE_DUMP=dir to keep both SVGs of every case that differs.
            if let (false, Some(dir)) = (same_body, std::env::var_os("SVGEN_CONFORMANCE_DUMP")) {
                let stem = format!("{}_{}", case.name, oname.replace([' ', '-'], ""));
                let dir = std::path::Path::new(&dir);
                std::fs::create_dir_all(dir).expect("dump dir");
                std::fs::write(dir.join(format!("{stem}.ours.svg")), &ours_svg).expect("dump");
                std::fs::write(dir.join(format!("{stem}.potrace.svg")), &theirs_svg).expect("dump");
                std::fs::write(dir.join(format!("{stem}.pbm")), case.bitmap.to_pbm())
                    .expect("dump");
            }
            let a = rasterise(&ours_svg, w, h);
            let b = rasterise(&theirs_svg, w, h);
            let xor = a.iter().zip(&b).filter(|(p, q)| p != q).count();
            let frac = xor as f64 / (u64::from(w) * u64::from(h)) as f64;
            total += 1;
            if (op, os) == (tp, ts) {
                same_counts += 1;
            }
            if same_body {
                identical += 1;
            }
            worst_xor = worst_xor.max(frac);
            if frac > 0.001 {
                failures.push(format!("{} [{oname}]: XOR {:.4}%", case.name, frac * 100.0));
            }
            rows.push(format!(
                "{:<28} {:<16} {:>9} {:>5}/{:<5} {:>6}/{:<6} {:>5} {:>7} {:>8.4}%",
                case.name,
                oname,
                format!("{w}x{h}"),
                op,
                tp,
                os,
                ts,
                if same_body { "yes" } else { "no" },
                xor,
                frac * 100.0
            ));
        }
    }
    println!(
        "{:<28} {:<16} {:>9} {:>11} {:>13} {:>5} {:>7} {:>9}",
        "case", "options", "size", "paths", "segments", "bytes", "xor px", "xor"
    );
    for r in &rows {
        println!("{r}");
    }
    let pct = 100.0 * same_counts as f64 / total as f64;
    println!(
        "{total} cases: identical path+segment counts in {same_counts} ({pct:.1}%), \
         byte-identical drawing in {identical}, worst XOR {:.4}%",
        worst_xor * 100.0
    );
    assert!(failures.is_empty(), "XOR above 0.1%: {failures:#?}");
    assert!(pct >= 95.0, "identical counts in only {pct:.1}% of cases");
}

/// All seven turn policies (and more turdsizes) on ambiguous-heavy inputs: identical drawings.
#[test]
fn turn_policies_match_potrace() {
    let inputs = [
        ("noise-pixel", noise(80, 64, 0, 0.0, 31)),
        ("noise-speckles", noise(120, 90, 2, 0.02, 32)),
        (
            "checker-1",
            Bitmap::from_fn(17, 13, |x, y| (x + y) % 2 == 0).unwrap(),
        ),
    ];
    let mut mismatches = Vec::new();
    let mut n = 0;
    for (name, bm) in &inputs {
        for (policy, flag) in [
            (TurnPolicy::Black, "black"),
            (TurnPolicy::White, "white"),
            (TurnPolicy::Left, "left"),
            (TurnPolicy::Right, "right"),
            (TurnPolicy::Minority, "minority"),
            (TurnPolicy::Majority, "majority"),
            (TurnPolicy::Random, "random"),
        ] {
            for turdsize in [0u32, 2, 5] {
                let params = TraceParams {
                    turnpolicy: policy,
                    turdsize,
                    ..TraceParams::default()
                };
                let ours = trace(bm, &params).unwrap().to_svg(&SvgOptions::default());
                let ts = turdsize.to_string();
                let theirs = run_potrace(bm, &["-z", flag, "-t", &ts]);
                n += 1;
                let body = |s: &str| s[s.find("<g ").unwrap_or(0)..].to_owned();
                if body(&ours) != body(&theirs) {
                    mismatches.push(format!(
                        "{name} -z {flag} -t {turdsize}: ours {:?} potrace {:?}",
                        count_svg(&ours),
                        count_svg(&theirs)
                    ));
                }
            }
        }
    }
    println!(
        "{} of {n} policy cases differ from potrace",
        mismatches.len()
    );
    for m in &mismatches {
        println!("  {m}");
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

/// `SvgOptions` reproduce potrace's SVG flags byte for byte (apart from potrace's comment).
#[test]
fn svg_options_match_potrace() {
    use svgen_trace::svg::Grouping;
    let inputs = [
        ("silhouette", silhouette(150, 120, 41)),
        ("text", text_page(300, 90, "DejaVu Serif", &[10, 16], 42)),
        (
            "nested",
            Bitmap::from_fn(40, 30, |x, y| {
                let d = (x as i32 - 20).abs().max((y as i32 - 15).abs());
                d % 4 < 2 && d < 14
            })
            .unwrap(),
        ),
        ("empty", Bitmap::new(7, 5).unwrap()),
        (
            "corner-pixel",
            Bitmap::from_fn(9, 9, |x, y| x == 8 && y == 8).unwrap(),
        ),
    ];
    let d = SvgOptions::default();
    let sets: Vec<(Vec<&str>, SvgOptions)> = vec![
        (
            vec!["--tight"],
            SvgOptions {
                tight: true,
                ..d.clone()
            },
        ),
        (
            vec!["--group"],
            SvgOptions {
                grouping: Grouping::Group,
                ..d.clone()
            },
        ),
        (
            vec!["--flat"],
            SvgOptions {
                grouping: Grouping::Flat,
                ..d.clone()
            },
        ),
        (
            vec!["-u", "1"],
            SvgOptions {
                unit: 1.0,
                ..d.clone()
            },
        ),
        (
            vec!["-u", "100"],
            SvgOptions {
                unit: 100.0,
                ..d.clone()
            },
        ),
        (
            vec!["-C", "#ff8000"],
            SvgOptions {
                fill: "#ff8000".into(),
                ..d.clone()
            },
        ),
    ];
    let strip = |s: &str| -> String {
        match (s.find("<metadata>"), s.find("</metadata>\n")) {
            (Some(a), Some(b)) => format!("{}{}", &s[..a], &s[b + "</metadata>\n".len()..]),
            _ => s.to_owned(),
        }
    };
    let params = TraceParams {
        turdsize: 0,
        ..TraceParams::default()
    };
    let mut bad = Vec::new();
    for (name, bm) in &inputs {
        let list = trace(bm, &params).unwrap();
        for (args, opts) in &sets {
            let mut a = vec!["-t", "0"];
            a.extend(args.iter().copied());
            let theirs = strip(&run_potrace(bm, &a));
            let ours = list.to_svg(opts);
            if ours != theirs {
                bad.push(format!(
                    "{name} {args:?}:\n--- ours\n{ours}\n--- potrace\n{theirs}"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
