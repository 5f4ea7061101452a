//! Reading PBM (portable bitmap) files, the native input format of potrace.

use crate::bitmap::{check_size, Bitmap, WORD_BITS};
use crate::TraceError;

/// Parses a `P1` (plain) or `P4` (binary) PBM image; 1 = black.
pub(crate) fn read_pbm(data: &[u8], max_pixels: u64) -> Result<Bitmap, TraceError> {
    let mut pos = 0usize;
    let magic = data.get(0..2).ok_or_else(|| bad("file too short"))?;
    let binary = match magic {
        b"P4" => true,
        b"P1" => false,
        _ => return Err(bad("not a P1/P4 PBM file")),
    };
    pos += 2;
    let width = header_number(data, &mut pos)?;
    let height = header_number(data, &mut pos)?;
    check_size(width, height, max_pixels)?;
    let mut bm = Bitmap::with_limit(width, height, max_pixels)?;
    if binary {
        // Exactly one whitespace byte separates the header from the raster.
        if !data.get(pos).is_some_and(u8::is_ascii_whitespace) {
            return Err(bad("missing whitespace after header"));
        }
        pos += 1;
        let bytes_per_row = (width as usize).div_ceil(8);
        let needed = bytes_per_row * height as usize;
        let raster = data
            .get(pos..pos + needed)
            .ok_or_else(|| bad("truncated raster data"))?;
        for (y, row) in raster.chunks_exact(bytes_per_row.max(1)).enumerate() {
            if bytes_per_row == 0 {
                break;
            }
            for (wi, chunk) in row.chunks(WORD_BITS / 8).enumerate() {
                let mut word = 0u64;
                for (i, &b) in chunk.iter().enumerate() {
                    word |= u64::from(b) << (56 - 8 * i);
                }
                bm.set_word(y, wi, word);
            }
        }
    } else {
        for y in 0..height {
            for x in 0..width {
                loop {
                    match data.get(pos) {
                        None => return Err(bad("truncated raster data")),
                        Some(b'#') => skip_comment(data, &mut pos),
                        Some(c) if c.is_ascii_whitespace() => pos += 1,
                        Some(b'0') => {
                            pos += 1;
                            break;
                        }
                        Some(b'1') => {
                            bm.set(x, y, true);
                            pos += 1;
                            break;
                        }
                        Some(_) => return Err(bad("invalid character in plain PBM raster")),
                    }
                }
            }
        }
    }
    Ok(bm)
}

fn bad(msg: &str) -> TraceError {
    TraceError::Decode(format!("PBM: {msg}"))
}

fn skip_comment(data: &[u8], pos: &mut usize) {
    while let Some(&c) = data.get(*pos) {
        *pos += 1;
        if c == b'\n' || c == b'\r' {
            break;
        }
    }
}

fn header_number(data: &[u8], pos: &mut usize) -> Result<u32, TraceError> {
    loop {
        match data.get(*pos) {
            Some(b'#') => skip_comment(data, pos),
            Some(c) if c.is_ascii_whitespace() => *pos += 1,
            Some(c) if c.is_ascii_digit() => break,
            Some(_) => return Err(bad("invalid header")),
            None => return Err(bad("truncated header")),
        }
    }
    let mut v: u64 = 0;
    while let Some(&c) = data.get(*pos) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + u64::from(c - b'0');
        if v > u64::from(u32::MAX) {
            return Err(bad("dimension too large"));
        }
        *pos += 1;
    }
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_binary_agree() {
        let plain = b"P1\n# comment\n3 2\n1 0 1\n0 1 0\n";
        let bin = [b"P4\n3 2\n".as_slice(), &[0b1010_0000, 0b0100_0000]].concat();
        let a = read_pbm(plain, 1 << 20).unwrap();
        let b = read_pbm(&bin, 1 << 20).unwrap();
        assert_eq!(a, b);
        assert!(a.get(0, 0) && !a.get(1, 0) && a.get(1, 1));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(read_pbm(b"", 100).is_err());
        assert!(read_pbm(b"P4\n3 2\n", 100).is_err());
        assert!(read_pbm(b"P4\n100000 100000\n", 1 << 28).is_err());
        assert!(read_pbm(b"P4 99999999999 1\n", 1 << 28).is_err());
        assert!(read_pbm(b"P1\n2 1\n1 x", 100).is_err());
        assert!(read_pbm(b"P5\n2 1\n", 100).is_err());
        let empty = read_pbm(b"P4\n0 0\n", 100).unwrap();
        assert_eq!(empty.width(), 0);
    }
}
