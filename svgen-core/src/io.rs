//! Bounded file reads: the one way svgen's crates read a whole file of outside data (tokenizers,
//! chat templates, captions, images for training, run state) into memory.
//!
//! A file is refused from its size before any byte is read, and the read itself stops one byte
//! past the cap, so a file that grows while it is read (or a FIFO, or `/dev/zero`) cannot exhaust
//! memory either.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Cap for text metadata: tokenizer files, chat templates, `config.json`-like state (64 MiB; the
/// largest real `tokenizer.json`, Llama 3's, is 9 MB, and Gemma's 34 MB).
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

/// Cap for one caption file (1 MiB), the same as a caption line in svgen-data.
pub const MAX_CAPTION_BYTES: u64 = 1 << 20;

/// A bounded read that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is over the cap.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap it exceeds.
        limit: u64,
    },
    /// A text file is not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::TooLarge { path, .. } | Self::NotUtf8 { path } => path,
        }
    }
}

/// The bytes of `path`, at most `limit` of them.
///
/// # Errors
/// [`ReadError::Io`], or [`ReadError::TooLarge`] when the file (by its metadata or by what the
/// read returned) holds more than `limit` bytes.
pub fn read_capped(path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, ReadError> {
    let path = path.as_ref();
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() && meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(if meta.is_file() {
        meta.len() as usize
    } else {
        0
    });
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read_capped`] for UTF-8 text.
///
/// # Errors
/// As [`read_capped`], and [`ReadError::NotUtf8`].
pub fn read_to_string_capped(path: impl AsRef<Path>, limit: u64) -> Result<String, ReadError> {
    let path = path.as_ref();
    String::from_utf8(read_capped(path, limit)?).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_cap_and_refuses_one_byte_more() {
        let dir = std::env::temp_dir().join(format!("svgen-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.txt");
        std::fs::write(&p, "héllo").unwrap();
        assert_eq!(read_to_string_capped(&p, 6).unwrap(), "héllo");
        let e = read_capped(&p, 5).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 5, .. }), "{e}");
        assert_eq!(e.path(), p);
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_to_string_capped(&p, 10),
            Err(ReadError::NotUtf8 { .. })
        ));
        assert!(matches!(
            read_capped(dir.join("missing"), 10),
            Err(ReadError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_source_stops_at_the_cap() {
        // `/dev/zero` has no size in its metadata: only the bounded read stops it.
        let e = read_capped("/dev/zero", 1 << 16).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 65536, .. }), "{e}");
    }
}
