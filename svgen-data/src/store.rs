//! Where a run's files live: a local (or shared POSIX) folder, or any object store through the
//! [`object_store`] crate (S3, Google Cloud Storage, Azure Blob Storage; in-memory for tests).
//!
//! Output locations are parsed by [`OutputLocation::parse`]: a plain path or a `file://` URL
//! is a local folder; `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
//! (also `abfs[s]://`, `https://<account>.blob.core.windows.net/...`) are object stores,
//! available when svgen-data is built with the `cloud` feature (credentials from the usual
//! environment variables: `AWS_*`, `GOOGLE_*`, `AZURE_*`, read by the stores' `from_env`
//! builders). The default build carries no HTTP client for them and says so by a typed
//! error ([`DataError::Store`]).
//!
//! # Atomic publication, per store
//!
//! Every file a run publishes (shards, log chunks, `run.json`, completion markers) is either
//! entirely there or absent, and shards and log chunks are *put-if-absent*, so two processes
//! with the same worker index cannot overwrite each other's output
//! ([`DataError::AlreadyPublished`]):
//!
//! | store | whole-object atomic | put-if-absent used |
//! |---|---|---|
//! | local folder ([`LocalDir`]) | write `.name.tmp-*`, `fsync`, then `link(2)` (fails if the name exists) or `rename(2)`, `fsync` of the folder | `link(2)`: atomic on POSIX file systems, NFSv3+ and Lustre |
//! | in-memory | yes | yes (lock) |
//! | S3 | a `PUT` / completed multipart upload is never seen half-written | `If-None-Match: *` on `PUT` (AWS S3 since 2024, MinIO, R2; object_store's default `ETagMatch` mode). A shard larger than [`ObjectOutput::single_put_max`] is uploaded in parts to a temporary name and renamed with copy-if-not-exists, which S3 only has when configured (`AWS_COPY_IF_NOT_EXISTS=multipart` on AWS, a header on R2); without it the rename checks for the name first and copies, leaving a window of one request between the check and the copy |
//! | GCS | yes | `ifGenerationMatch=0` on upload and copy |
//! | Azure | yes | `If-None-Match: *` on `Put Blob` and copy |
//!
//! Object stores have no append, so per-worker logs (`manifest-*.jsonl`, `failures-*.jsonl`)
//! are written as numbered immutable chunks (`manifest-00003-of-00016.000007.jsonl`), each put
//! if absent when a shard is published; concatenated in order they are the local files, and a
//! copy of the bucket (`aws s3 sync`) is a valid local run folder.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::DataError;
use crate::storage::sync_dir;

/// Largest state object read back whole (`run.json`, markers, log chunks).
pub const MAX_STATE_OBJECT_BYTES: u64 = 256 << 20;

/// How [`RunStore::put`] treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Only if no object of that name exists (put-if-absent).
    CreateNew,
    /// Replace any existing object, atomically.
    Overwrite,
}

/// A file obtained by [`RunStore::fetch`]: the original for a local folder, a downloaded copy
/// (removed on drop) for an object store.
#[derive(Debug)]
pub struct FetchedFile {
    path: PathBuf,
    temporary: bool,
}

impl FetchedFile {
    /// Where to read it.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FetchedFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The files of one run: its shards, logs, `run.json` and completion markers, in a flat
/// namespace (no sub-folders).
pub trait RunStore: Send + Sync + std::fmt::Debug {
    /// The location, for messages (a path or a URL).
    fn location(&self) -> String;
    /// Names of the objects directly in the run's folder, sorted.
    fn list(&self) -> Result<Vec<String>, DataError>;
    /// The bytes of `name` (at most [`MAX_STATE_OBJECT_BYTES`]), `None` when absent.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, DataError>;
    /// Writes `name` atomically; with [`WriteMode::CreateNew`] returns `false` (and writes
    /// nothing) when it already exists.
    fn put(&self, name: &str, bytes: &[u8], mode: WriteMode) -> Result<bool, DataError>;
    /// Publishes the local file `local` as `name`, atomically and only if absent
    /// ([`DataError::AlreadyPublished`] otherwise).
    fn publish_file(&self, local: &Path, name: &str) -> Result<(), DataError>;
    /// A readable local file with the content of `name` (downloaded into `scratch` if needed).
    fn fetch(&self, name: &str, scratch: &Path) -> Result<FetchedFile, DataError>;
    /// Removes `name` (absent is fine).
    fn delete(&self, name: &str) -> Result<(), DataError>;
}

fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}

