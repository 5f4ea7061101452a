//! The packed 1-bit bitmap that the tracer works on.
//!
//! Pixels are stored 64 to a machine word, one run of words per row, so that the path
//! decomposition can skip white areas a word at a time and invert path interiors with word-wide
//! XORs. Row 0 is the **top** row of the image, as in image files; the tracer converts to
//! potrace's bottom-up coordinates internally.

use crate::TraceError;

/// Default maximum number of pixels a [`Bitmap`] may hold: 2²⁸ (for example 16384 × 16384),
/// which is 32 MiB of packed bits. Use [`Bitmap::with_limit`] to choose another limit.
pub const DEFAULT_PIXEL_LIMIT: u64 = 1 << 28;

/// Number of pixels in one storage word.
pub(crate) const WORD_BITS: usize = 64;

/// A black-and-white image packed 1 bit per pixel (`true` = black = ink).
///
/// Every constructor checks the pixel count against a limit *before* allocating, so a corrupt
/// header that claims 100000 × 100000 pixels yields [`TraceError::TooLarge`] instead of a huge
/// allocation. Reads outside the image are white, as potrace assumes.
///
/// ```
/// use svgen_trace::Bitmap;
/// # fn main() -> Result<(), svgen_trace::TraceError> {
/// // A 4x3 bitmap with a black 2x2 square in the top-left corner.
/// let bm = Bitmap::from_fn(4, 3, |x, y| x < 2 && y < 2)?;
/// assert_eq!(bm.count_black(), 4);
/// assert!(bm.get(0, 0));
/// assert!(!bm.get(-1, 0)); // outside = white
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitmap {
    width: u32,
    height: u32,
    /// Words per row.
    stride: usize,
    /// `height * stride` words; pixel `x` of a row is bit `63 - x % 64` of word `x / 64`.
    words: Vec<u64>,
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("black", &self.count_black())
            .finish()
    }
}

impl Bitmap {
    /// An all-white bitmap, limited to [`DEFAULT_PIXEL_LIMIT`] pixels.
    ///
    /// Zero-sized bitmaps are allowed; they trace to an empty [`PathList`](crate::PathList).
    pub fn new(width: u32, height: u32) -> Result<Bitmap, TraceError> {
        Bitmap::with_limit(width, height, DEFAULT_PIXEL_LIMIT)
    }

    /// An all-white bitmap, refusing more than `max_pixels` pixels before allocating anything.
    pub fn with_limit(width: u32, height: u32, max_pixels: u64) -> Result<Bitmap, TraceError> {
        check_size(width, height, max_pixels)?;
        let stride = (width as usize).div_ceil(WORD_BITS);
        Ok(Bitmap {
            width,
            height,
            stride,
            words: vec![0; stride * height as usize],
        })
    }

    /// A bitmap whose pixel `(x, y)` (row 0 = top) is black when `f(x, y)` returns `true`,
    /// limited to [`DEFAULT_PIXEL_LIMIT`] pixels. `f` is called once per pixel, row by row.
    pub fn from_fn(
        width: u32,
        height: u32,
        f: impl FnMut(u32, u32) -> bool,
    ) -> Result<Bitmap, TraceError> {
        Bitmap::from_fn_with_limit(width, height, DEFAULT_PIXEL_LIMIT, f)
    }

    /// Like [`Bitmap::from_fn`] with an explicit pixel limit.
    pub fn from_fn_with_limit(
        width: u32,
        height: u32,
        max_pixels: u64,
        mut f: impl FnMut(u32, u32) -> bool,
    ) -> Result<Bitmap, TraceError> {
        let mut bm = Bitmap::with_limit(width, height, max_pixels)?;
        for y in 0..height {
            let row = y as usize * bm.stride;
            for wi in 0..bm.stride {
                let mut word = 0u64;
                let x0 = wi * WORD_BITS;
                let x1 = (x0 + WORD_BITS).min(width as usize);
                for x in x0..x1 {
                    if f(x as u32, y) {
                        word |= 1 << (WORD_BITS - 1 - (x - x0));
                    }
                }
                bm.words[row + wi] = word;
            }
        }
        Ok(bm)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether pixel `(x, y)` (row 0 = top) is black; pixels outside the image are white.
    #[inline]
    pub fn get(&self, x: i64, y: i64) -> bool {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return false;
        }
        let (x, y) = (x as usize, y as usize);
        self.words[y * self.stride + x / WORD_BITS] >> (WORD_BITS - 1 - x % WORD_BITS) & 1 != 0
    }

