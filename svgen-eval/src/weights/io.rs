//! Where tensor bytes come from: an open file read with positioned reads (so several threads can
//! read one shard at once, and only the tensor asked for is in memory), or bytes already in memory.

use std::fs::File;
use std::io;

use half::{bf16, f16};

use super::header::Dtype;
use super::host::HostData;

/// The bytes of one safetensors file.
#[derive(Debug)]
pub(crate) enum Source {
    /// An open file.
    File(PositionedFile),
    /// The whole file in memory.
    Memory(Vec<u8>),
}

impl Source {
    /// Total length in bytes.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Source::File(f) => f.len(),
            Source::Memory(b) => Ok(b.len() as u64),
        }
    }

    /// Fills `buf` from `offset`; an error if the source ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset),
            Source::Memory(b) => {
                let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end");
                let start = usize::try_from(offset).map_err(|_| eof())?;
                let end = start.checked_add(buf.len()).ok_or_else(eof)?;
                buf.copy_from_slice(b.get(start..end).ok_or_else(eof)?);
                Ok(())
            }
        }
    }

    /// Reads `numel` elements of `dtype` at `offset` straight into a vector of the element type
    /// (one allocation, no intermediate byte buffer), converting from little-endian.
    pub fn read_data(&self, dtype: Dtype, numel: usize, offset: u64) -> io::Result<HostData> {
        fn read<T: bytemuck::Pod + Default>(
            src: &Source,
            numel: usize,
            offset: u64,
            from_le: impl Fn(T) -> T,
        ) -> io::Result<Vec<T>> {
            let mut v = vec![T::default(); numel];
            src.read_exact_at(bytemuck::cast_slice_mut(&mut v), offset)?;
            if cfg!(target_endian = "big") {
                v.iter_mut().for_each(|x| *x = from_le(*x));
            }
            Ok(v)
        }
        let s = self;
        Ok(match dtype {
            Dtype::Bool => HostData::Bool(
                read::<u8>(s, numel, offset, |x| x)?
                    .into_iter()
                    .map(|b| b != 0)
                    .collect(),
            ),
            Dtype::U8 => HostData::U8(read(s, numel, offset, |x| x)?),
            Dtype::I8 => HostData::I8(read(s, numel, offset, |x| x)?),
            Dtype::F8E4M3 => HostData::F8E4M3(read(s, numel, offset, |x| x)?),
            Dtype::F8E5M2 => HostData::F8E5M2(read(s, numel, offset, |x| x)?),
            Dtype::I16 => HostData::I16(read(s, numel, offset, i16::from_le)?),
            Dtype::U16 => HostData::U16(read(s, numel, offset, u16::from_le)?),
            Dtype::F16 => HostData::F16(read(s, numel, offset, |x: f16| {
                f16::from_bits(u16::from_le(x.to_bits()))
            })?),
            Dtype::BF16 => HostData::BF16(read(s, numel, offset, |x: bf16| {
                bf16::from_bits(u16::from_le(x.to_bits()))
            })?),
            Dtype::I32 => HostData::I32(read(s, numel, offset, i32::from_le)?),
            Dtype::U32 => HostData::U32(read(s, numel, offset, u32::from_le)?),
            Dtype::F32 => HostData::F32(read(s, numel, offset, |x: f32| {
                f32::from_bits(u32::from_le(x.to_bits()))
            })?),
            Dtype::I64 => HostData::I64(read(s, numel, offset, i64::from_le)?),
            Dtype::U64 => HostData::U64(read(s, numel, offset, u64::from_le)?),
            Dtype::F64 => HostData::F64(read(s, numel, offset, |x: f64| {
                f64::from_bits(u64::from_le(x.to_bits()))
            })?),
        })
    }
}

/// A file read at explicit offsets, shareable between threads.
#[derive(Debug)]
pub(crate) struct PositionedFile {
    #[cfg(any(unix, windows))]
    file: File,
    #[cfg(not(any(unix, windows)))]
    file: std::sync::Mutex<File>,
}

impl PositionedFile {
    pub fn new(file: File) -> Self {
        #[cfg(not(any(unix, windows)))]
        let file = std::sync::Mutex::new(file);
        PositionedFile { file }
    }

    #[cfg(any(unix, windows))]
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    #[cfg(unix)]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.file.seek_read(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(not(any(unix, windows)))]
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, File>> {
        self.file
            .lock()
            .map_err(|_| io::Error::other("a reader panicked"))
    }

    #[cfg(not(any(unix, windows)))]
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock()?.metadata()?.len())
    }

    #[cfg(not(any(unix, windows)))]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = self.lock()?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}