fn check_name(name: &str) -> Result<(), DataError> {
    if name.is_empty() || name.contains('/') || name.contains('\\') || name == "." || name == ".." {
        return Err(DataError::Config(format!(
            "{name:?} is not a plain file name"
        )));
    }
    Ok(())
}

/// A run in a local (or shared, POSIX) folder.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// The run folder `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalDir { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn create_dir(&self) -> Result<(), DataError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| DataError::io(&self.dir, e))
    }

    /// Writes `bytes` to a fresh temporary file beside `name` and syncs it.
    fn write_tmp(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, DataError> {
        self.create_dir()?;
        let tmp = self.dir.join(format!(".{name}.tmp-{}", unique_suffix()));
        let res = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            });
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(DataError::io(&tmp, e));
        }
        Ok(tmp)
    }

    /// Links `tmp` to `name` if absent (then removes `tmp` either way).
    fn link_if_absent(&self, tmp: &Path, name: &str) -> Result<bool, DataError> {
        let dest = self.dir.join(name);
        let res = std::fs::hard_link(tmp, &dest);
        let _ = std::fs::remove_file(tmp);
        match res {
            Ok(()) => {
                sync_dir(&dest)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(DataError::io(&dest, e)),
        }
    }
}

impl RunStore for LocalDir {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn list(&self) -> Result<Vec<String>, DataError> {
        let mut out = Vec::new();
        if !self.dir.exists() {
            return Ok(out);
        }
        for e in std::fs::read_dir(&self.dir).map_err(|e| DataError::io(&self.dir, e))? {
            let e = e.map_err(|e| DataError::io(&self.dir, e))?;
            if e.path().is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, DataError> {
        check_name(name)?;
        let path = self.dir.join(name);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::io(&path, e)),
        };
        let too_large = |path: PathBuf| DataError::Parse {
            path,
            message: format!("larger than {MAX_STATE_OBJECT_BYTES} bytes"),
        };
        // Refused from its size before anything is read; the bounded read covers a growing file.
        if f.metadata().is_ok_and(|m| m.len() > MAX_STATE_OBJECT_BYTES) {
            return Err(too_large(path));
        }
        let mut bytes = Vec::new();
        f.take(MAX_STATE_OBJECT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(&path, e))?;
        if bytes.len() as u64 > MAX_STATE_OBJECT_BYTES {
            return Err(too_large(path));
        }
        Ok(Some(bytes))
    }

    fn put(&self, name: &str, bytes: &[u8], mode: WriteMode) -> Result<bool, DataError> {
        check_name(name)?;
        let tmp = self.write_tmp(name, bytes)?;
        match mode {
            WriteMode::CreateNew => self.link_if_absent(&tmp, name),
            WriteMode::Overwrite => {
                let dest = self.dir.join(name);
                if let Err(e) = std::fs::rename(&tmp, &dest) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(DataError::io(&dest, e));
                }
                sync_dir(&dest)?;
                Ok(true)
            }
        }
    }

    fn publish_file(&self, local: &Path, name: &str) -> Result<(), DataError> {
        check_name(name)?;
        self.create_dir()?;
        let tmp = self.dir.join(format!(".{name}.tmp-{}", unique_suffix()));
        let copied = std::fs::copy(local, &tmp)
            .and_then(|_| OpenOptions::new().write(true).open(&tmp))
            .and_then(|f| f.sync_all());
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(DataError::io(&tmp, e));
        }
        if self.link_if_absent(&tmp, name)? {
            Ok(())
        } else {
            Err(DataError::AlreadyPublished {
                location: self.location(),
                name: name.to_string(),
            })
        }
    }

    fn fetch(&self, name: &str, _scratch: &Path) -> Result<FetchedFile, DataError> {
        check_name(name)?;
        Ok(FetchedFile {
            path: self.dir.join(name),
            temporary: false,
        })
    }

    fn delete(&self, name: &str) -> Result<(), DataError> {
        check_name(name)?;
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DataError::io(&path, e)),
        }
    }
}

