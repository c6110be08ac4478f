//! The raw store: every response body, verbatim, as one write-once object.

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use url::Url;

use crate::Error;

/// Content-addressed, create-only object storage for raw pages, over any
/// `object_store` backend chosen by URL: `file:///var/lib/sync/raw` (the
/// default), `memory:///` (tests), `s3://bucket/prefix` (credentials and region
/// from the usual `AWS_*` environment variables or the `options` table).
#[derive(Clone, Debug)]
pub struct RawStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// The last put found its object already stored (a re-fetch of
    /// unchanged pages): the next put reads first instead of writing.
    found_stored: Arc<std::sync::atomic::AtomicBool>,
}

/// What is wrong with a stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectProblem {
    /// The object is gone.
    Missing,
    /// Its bytes no longer match the content hash in its key.
    Corrupt,
}

impl ObjectProblem {
    /// The ledger's name (`raw_page.object_state`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectProblem::Missing => "missing",
            ObjectProblem::Corrupt => "corrupt",
        }
    }
}

impl std::fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectProblem::Missing => "is missing",
            ObjectProblem::Corrupt => "does not match its content hash",
        })
    }
}

/// Where a body was stored and what it hashed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub sha256: String,
    pub bytes: usize,
}

impl RawStore {
    /// Opens the store at `url`. A `file://` directory is created if missing,
    /// and written with fsync: an object and its directory are on disk
    /// before `put` returns, so the ledger never points at a body a power
    /// loss took away.
    pub fn from_url(url: &Url, options: &[(String, String)]) -> Result<Self, Error> {
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| Error::Config(format!("raw_store.url {url} is not a local path")))?;
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Config(format!(
                    "raw_store.url {url}: cannot create {}: {e}",
                    dir.display()
                ))
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| Error::Config(format!("raw_store.url {url}: {e}")))?
                .with_fsync(true);
            return Ok(Self {
                store: Arc::new(store),
                prefix: Path::default(),
                url: url.to_string(),
                found_stored: Arc::default(),
            });
        }
        let merged = store_options(url, options, std::env::vars());
        let (store, prefix) =
            object_store::parse_url_opts(url, merged.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| Error::Config(format!("raw_store.url {url}: {e}")))?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
            url: url.to_string(),
            found_stored: Arc::default(),
        })
    }

    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::default(),
            url: "memory:///".into(),
            found_stored: Arc::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object key of a body:
    /// `{tenant}/{connection}/{stream}/{yyyy}/{mm}/{dd}/{sha256}.{ext}`, the
    /// extension following the body's content type ([`Self::extension`]).
    pub fn key_for(
        tenant: &str,
        connection: &str,
        stream: &str,
        fetched_at: DateTime<Utc>,
        sha256: &str,
        content_type: Option<&str>,
    ) -> String {
        format!(
            "{tenant}/{connection}/{stream}/{:04}/{:02}/{:02}/{sha256}.{}",
            fetched_at.year(),
            fetched_at.month(),
            fetched_at.day(),
            Self::extension(content_type)
        )
    }

    /// The object extension of a content type: `json` (also the default: a
    /// source that sends none is read as JSON), `xml`, `csv`, `txt`, else `bin`.
    pub fn extension(content_type: Option<&str>) -> &'static str {
        let Some(ct) = content_type else {
            return "json";
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" => "json",
            e if e == "application/json" || e.ends_with("+json") || e == "text/json" => "json",
            e if e.ends_with("/xml") || e.ends_with("+xml") => "xml",
            "text/csv" => "csv",
            "text/plain" => "txt",
            _ => "bin",
        }
    }

    pub fn sha256_hex(body: &[u8]) -> String {
        hex::encode(Sha256::digest(body))
    }

    fn path(&self, key: &str) -> Result<Path, Error> {
        let rel = Path::parse(key)
            .map_err(|e| Error::Storage(format!("invalid object key {key:?}: {e}")))?;
        Ok(self.prefix.parts().chain(rel.parts()).collect())
    }

    /// Stores `body` under its content key, create-only. An object that already
    /// exists under that key holds the same bytes (the key is their hash), so
    /// `AlreadyExists` is success: retries and re-fetches never duplicate.
    /// After a put that found its object stored, the next one reads its key
    /// first and writes nothing when an intact object is there (a re-sync of
    /// unchanged pages costs a read, not a write and an fsync).
    pub async fn put(
        &self,
        tenant: &str,
        connection: &str,
        stream: &str,
        fetched_at: DateTime<Utc>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<StoredObject, Error> {
        let sha256 = Self::sha256_hex(&body);
        let key = Self::key_for(
            tenant,
            connection,
            stream,
            fetched_at,
            &sha256,
            content_type,
        );
        let bytes = body.len();
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = self.path(&key)?;
        use std::sync::atomic::Ordering::Relaxed;
        if self.found_stored.load(Relaxed) {
            match self.get_verified(&key).await? {
                Ok(_) => return Ok(StoredObject { key, sha256, bytes }),
                Err(ObjectProblem::Missing) => self.found_stored.store(false, Relaxed),
                // Written over below (create-only finds it, then repairs it).
                Err(ObjectProblem::Corrupt) => {}
            }
        }
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(body.clone()), opts)
            .await
        {
            Ok(_) => Ok(StoredObject { key, sha256, bytes }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.found_stored.store(true, Relaxed);
                // The same bytes are there, unless the object was damaged
                // since: then this fetch repairs it.
                if self.get_verified(&key).await?.is_err() {
                    tracing::warn!(event = "raw_object_repaired", object = %key);
                    self.store
                        .put(&path, PutPayload::from_bytes(body))
                        .await
                        .map_err(|e| Error::Storage(format!("put {key}: {e}")))?;
                }
                Ok(StoredObject { key, sha256, bytes })
            }
            Err(e) => Err(Error::Storage(format!("put {key}: {e}{}", hint(&e)))),
        }
    }

    /// Reads an object back, verifying its hash against the key's.
    pub async fn get(&self, key: &str) -> Result<Bytes, Error> {
        match self.get_verified(key).await? {
            Ok(body) => Ok(body),
            Err(p) => Err(Error::Storage(format!("object {key} {p}"))),
        }
    }

    /// Reads an object back: the body, or what is wrong with the object
    /// itself (gone, or not matching its content hash). `Err` is a failure
    /// of the store (unreachable, denied), worth trying again.
    pub async fn get_verified(&self, key: &str) -> Result<Result<Bytes, ObjectProblem>, Error> {
        let got = match self.store.get(&self.path(key)?).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(Err(ObjectProblem::Missing)),
            Err(e) => return Err(Error::Storage(format!("get {key}: {e}"))),
        };
        let body = match got.bytes().await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(Err(ObjectProblem::Missing)),
            Err(e) => return Err(Error::Storage(format!("read {key}: {e}"))),
        };
        let expect = key
            .rsplit('/')
            .next()
            .and_then(|f| f.split_once('.'))
            .map_or("", |(hash, _)| hash);
        if !expect.is_empty() && Self::sha256_hex(&body) != expect {
            return Ok(Err(ObjectProblem::Corrupt));
        }
        Ok(Ok(body))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        match self.store.head(&self.path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::Storage(format!("head {key}: {e}"))),
        }
    }
}