    /// Sets pixel `(x, y)` (row 0 = top) to black or white; writes outside the image are ignored.
    #[inline]
    pub fn set(&mut self, x: u32, y: u32, black: bool) {
        if x >= self.width || y >= self.height {
            return;
        }
        let (x, y) = (x as usize, y as usize);
        let mask = 1u64 << (WORD_BITS - 1 - x % WORD_BITS);
        let w = &mut self.words[y * self.stride + x / WORD_BITS];
        if black {
            *w |= mask;
        } else {
            *w &= !mask;
        }
    }

    /// Number of black pixels.
    pub fn count_black(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Inverts every pixel (black ↔ white).
    pub fn invert(&mut self) {
        for w in &mut self.words {
            *w = !*w;
        }
        self.clear_padding();
    }

    /// Whether the bitmap has no black pixel.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Reads a binary (`P4`) or plain (`P1`) PBM file, checking the pixel limit before
    /// allocating. In PBM, 1 is black.
    pub fn from_pbm(data: &[u8], max_pixels: u64) -> Result<Bitmap, TraceError> {
        crate::pbm::read_pbm(data, max_pixels)
    }

    /// Like [`Bitmap::from_pbm`], streaming from a reader: the raster goes row by row straight
    /// into the bitmap, so a file is never held in memory whole. Data after the raster is left
    /// unread; read failures other than truncation give [`TraceError::Io`].
    ///
    /// ```
    /// use std::io::BufReader;
    /// use svgen_trace::{Bitmap, DEFAULT_PIXEL_LIMIT};
    /// # fn main() -> Result<(), svgen_trace::TraceError> {
    /// let file: &[u8] = b"P4\n3 2\n\xa0\x40"; // or a std::fs::File
    /// let bm = Bitmap::read_pbm(BufReader::new(file), DEFAULT_PIXEL_LIMIT)?;
    /// assert_eq!((bm.width(), bm.count_black()), (3, 3));
    /// # Ok(()) }
    /// ```
    pub fn read_pbm(reader: impl std::io::BufRead, max_pixels: u64) -> Result<Bitmap, TraceError> {
        crate::pbm::read_pbm(reader, max_pixels)
    }

    /// Writes the bitmap as a binary `P4` PBM file.
    pub fn to_pbm(&self) -> Vec<u8> {
        let mut out = format!("P4\n{} {}\n", self.width, self.height).into_bytes();
        let bytes_per_row = (self.width as usize).div_ceil(8);
        out.reserve(bytes_per_row * self.height as usize);
        for y in 0..self.height as usize {
            let row = self.row(y);
            for b in 0..bytes_per_row {
                out.push((row[b / 8] >> (56 - 8 * (b % 8))) as u8);
            }
        }
        out
    }

    // ----- crate-internal word access -----

    /// The words of row `y` (row 0 = top).
    #[inline]
    pub(crate) fn row(&self, y: usize) -> &[u64] {
        &self.words[y * self.stride..(y + 1) * self.stride]
    }

    /// XORs the pixels `x0..x1` of row `y` (row 0 = top) with black. Out-of-range parts are clipped.
    pub(crate) fn xor_span(&mut self, y: usize, x0: usize, x1: usize) {
        let x1 = x1.min(self.width as usize);
        if x0 >= x1 || y >= self.height as usize {
            return;
        }
        let base = y * self.stride;
        let (w0, w1) = (x0 / WORD_BITS, (x1 - 1) / WORD_BITS);
        let head = u64::MAX >> (x0 % WORD_BITS);
        let tail = u64::MAX << (WORD_BITS - 1 - (x1 - 1) % WORD_BITS);
        if w0 == w1 {
            self.words[base + w0] ^= head & tail;
        } else {
            self.words[base + w0] ^= head;
            for w in &mut self.words[base + w0 + 1..base + w1] {
                *w = !*w;
            }
            self.words[base + w1] ^= tail;
        }
    }

    /// Zeroes the bits beyond `width` in the last word of every row.
    fn clear_padding(&mut self) {
        let rem = self.width as usize % WORD_BITS;
        if rem == 0 {
            return;
        }
        let mask = u64::MAX << (WORD_BITS - rem);
        for y in 0..self.height as usize {
            self.words[y * self.stride + self.stride - 1] &= mask;
        }
    }

    /// A bitmap from an 8-bit pixel buffer: `height` rows of `width` pixels of `N` bytes each
    /// (row 0 = top), pixel `(x, y)` black when `black(x, y, pixel)`. Packs 64 pixels to a word
    /// straight from the buffer (crate-internal builder for the image thresholds). `data` must
    /// hold at least `width × height × N` bytes.
    pub(crate) fn from_pixels<const N: usize>(
        width: u32,
        height: u32,
        max_pixels: u64,
        data: &[u8],
        mut black: impl FnMut(u32, u32, &[u8; N]) -> bool,
    ) -> Result<Bitmap, TraceError> {
        let mut bm = Bitmap::with_limit(width, height, max_pixels)?;
        let row_bytes = width as usize * N;
        if row_bytes == 0 {
            return Ok(bm);
        }
        for (y, row) in data
            .chunks_exact(row_bytes)
            .take(height as usize)
            .enumerate()
        {
            let words = &mut bm.words[y * bm.stride..(y + 1) * bm.stride];
            for (wi, (chunk, word)) in row.chunks(WORD_BITS * N).zip(words).enumerate() {
                let mut w = 0u64;
                for (b, px) in chunk.as_chunks::<N>().0.iter().enumerate() {
                    let x = (wi * WORD_BITS + b) as u32;
                    w |= u64::from(black(x, y as u32, px)) << (WORD_BITS - 1 - b);
                }
                *word = w;
            }
        }
        Ok(bm)
    }

    /// Sets word `wi` of row `y` (crate-internal builder use; padding bits are cleared).
    pub(crate) fn set_word(&mut self, y: usize, wi: usize, word: u64) {
        let mut word = word;
        if wi + 1 == self.stride {
            let rem = self.width as usize % WORD_BITS;
            if rem != 0 {
                word &= u64::MAX << (WORD_BITS - rem);
            }
        }
        self.words[y * self.stride + wi] = word;
    }
}

/// Checks `width × height` against `max_pixels` without overflowing. Each side must also fit
/// the tracer's `i32` lattice coordinates, whatever the limit.
pub(crate) fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), TraceError> {
    let pixels = u64::from(width) * u64::from(height);
    let max_side = (i32::MAX - 1) as u32;
    if pixels > max_pixels || width > max_side || height > max_side {
        return Err(TraceError::TooLarge {
            width: width.into(),
            height: height.into(),
            limit: max_pixels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_and_bounds() {
        let mut bm = Bitmap::new(130, 3).unwrap();
        assert!(bm.is_empty());
        bm.set(0, 0, true);
        bm.set(64, 1, true);
        bm.set(129, 2, true);
        bm.set(130, 2, true); // ignored
        assert!(bm.get(0, 0) && bm.get(64, 1) && bm.get(129, 2));
        assert!(!bm.get(130, 2) && !bm.get(-1, 0) && !bm.get(0, 3));
        assert_eq!(bm.count_black(), 3);
        bm.set(64, 1, false);
        assert_eq!(bm.count_black(), 2);
    }

    #[test]
    fn limit_is_checked_before_allocation() {
        let err = Bitmap::new(100_000, 100_000).unwrap_err();
        assert!(matches!(err, TraceError::TooLarge { .. }));
        assert!(Bitmap::with_limit(10, 10, 99).is_err());
        assert!(Bitmap::with_limit(10, 10, 100).is_ok());
        let empty = Bitmap::new(0, 0).unwrap();
        assert_eq!(empty.count_black(), 0);
    }

    #[test]
    fn xor_span_matches_pixelwise() {
        for (x0, x1) in [
            (0, 1),
            (3, 64),
            (63, 65),
            (0, 200),
            (5, 133),
            (64, 128),
            (7, 7),
        ] {
            let mut bm = Bitmap::new(200, 1).unwrap();
            bm.set(70, 0, true);
            bm.xor_span(0, x0, x1);
            for x in 0..200 {
                let inside = x >= x0 && x < x1;
                assert_eq!(
                    bm.get(x as i64, 0),
                    inside != (x == 70),
                    "{x0}..{x1} at {x}"
                );
            }
        }
    }

    #[test]
    fn invert_keeps_padding_white() {
        let mut bm = Bitmap::new(70, 2).unwrap();
        bm.invert();
        assert_eq!(bm.count_black(), 140);
        assert!(!bm.get(70, 0));
    }

    #[test]
    fn pbm_round_trip() {
        let bm = Bitmap::from_fn(13, 5, |x, y| (x * 7 + y * 3) % 5 == 0).unwrap();
        let back = Bitmap::from_pbm(&bm.to_pbm(), DEFAULT_PIXEL_LIMIT).unwrap();
        assert_eq!(bm, back);
    }
}