#[cfg_attr(feature = "cloud", allow(dead_code))]
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future to completion on this thread (enough for the in-memory store, whose
/// futures never wait on I/O; the `cloud` build uses a tokio runtime instead).
#[cfg_attr(feature = "cloud", allow(dead_code))]
fn park_block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A run under a prefix of an [`ObjectStore`], used through blocking calls.
pub struct ObjectOutput {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// Files up to this size are published with one conditional `PUT` (read into memory
    /// once); larger ones by a multipart upload to a temporary name and a rename. Default
    /// 256 MiB.
    pub single_put_max: u64,
    /// Part size of multipart uploads (S3 needs at least 5 MiB but for the last). Default 16 MiB.
    pub part_size: usize,
    #[cfg(feature = "cloud")]
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for ObjectOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectOutput")
            .field("url", &self.url)
            .field("single_put_max", &self.single_put_max)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl ObjectOutput {
    /// A run under `prefix` of `store`; `url` names it in messages.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        url: impl Into<String>,
    ) -> Result<Self, DataError> {
        let url = url.into();
        let prefix = ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| DataError::Store {
            location: url.clone(),
            message: e.to_string(),
        })?;
        Ok(ObjectOutput {
            store,
            prefix,
            url,
            single_put_max: 256 << 20,
            part_size: 16 << 20,
            #[cfg(feature = "cloud")]
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DataError::io("tokio runtime", e))?,
        })
    }

    /// A fresh in-memory store (tests, examples); clone the `Arc` to share it.
    pub fn in_memory(name: &str) -> Result<Self, DataError> {
        ObjectOutput::new(
            Arc::new(object_store::memory::InMemory::new()),
            name,
            format!("memory:///{name}"),
        )
    }

    /// A store for an `s3://`, `gs://`, `az://`, `abfs[s]://` or Azure `https://` URL,
    /// configured from the environment. Needs the `cloud` feature.
    pub fn from_url(url: &str) -> Result<Self, DataError> {
        let store_err = |message: String| DataError::Store {
            location: url.to_string(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| store_err(e.to_string()))?;
        let (scheme, path) = object_store::ObjectStoreScheme::parse(&parsed)
            .map_err(|e| store_err(e.to_string()))?;
        let prefix = path.to_string();
        use object_store::ObjectStoreScheme as S;
        match scheme {
            S::Local => Err(store_err(
                "file:// URLs are local folders: use OutputLocation::parse".into(),
            )),
            S::Memory => Err(store_err(
                "memory:// lives inside one process; use ObjectOutput::in_memory".into(),
            )),
            other => {
                let store = cloud_store(other, &parsed).map_err(store_err)?;
                ObjectOutput::new(store, &prefix, url)
            }
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> Result<ObjectPath, DataError> {
        check_name(name)?;
        Ok(self.prefix.clone().join(name))
    }

    fn err(&self, e: object_store::Error) -> DataError {
        DataError::Store {
            location: self.url.clone(),
            message: e.to_string(),
        }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        #[cfg(feature = "cloud")]
        {
            self.runtime.block_on(future)
        }
        #[cfg(not(feature = "cloud"))]
        {
            park_block_on(future)
        }
    }

    fn multipart_publish(&self, local: &Path, name: &str) -> Result<(), DataError> {
        let dest = self.path(name)?;
        let tmp = self.path(&format!(".{name}.tmp-{}", unique_suffix()))?;
        let mut file = File::open(local).map_err(|e| DataError::io(local, e))?;
        let part_size = self.part_size.max(1);
        let uploaded: Result<(), DataError> = self.block_on(async {
            let mut upload = self
                .store
                .put_multipart(&tmp)
                .await
                .map_err(|e| self.err(e))?;
            let result: Result<(), DataError> = async {
                loop {
                    let mut chunk = Vec::with_capacity(part_size);
                    (&mut file)
                        .take(part_size as u64)
                        .read_to_end(&mut chunk)
                        .map_err(|e| DataError::io(local, e))?;
                    if chunk.is_empty() {
                        break;
                    }
                    upload
                        .put_part(PutPayload::from(chunk))
                        .await
                        .map_err(|e| self.err(e))?;
                }
                upload.complete().await.map_err(|e| self.err(e))?;
                Ok(())
            }
            .await;
            if result.is_err() {
                let _ = upload.abort().await;
            }
            result
        });
        uploaded?;
        let renamed = self.block_on(self.store.rename_if_not_exists(&tmp, &dest));
        let outcome = match renamed {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(DataError::AlreadyPublished {
                location: self.url.clone(),
                name: name.to_string(),
            }),
            Err(object_store::Error::NotSupported { .. })
            | Err(object_store::Error::NotImplemented { .. }) => {
                // S3 without copy-if-not-exists: check, then copy (see the module docs).
                match self.block_on(self.store.head(&dest)) {
                    Ok(_) => Err(DataError::AlreadyPublished {
                        location: self.url.clone(),
                        name: name.to_string(),
                    }),
                    Err(object_store::Error::NotFound { .. }) => self
                        .block_on(self.store.rename(&tmp, &dest))
                        .map_err(|e| self.err(e)),
                    Err(e) => Err(self.err(e)),
                }
            }
            Err(e) => Err(self.err(e)),
        };
        if outcome.is_err() {
            let _ = self.block_on(self.store.delete(&tmp));
        }
        outcome
    }
}

#[cfg(feature = "cloud")]
fn cloud_store(
    scheme: object_store::ObjectStoreScheme,
    url: &url::Url,
) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::ObjectStoreScheme as S;
    let store: Arc<dyn ObjectStore> = match scheme {
        S::AmazonS3 => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        S::GoogleCloudStorage => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        S::MicrosoftAzure => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| e.to_string())?,
        ),
        other => return Err(format!("unsupported store {other:?}")),
    };
    Ok(store)
}