/// The options an `s3://` store is built with: the standard `AWS_*`
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, …, as object_store's own `from_env` reads them), under
/// the config's `[raw_store.options]`, which win. Other stores get the
/// options alone.
pub fn store_options(
    url: &Url,
    options: &[(String, String)],
    env: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    if matches!(url.scheme(), "s3" | "s3a") {
        out.extend(
            env.filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        );
        // The region's other name, as the AWS tools read it.
        if !out.iter().any(|(k, _)| k == "aws_region")
            && let Some(v) = out
                .iter()
                .find(|(k, _)| k == "aws_default_region")
                .map(|(_, v)| v.clone())
        {
            out.push(("aws_region".into(), v));
        }
    }
    out.extend(options.iter().cloned());
    out
}

/// What to check when the store refuses a put: its credentials or its bucket.
fn hint(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            " (the raw store refused the credentials: check AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or aws_access_key_id and aws_secret_access_key in \
             [raw_store.options])"
        }
        // A put cannot miss its object: what is missing is the bucket.
        object_store::Error::NotFound { .. } => {
            " (the raw store answered \"not found\" to a put: does the bucket in [raw_store] url exist?)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `s3://` store reads the standard `AWS_*` variables, under the
    /// config's options; the keys are object_store's own.
    #[test]
    fn s3_stores_read_the_aws_environment_under_the_configs_options() {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let env = || {
            [
                ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
                ("AWS_DEFAULT_REGION", "eu-central-1"),
                ("AWS_ALLOW_HTTP", "true"),
                ("HOME", "/root"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        };
        let s3 = Url::parse("s3://raw-bucket/sync").unwrap();
        let opts = vec![("aws_access_key_id".to_owned(), "AKIACONFIG".to_owned())];
        let merged = store_options(&s3, &opts, env());
        assert!(
            merged.iter().all(|(k, _)| k.starts_with("aws_")),
            "{merged:?}"
        );
        let b = merged
            .iter()
            .fold(AmazonS3Builder::new().with_url(s3.as_str()), |b, (k, v)| {
                b.with_config(k.parse().unwrap(), v)
            });
        let get = |k| b.get_config_value(&k);
        assert_eq!(
            get(AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            get(AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some("AKIACONFIG"),
            "the config wins"
        );
        assert_eq!(
            get(AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some("env-secret")
        );
        assert_eq!(
            get(AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-central-1")
        );
        // Built without any call; other stores take the options alone.
        assert!(
            RawStore::from_url(&s3, &merged).is_ok(),
            "an s3 store builds from the merged options"
        );
        let file = Url::parse("file:///tmp/x").unwrap();
        assert!(store_options(&file, &[], env()).is_empty());
    }

    #[tokio::test]
    async fn puts_are_content_addressed_and_idempotent() {
        let s = RawStore::in_memory();
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = s
            .put("t", "c", "workers", at, None, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let b = s
            .put("t", "c", "workers", at, None, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert!(a.key.starts_with("t/c/workers/2026/11/23/"));
        assert_eq!(s.get(&a.key).await.unwrap().as_ref(), b"{}");
        assert!(!s.exists("t/c/workers/2026/11/23/00.json").await.unwrap());
    }

    #[tokio::test]
    async fn after_finding_an_object_stored_a_put_reads_first_and_still_writes_or_repairs() {
        let dir = std::env::temp_dir().join(format!("rawstore-read-first-{}", std::process::id()));
        let s = RawStore::from_url(&Url::from_directory_path(&dir).unwrap(), &[]).unwrap();
        let at = Utc::now();
        let put = |body: &'static [u8]| s.put("t", "c", "s", at, None, Bytes::from_static(body));
        let a = put(b"[1]").await.unwrap();
        put(b"[1]").await.unwrap();
        assert!(s.found_stored.load(std::sync::atomic::Ordering::Relaxed));
        // Reading first: a missing object is still written...
        let b = put(b"[2]").await.unwrap();
        assert_eq!(s.get(&b.key).await.unwrap().as_ref(), b"[2]");
        // ...and a damaged one repaired, whatever the last put found.
        put(b"[1]").await.unwrap();
        std::fs::write(dir.join(&a.key), b"[9]").unwrap();
        put(b"[1]").await.unwrap();
        assert_eq!(s.get(&a.key).await.unwrap().as_ref(), b"[1]");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn file_store_is_created_and_prefixed() {
        let dir = std::env::temp_dir().join(format!("rawstore-{}", std::process::id()));
        let url = Url::from_directory_path(dir.join("nested")).unwrap();
        let s = RawStore::from_url(&url, &[]).unwrap();
        let at = Utc::now();
        let o = s
            .put("t", "c", "s", at, None, Bytes::from_static(b"[1]"))
            .await
            .unwrap();
        assert!(dir.join("nested").join(&o.key).exists());
        assert_eq!(s.get(&o.key).await.unwrap().as_ref(), b"[1]");
        // A corrupted object and a deleted one are told apart from a store failure.
        std::fs::write(dir.join("nested").join(&o.key), b"[2]").unwrap();
        assert_eq!(
            s.get_verified(&o.key).await.unwrap(),
            Err(ObjectProblem::Corrupt)
        );
        // Storing the same body again repairs it.
        s.put("t", "c", "s", at, None, Bytes::from_static(b"[1]"))
            .await
            .unwrap();
        assert_eq!(s.get(&o.key).await.unwrap().as_ref(), b"[1]");
        std::fs::write(dir.join("nested").join(&o.key), b"[2]").unwrap();
        std::fs::remove_file(dir.join("nested").join(&o.key)).unwrap();
        assert_eq!(
            s.get_verified(&o.key).await.unwrap(),
            Err(ObjectProblem::Missing)
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
