//! The durable download cache: one folder per version, written whole or not at all, and the aliases last served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::client::{error_chain, proxied_path};
use super::{Fetched, MlflowClient, MlflowError, MlflowModel, parse_mlmodel};
use crate::durable::{sync_folder, write_atomically};

/// The cached model file of a version, whatever its name in MLflow.
pub const CACHED_MODEL_FILE: &str = "model.onnx";
/// Largest model file fetched: ONNX files are protobuf messages, which cannot exceed 2 GiB.
const MAX_MODEL_BYTES: u64 = 2 << 30;
/// Largest `MLmodel` accepted.
const MAX_MLMODEL_BYTES: usize = 1 << 20;

/// `source.json` in a cached version's folder: where it came from and the SHA-256 of its model file.
const CACHE_RECORD: &str = "source.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheRecord {
    tracking_uri: String,
    registered: String,
    version: u64,
    artifact_uri: String,
    sha256: String,
}

/// The aliases of a followed model last served, as kept in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AliasRecord {
    tracking_uri: String,
    registered: String,
    aliases: BTreeMap<String, u64>,
}

const ALIAS_RECORD: &str = "aliases.json";

impl MlflowClient {
    /// Fetches one version into `cache/<served name>/<version>/`, or reuses it from there.
    pub async fn fetch(&self, model: &MlflowModel, version: u64, cache: &Path) -> Result<Fetched, MlflowError> {
        #[derive(Deserialize)]
        struct DownloadUri {
            artifact_uri: String,
        }
        let artifact_error =
            |reason: String| MlflowError::Artifact { model: model.registered.clone(), version, reason };
        let version_text = version.to_string();
        let answer: DownloadUri = self
            .get_json(
                "model-versions/get-download-uri",
                &[("name", model.registered.as_str()), ("version", version_text.as_str())],
                &model.registered,
            )
            .await?;
        let artifact_path = proxied_path(&answer.artifact_uri).map_err(artifact_error)?;
        let source = CacheRecord {
            tracking_uri: self.base.to_string(),
            registered: model.registered.clone(),
            version,
            artifact_uri: answer.artifact_uri.clone(),
            sha256: String::new(),
        };
        let model_dir = cache.join(&model.serve_as);
        let dir = model_dir.join(&version_text);
        if let Some(fetched) = reuse_cached(&dir, &source).await {
            return Ok(fetched);
        }

        let mlmodel = self.artifact(&artifact_path, "MLmodel").await?;
        let mlmodel = read_limited(mlmodel, MAX_MLMODEL_BYTES as u64).await.map_err(&artifact_error)?;
        let text = String::from_utf8(mlmodel).map_err(|_| artifact_error("MLmodel is not UTF-8".to_owned()))?;
        let parsed = parse_mlmodel(&text).map_err(&artifact_error)?;

        let cache_error =
            |path: &Path, e: std::io::Error| MlflowError::Cache { path: path.to_owned(), reason: e.to_string() };
        tokio::fs::create_dir_all(&model_dir).await.map_err(|e| cache_error(&model_dir, e))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let staging = model_dir.join(format!("{STAGING_PREFIX}{version}-{}-{nanos}", std::process::id()));
        tokio::fs::create_dir_all(&staging).await.map_err(|e| cache_error(&staging, e))?;
        let result = async {
            write_synced(staging.join("MLmodel"), text.clone().into_bytes())
                .await
                .map_err(|e| cache_error(&staging, e))?;
            let response = self.artifact(&artifact_path, &parsed.model_file).await?;
            let sha256 = download(response, &staging.join(CACHED_MODEL_FILE)).await.map_err(artifact_error)?;
            let record = CacheRecord { sha256, ..source };
            let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
            write_synced(staging.join(CACHE_RECORD), json).await.map_err(|e| cache_error(&staging, e))?;
            replace_dir(&staging, &dir).await.map_err(|e| cache_error(&dir, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        result?;
        tracing::info!(model = %model.serve_as, version, path = %dir.display(), "fetched from MLflow");
        Ok(Fetched { model_path: dir.join(CACHED_MODEL_FILE), declared: parsed.declared, cached: false })
    }

    /// Keeps the aliases just served in `cache/<served name>/aliases.json` (see [`write_atomically`]).
    pub async fn remember_aliases(
        &self,
        model: &MlflowModel,
        aliases: &BTreeMap<String, u64>,
        cache: &Path,
    ) -> std::io::Result<()> {
        let record = AliasRecord {
            tracking_uri: self.base.to_string(),
            registered: model.registered.clone(),
            aliases: aliases.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        let path = cache.join(&model.serve_as).join(ALIAS_RECORD);
        tokio::task::spawn_blocking(move || write_atomically(&path, &json)).await.map_err(std::io::Error::other)?
    }

    /// The aliases last served and their versions from the cache, for a start while MLflow is unreachable. Only
    /// versions fetched from this tracking server and whose files still have their SHA-256 are returned.
    pub async fn cached(
        &self,
        model: &MlflowModel,
        cache: &Path,
    ) -> Option<(BTreeMap<String, u64>, Vec<(u64, Fetched)>)> {
        let model_dir = cache.join(&model.serve_as);
        let record: AliasRecord =
            serde_json::from_slice(&tokio::fs::read(model_dir.join(ALIAS_RECORD)).await.ok()?).ok()?;
        if record.tracking_uri != self.base.as_str() || record.registered != model.registered {
            return None;
        }
        let mut versions: Vec<u64> = record.aliases.values().copied().collect();
        versions.sort_unstable();
        versions.dedup();
        let mut fetched = Vec::new();
        for version in versions {
            let accept = |found: &CacheRecord| {
                found.tracking_uri == record.tracking_uri
                    && found.registered == record.registered
                    && found.version == version
            };
            if let Some(cached) = verified_cache(&model_dir.join(version.to_string()), accept).await {
                fetched.push((version, cached));
            }
        }
        Some((record.aliases, fetched))
    }
}

/// Removes the folders a download or replacement stopped midway left in `cache/<model>/` (the cache has one
/// server: nothing else is writing there).
pub async fn remove_unfinished(cache: &Path, model: &str) {
    let dir = cache.join(model);
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(STAGING_PREFIX) || name.ends_with(STALE_SUFFIX) {
            tracing::info!(path = %entry.path().display(), "removing an unfinished download");
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

/// Writes a file and fsyncs it.
async fn write_synced(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The cached copy of a version, if it came from the same place and its file is intact.
async fn reuse_cached(dir: &Path, expected: &CacheRecord) -> Option<Fetched> {
    verified_cache(dir, |record| CacheRecord { sha256: String::new(), ..record.clone() } == *expected).await
}

/// The cached version in `dir`, if `accept` takes its record and its file still has the recorded SHA-256.
async fn verified_cache(dir: &Path, accept: impl Fn(&CacheRecord) -> bool) -> Option<Fetched> {
    let record: CacheRecord = serde_json::from_slice(&tokio::fs::read(dir.join(CACHE_RECORD)).await.ok()?).ok()?;
    if !accept(&record) {
        return None;
    }
    let model_path = dir.join(CACHED_MODEL_FILE);
    let path = model_path.clone();
    let actual =
        tokio::task::spawn_blocking(move || std::fs::read(&path).ok().map(|bytes| hex(&Sha256::digest(&bytes))))
            .await
            .ok()
            .flatten()?;
    if actual != record.sha256 {
        tracing::warn!(path = %model_path.display(), "the cached model file changed; fetching it again");
        return None;
    }
    let text = tokio::fs::read_to_string(dir.join("MLmodel")).await.ok()?;
    let parsed = parse_mlmodel(&text).ok()?;
    Some(Fetched { model_path, declared: parsed.declared, cached: true })
}

/// Streams a response body to `path`, returning its SHA-256.
async fn download(mut response: reqwest::Response, path: &Path) -> Result<String, String> {
    // Read before the body: reqwest's length is what is left of it.
    let expected = response.content_length();
    if expected.is_some_and(|len| len > MAX_MODEL_BYTES) {
        return Err(format!("the model file is larger than {MAX_MODEL_BYTES} bytes"));
    }
    let mut file = tokio::fs::File::create(path).await.map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) =
        response.chunk().await.map_err(|e| format!("the download broke off: {}", error_chain(&e)))?
    {
        written += chunk.len() as u64;
        if written > MAX_MODEL_BYTES {
            return Err(format!("the model file is larger than {MAX_MODEL_BYTES} bytes"));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(expected) = expected
        && expected != written
    {
        return Err(format!("the download ended after {written} of {expected} bytes"));
    }
    file.sync_all().await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| format!("the download broke off: {}", error_chain(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(format!("the file is larger than {limit} bytes"));
        }
    }
    Ok(body)
}

/// Folders being downloaded into start with this; a crash may leave one, which the next start removes.
const STAGING_PREFIX: &str = ".download-";
/// A version folder being replaced is moved aside under its staging name with this suffix.
const STALE_SUFFIX: &str = ".stale";

/// Moves a complete `staging` folder to `dir` in one rename, first moving aside whatever `dir` held; the files
/// and the folders are fsynced, so the rename never lands before the data.
async fn replace_dir(staging: &Path, dir: &Path) -> std::io::Result<()> {
    let (staging_owned, parent) = (staging.to_owned(), dir.parent().unwrap_or(Path::new(".")).to_owned());
    tokio::task::spawn_blocking(move || sync_folder(&staging_owned)).await.map_err(std::io::Error::other)??;
    if tokio::fs::metadata(dir).await.is_ok() {
        let stale = PathBuf::from(format!("{}{STALE_SUFFIX}", staging.display()));
        tokio::fs::rename(dir, &stale).await?;
        tokio::fs::rename(staging, dir).await?;
        let _ = tokio::fs::remove_dir_all(&stale).await;
    } else {
        tokio::fs::rename(staging, dir).await?;
    }
    tokio::task::spawn_blocking(move || sync_folder(&parent)).await.map_err(std::io::Error::other)?
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