#[cfg(not(feature = "cloud"))]
fn cloud_store(
    _scheme: object_store::ObjectStoreScheme,
    url: &url::Url,
) -> Result<Arc<dyn ObjectStore>, String> {
    Err(format!(
        "{}:// outputs need svgen-data built with the `cloud` feature \
         (cargo run --release --features cloud --example build_dataset ...)",
        url.scheme()
    ))
}

impl RunStore for ObjectOutput {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn list(&self) -> Result<Vec<String>, DataError> {
        let listing = self
            .block_on(self.store.list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| self.err(e))?;
        let mut out: Vec<String> = listing
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, DataError> {
        let path = self.path(name)?;
        self.block_on(async {
            let result = match self.store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err(e)),
            };
            if result.meta.size > MAX_STATE_OBJECT_BYTES {
                return Err(DataError::Store {
                    location: self.url.clone(),
                    message: format!("{name} is larger than {MAX_STATE_OBJECT_BYTES} bytes"),
                });
            }
            let bytes = result.bytes().await.map_err(|e| self.err(e))?;
            Ok(Some(bytes.to_vec()))
        })
    }

    fn put(&self, name: &str, bytes: &[u8], mode: WriteMode) -> Result<bool, DataError> {
        let path = self.path(name)?;
        let opts = PutOptions {
            mode: match mode {
                WriteMode::CreateNew => PutMode::Create,
                WriteMode::Overwrite => PutMode::Overwrite,
            },
            ..PutOptions::default()
        };
        match self.block_on(
            self.store
                .put_opts(&path, PutPayload::from(bytes.to_vec()), opts),
        ) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
                if mode == WriteMode::CreateNew =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn publish_file(&self, local: &Path, name: &str) -> Result<(), DataError> {
        let size = std::fs::metadata(local)
            .map_err(|e| DataError::io(local, e))?
            .len();
        if size > self.single_put_max {
            return self.multipart_publish(local, name);
        }
        let bytes = std::fs::read(local).map_err(|e| DataError::io(local, e))?;
        if self.put(name, &bytes, WriteMode::CreateNew)? {
            Ok(())
        } else {
            Err(DataError::AlreadyPublished {
                location: self.url.clone(),
                name: name.to_string(),
            })
        }
    }

    fn fetch(&self, name: &str, scratch: &Path) -> Result<FetchedFile, DataError> {
        let path = self.path(name)?;
        std::fs::create_dir_all(scratch).map_err(|e| DataError::io(scratch, e))?;
        let local = scratch.join(format!(".fetch-{}-{name}", unique_suffix()));
        let fetched = FetchedFile {
            path: local.clone(),
            temporary: true,
        };
        let mut out = File::create(&local).map_err(|e| DataError::io(&local, e))?;
        self.block_on(async {
            let result = self.store.get(&path).await.map_err(|e| self.err(e))?;
            let mut stream = result.into_stream();
            while let Some(chunk) =
                std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx))
                    .await
            {
                let chunk = chunk.map_err(|e| self.err(e))?;
                out.write_all(&chunk)
                    .map_err(|e| DataError::io(&local, e))?;
            }
            Ok::<(), DataError>(())
        })?;
        Ok(fetched)
    }

    fn delete(&self, name: &str) -> Result<(), DataError> {
        let path = self.path(name)?;
        match self.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// An output given on the command line: a local folder or an object store.
#[derive(Debug, Clone)]
pub enum OutputLocation {
    /// A plain path or `file://` URL.
    Local(PathBuf),
    /// An object-store URL.
    Store(Arc<ObjectOutput>),
}

impl OutputLocation {
    /// Parses a plain path, `file://`, `s3://`, `gs://`, `az://`, `abfs[s]://` or
    /// `https://<account>.blob.core.windows.net/` (see the module docs).
    ///
    /// ```
    /// use svgen_data::store::OutputLocation;
    /// assert!(matches!(OutputLocation::parse("out/run1").unwrap(), OutputLocation::Local(_)));
    /// assert!(matches!(
    ///     OutputLocation::parse("file:///data/run1").unwrap(),
    ///     OutputLocation::Local(p) if p == std::path::Path::new("/data/run1")
    /// ));
    /// ```
    pub fn parse(s: &str) -> Result<Self, DataError> {
        if !s.contains("://") {
            return Ok(OutputLocation::Local(PathBuf::from(s)));
        }
        let url = url::Url::parse(s).map_err(|e| DataError::Store {
            location: s.to_string(),
            message: e.to_string(),
        })?;
        if url.scheme() == "file" {
            return url
                .to_file_path()
                .map(OutputLocation::Local)
                .map_err(|_| DataError::Store {
                    location: s.to_string(),
                    message: "not a local file path".into(),
                });
        }
        Ok(OutputLocation::Store(Arc::new(ObjectOutput::from_url(s)?)))
    }

    /// A [`RunStore`] view of the location.
    pub fn run_store(&self) -> Arc<dyn RunStore> {
        match self {
            OutputLocation::Local(p) => Arc::new(LocalDir::new(p)),
            OutputLocation::Store(o) => o.clone(),
        }
    }

    /// The location, for messages.
    pub fn describe(&self) -> String {
        match self {
            OutputLocation::Local(p) => p.display().to_string(),
            OutputLocation::Store(o) => o.url().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn park_block_on_runs_ready_and_pending_futures() {
        assert_eq!(park_block_on(async { 41 + 1 }), 42);
        let mut polled = false;
        let v = park_block_on(std::future::poll_fn(|cx| {
            if polled {
                Poll::Ready(7)
            } else {
                polled = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }));
        assert_eq!(v, 7);
    }

    #[test]
    fn names_with_separators_are_refused() {
        for bad in ["", "a/b", "..", "c\\d"] {
            assert!(
                matches!(check_name(bad), Err(DataError::Config(_))),
                "{bad}"
            );
        }
    }
}
