//! Reading PBM (portable bitmap) files, the native input format of potrace.
//!
//! The reader streams: it parses the header from a [`BufRead`], checks the pixel limit, and then
//! packs the raster row by row straight into the [`Bitmap`]'s words, so reading a file never
//! holds more than the bitmap itself and one row of file data.

use std::io::{self, BufRead};

use crate::bitmap::{check_size, Bitmap, WORD_BITS};
use crate::TraceError;

/// Parses a `P1` (plain) or `P4` (binary) PBM image from `reader`; 1 = black.
///
/// Malformed or truncated data gives [`TraceError::Decode`], a header over `max_pixels` gives
/// [`TraceError::TooLarge`] before the bitmap is allocated, and other read failures give
/// [`TraceError::Io`]. Data after the raster is left unread.
pub(crate) fn read_pbm<R: BufRead>(reader: R, max_pixels: u64) -> Result<Bitmap, TraceError> {
    let mut r = Bytes { inner: reader };
    let magic = [r.next()?, r.next()?];
    let binary = match magic {
        [Some(b'P'), Some(b'4')] => true,
        [Some(b'P'), Some(b'1')] => false,
        [Some(_), Some(_)] => return Err(bad("not a P1/P4 PBM file")),
        _ => return Err(bad("file too short")),
    };
    let width = header_number(&mut r)?;
    let height = header_number(&mut r)?;
    check_size(width, height, max_pixels)?;
    let mut bm = Bitmap::with_limit(width, height, max_pixels)?;
    if binary {
        // Exactly one whitespace byte separates the header from the raster.
        if !r.next()?.is_some_and(|c| c.is_ascii_whitespace()) {
            return Err(bad("missing whitespace after header"));
        }
        read_raster_p4(&mut r.inner, &mut bm)?;
    } else {
        for y in 0..height {
            for x in 0..width {
                loop {
                    match r.next()? {
                        None => return Err(bad("truncated raster data")),
                        Some(b'#') => skip_comment(&mut r)?,
                        Some(c) if c.is_ascii_whitespace() => {}
                        Some(b'0') => break,
                        Some(b'1') => {
                            bm.set(x, y, true);
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

/// Reads the `P4` raster (rows of `⌈width / 8⌉` bytes, most significant bit first) into `bm`,
/// eight bytes to a storage word.
fn read_raster_p4<R: BufRead>(r: &mut R, bm: &mut Bitmap) -> Result<(), TraceError> {
    let bytes_per_row = (bm.width() as usize).div_ceil(8);
    if bytes_per_row == 0 {
        return Ok(());
    }
    const WORD_BYTES: usize = WORD_BITS / 8;
    let mut row = vec![0u8; bytes_per_row];
    for y in 0..bm.height() as usize {
        r.read_exact(&mut row).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("truncated raster data"),
            _ => TraceError::Io(e),
        })?;
        let mut chunks = row.chunks_exact(WORD_BYTES);
        let mut wi = 0;
        for chunk in &mut chunks {
            let mut b = [0u8; WORD_BYTES];
            b.copy_from_slice(chunk);
            bm.set_word(y, wi, u64::from_be_bytes(b));
            wi += 1;
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut b = [0u8; WORD_BYTES];
            b[..tail.len()].copy_from_slice(tail);
            bm.set_word(y, wi, u64::from_be_bytes(b));
        }
    }
    Ok(())
}

/// Byte-at-a-time access to a [`BufRead`] for the header and the plain raster.
struct Bytes<R> {
    inner: R,
}

impl<R: BufRead> Bytes<R> {
    /// The next byte without consuming it; `None` at the end of the data.
    fn peek(&mut self) -> Result<Option<u8>, TraceError> {
        loop {
            match self.inner.fill_buf() {
                Ok(buf) => return Ok(buf.first().copied()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TraceError::Io(e)),
            }
        }
    }

    /// The next byte, consumed; `None` at the end of the data.
    fn next(&mut self) -> Result<Option<u8>, TraceError> {
        let c = self.peek()?;
        if c.is_some() {
            self.inner.consume(1);
        }
        Ok(c)
    }
}

fn bad(msg: &str) -> TraceError {
    TraceError::Decode(format!("PBM: {msg}"))
}

/// Skips the rest of a `#` comment, up to and including the end of the line.
fn skip_comment<R: BufRead>(r: &mut Bytes<R>) -> Result<(), TraceError> {
    while let Some(c) = r.next()? {
        if c == b'\n' || c == b'\r' {
            break;
        }
    }
    Ok(())
}

fn header_number<R: BufRead>(r: &mut Bytes<R>) -> Result<u32, TraceError> {
    loop {
        match r.peek()? {
            Some(b'#') => {
                r.next()?;
                skip_comment(r)?;
            }
            Some(c) if c.is_ascii_whitespace() => {
                r.next()?;
            }
            Some(c) if c.is_ascii_digit() => break,
            Some(_) => return Err(bad("invalid header")),
            None => return Err(bad("truncated header")),
        }
    }
    let mut v: u64 = 0;
    while let Some(c) = r.peek()? {
        if !c.is_ascii_digit() {
            break;
        }
        v = v * 10 + u64::from(c - b'0');
        if v > u64::from(u32::MAX) {
            return Err(bad("dimension too large"));
        }
        r.next()?;
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
        let a = read_pbm(&plain[..], 1 << 20).unwrap();
        let b = read_pbm(&bin[..], 1 << 20).unwrap();
        assert_eq!(a, b);
        assert!(a.get(0, 0) && !a.get(1, 0) && a.get(1, 1));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(read_pbm(&b""[..], 100).is_err());
        assert!(read_pbm(&b"P4\n3 2\n"[..], 100).is_err());
        assert!(read_pbm(&b"P4\n100000 100000\n"[..], 1 << 28).is_err());
        assert!(read_pbm(&b"P4 99999999999 1\n"[..], 1 << 28).is_err());
        assert!(read_pbm(&b"P1\n2 1\n1 x"[..], 100).is_err());
        assert!(read_pbm(&b"P5\n2 1\n"[..], 100).is_err());
        let empty = read_pbm(&b"P4\n0 0\n"[..], 100).unwrap();
        assert_eq!(empty.width(), 0);
    }
}
