//! The MLflow Model Registry as a model source.
//!
//! A served model follows aliases of one registered model (`champion`, `challenger`, or `latest`: the highest
//! ready version). [`MlflowClient`] resolves the aliases through MLflow's REST API and fetches a version's `MLmodel`
//! and ONNX file through the tracking server's artifact proxy into a local cache. Each version is written to a
//! temporary folder and renamed into place whole, so a half-downloaded file is never loaded; a cached version whose
//! file still has the recorded SHA-256 is reused without a download. Files are fsynced before the rename and the
//! folder after it, so a crash (even `kill -9` or a power cut) leaves either no version or a whole one; the
//! unfinished folders it leaves are removed at the next start.
//!
//! The aliases last served are kept beside the versions (`aliases.json`), so a server restarted while MLflow is
//! unreachable serves those versions from the cache, after checking their files against the recorded SHA-256.
//!
//! MLflow webhooks ([`verify_webhook`]) only say "look now": what is served always comes from the REST API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use super::{DeclaredSignature, DeclaredTensor, ModelConfig, is_valid_model_name};
use crate::durable::{sync_folder, write_atomically};
use crate::tensor::DataType;

/// The pseudo-alias for the highest version number whose registration is complete.
pub const LATEST: &str = "latest";
/// The cached model file of a version, whatever its name in MLflow.
pub const CACHED_MODEL_FILE: &str = "model.onnx";
/// Largest model file fetched: ONNX files are protobuf messages, which cannot exceed 2 GiB.
const MAX_MODEL_BYTES: u64 = 2 << 30;
/// Largest `MLmodel` accepted.
const MAX_MLMODEL_BYTES: usize = 1 << 20;
/// How far a webhook's timestamp may be from our clock (replayed deliveries are older).
pub const WEBHOOK_MAX_SKEW: Duration = Duration::from_secs(300);

/// One served model that follows the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowModel {
    /// The registered model's name in MLflow.
    pub registered: String,
    /// The name it is served under (the registered name unless configured otherwise).
    pub serve_as: String,
    /// The aliases to serve, in order: the first one answers requests that name no version.
    pub aliases: Vec<String>,
    /// Its `model.toml` settings (batching, backend, warm-up, ...); the versions served are the aliases'.
    pub config: Arc<ModelConfig>,
}

/// Credentials for MLflow, from MLflow's own environment variables (`MLFLOW_TRACKING_TOKEN`, or
/// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MlflowAuth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for MlflowAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MlflowAuth::None => "None",
            MlflowAuth::Bearer(_) => "Bearer(..)",
            MlflowAuth::Basic { .. } => "Basic(..)",
        })
    }
}

impl MlflowAuth {
    /// From MLflow's environment variables; a token wins over a user name and password.
    pub fn from_env() -> MlflowAuth {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("MLFLOW_TRACKING_TOKEN"), var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_PASSWORD")) {
            (Some(token), _, _) => MlflowAuth::Bearer(token),
            (None, Some(username), Some(password)) => MlflowAuth::Basic { username, password },
            _ => MlflowAuth::None,
        }
    }
}

#[derive(Debug, Error)]
pub enum MlflowError {
    /// MLflow did not answer (connection refused, timeout, 5xx): nothing it said can be trusted, so nothing
    /// served changes.
    #[error("MLflow at {uri} is unreachable: {reason}")]
    Unreachable { uri: String, reason: String },
    #[error("MLflow refused {what}: {status} {message}")]
    Refused { what: String, status: u16, message: String },
    #[error("registered model '{0}' does not exist in MLflow")]
    NoSuchModel(String),
    #[error("version {version} of '{model}': {reason}")]
    Artifact { model: String, version: u64, reason: String },
    #[error("cannot write the model cache at {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

impl MlflowError {
    /// Whether MLflow itself failed (as opposed to answering something about this model).
    pub fn is_outage(&self) -> bool {
        matches!(self, MlflowError::Unreachable { .. })
    }
}

/// A version fetched into the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub model_path: PathBuf,
    /// The `MLmodel` signature, when it is tensor-based.
    pub declared: Option<DeclaredSignature>,
    /// Whether the file came from the cache rather than a download.
    pub cached: bool,
}

/// Talks to one MLflow tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    base: reqwest::Url,
    auth: MlflowAuth,
}

impl MlflowClient {
    pub fn new(uri: &str, auth: MlflowAuth) -> Result<MlflowClient, String> {
        let base = check_uri(uri)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .user_agent(concat!("infergate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the MLflow client: {e}"))?;
        Ok(MlflowClient { http, base, auth })
    }

    pub fn uri(&self) -> &str {
        self.base.as_str()
    }

    /// alias → version for the aliases `model` serves that are set now (`latest` included); unset aliases are
    /// left out.
    pub async fn resolve(&self, model: &MlflowModel) -> Result<BTreeMap<String, u64>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            registered_model: Registered,
        }
        #[derive(Deserialize)]
        struct Registered {
            #[serde(default)]
            aliases: Vec<Alias>,
            #[serde(default)]
            latest_versions: Vec<Version>,
        }
        #[derive(Deserialize)]
        struct Alias {
            alias: String,
            version: String,
        }
        #[derive(Deserialize)]
        struct Version {
            version: String,
            #[serde(default)]
            status: String,
        }
        let answer: Answer =
            self.get_json("registered-models/get", &[("name", model.registered.as_str())], &model.registered).await?;
        let number = |text: &str| text.parse::<u64>().ok();
        let set: BTreeMap<&str, u64> = answer
            .registered_model
            .aliases
            .iter()
            .filter_map(|a| Some((a.alias.as_str(), number(&a.version)?)))
            .collect();
        // The newest version of each stage; the newest of those is the newest of all.
        let latest = answer
            .registered_model
            .latest_versions
            .iter()
            .filter(|v| v.status.is_empty() || v.status == "READY")
            .filter_map(|v| number(&v.version))
            .max();
        Ok(model
            .aliases
            .iter()
            .filter_map(|alias| {
                let version = if alias == LATEST { latest } else { set.get(alias.as_str()).copied() };
                Some((alias.clone(), version?))
            })
            .collect())
    }

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

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
        model: &str,
    ) -> Result<T, MlflowError> {
        let mut url = self.base.clone();
        extend_path(&mut url, ["api", "2.0", "mlflow"].into_iter().chain(endpoint.split('/')));
        let response = self.send(self.http.get(url).query(query).timeout(Duration::from_secs(30))).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(MlflowError::NoSuchModel(model.to_owned()));
        }
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(refused(endpoint, status, &message));
        }
        response.json().await.map_err(|e| MlflowError::Refused {
            what: endpoint.to_owned(),
            status: status.as_u16(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `GET /api/2.0/mlflow-artifacts/artifacts/<path>/<file>`: a file through the artifact proxy.
    async fn artifact(&self, path: &[String], file: &str) -> Result<reqwest::Response, MlflowError> {
        let mut url = self.base.clone();
        let segments = ["api", "2.0", "mlflow-artifacts", "artifacts"].into_iter().map(str::to_owned);
        extend_path(&mut url, segments.chain(path.iter().cloned()).chain([file.to_owned()]));
        let response = self.send(self.http.get(url)).await?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(refused(&format!("artifact {}/{file}", path.join("/")), status, &message));
        }
        Ok(response)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, MlflowError> {
        let request = match &self.auth {
            MlflowAuth::None => request,
            MlflowAuth::Bearer(token) => request.bearer_auth(token),
            MlflowAuth::Basic { username, password } => request.basic_auth(username, Some(password)),
        };
        let unreachable = |reason: String| MlflowError::Unreachable { uri: self.base.to_string(), reason };
        let response = request.send().await.map_err(|e| unreachable(error_chain(&e)))?;
        if response.status().is_server_error() {
            return Err(unreachable(format!("it answered {}", response.status())));
        }
        Ok(response)
    }
}

/// The tracking server's URL, if this build can reach it: http://, or https:// with the `tls` feature.
pub fn check_uri(uri: &str) -> Result<reqwest::Url, String> {
    let base = reqwest::Url::parse(uri).map_err(|e| format!("--mlflow-uri '{uri}' is not a URL: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(format!("--mlflow-uri '{uri}' must be an http:// or https:// URL"));
    }
    #[cfg(not(feature = "tls"))]
    if base.scheme() == "https" {
        return Err(format!("--mlflow-uri '{uri}' needs HTTPS, and this build has no TLS (cargo feature `tls`)"));
    }
    Ok(base)
}

fn refused(what: &str, status: reqwest::StatusCode, body: &str) -> MlflowError {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let message =
        serde_json::from_str::<ErrorBody>(body).map(|b| b.message).unwrap_or_else(|_| body.chars().take(200).collect());
    MlflowError::Refused { what: what.to_owned(), status: status.as_u16(), message }
}

/// reqwest's errors hide the cause (e.g. "connection refused") one level down.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn extend_path(url: &mut reqwest::Url, segments: impl IntoIterator<Item = impl AsRef<str>>) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

/// The path under the artifact proxy of an `mlflow-artifacts:` URI (`mlflow-artifacts:/0/models/m-1/artifacts`,
/// or with an authority, `mlflow-artifacts://host:5000/0/...`). Other stores are not reachable through the
/// tracking server.
fn proxied_path(artifact_uri: &str) -> Result<Vec<String>, String> {
    let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
        return Err(format!(
            "its artifacts are at '{artifact_uri}', which is not served through MLflow's artifact proxy (start the \
             tracking server with --artifacts-destination, or without --no-serve-artifacts)"
        ));
    };
    let path = match rest.strip_prefix("//") {
        Some(with_authority) => with_authority.split_once('/').map_or("", |(_, path)| path),
        None => rest,
    };
    let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if segments.is_empty() || segments.iter().any(|s| s == "." || s == "..") {
        return Err(format!("artifact URI '{artifact_uri}' has no usable path"));
    }
    Ok(segments)
}

/// What `MLmodel` says that matters here.
#[derive(Debug, Clone, PartialEq)]
pub struct MlModel {
    /// The ONNX flavor's file, relative to the model's artifacts.
    pub model_file: String,
    pub declared: Option<DeclaredSignature>,
}

/// Reads an `MLmodel` (YAML): it must have the `onnx` flavor; its tensor signature, when it has one, is returned to
/// be checked against the graph.
pub fn parse_mlmodel(text: &str) -> Result<MlModel, String> {
    #[derive(Deserialize)]
    struct Document {
        #[serde(default)]
        flavors: BTreeMap<String, serde_yaml_ng::Value>,
        signature: Option<SignatureText>,
    }
    #[derive(Deserialize)]
    struct SignatureText {
        inputs: Option<String>,
        outputs: Option<String>,
    }
    let document: Document = serde_yaml_ng::from_str(text).map_err(|e| format!("MLmodel is not valid: {e}"))?;
    let Some(onnx) = document.flavors.get("onnx") else {
        let flavors: Vec<&str> = document.flavors.keys().map(String::as_str).collect();
        return Err(format!(
            "it is not an ONNX model: its MLmodel has the flavors [{}], not 'onnx' (log it with mlflow.onnx.log_model)",
            flavors.join(", ")
        ));
    };
    let model_file =
        onnx.get("data").and_then(|v| v.as_str()).ok_or("the MLmodel's onnx flavor names no data file")?.to_owned();
    if model_file.is_empty() || model_file.contains(['/', '\\']) || model_file == "." || model_file == ".." {
        return Err(format!("the MLmodel's onnx flavor names '{model_file}', which is not a plain file name"));
    }
    let declared = match document.signature {
        None => None,
        Some(signature) => {
            let inputs = signature.inputs.as_deref().map(tensor_specs).transpose()?;
            let outputs = signature.outputs.as_deref().map(tensor_specs).transpose()?;
            match (inputs, outputs) {
                // Column-based signatures (tables) name no tensors to compare with the graph.
                (Some(None), _) | (_, Some(None)) => None,
                (inputs, outputs) => Some(DeclaredSignature {
                    inputs: inputs.flatten().unwrap_or_default(),
                    outputs: outputs.flatten().unwrap_or_default(),
                }),
            }
        }
    };
    Ok(MlModel { model_file, declared })
}

/// A signature's `inputs` or `outputs` (a JSON string): tensors, or `None` for a column-based one.
fn tensor_specs(json: &str) -> Result<Option<Vec<DeclaredTensor>>, String> {
    #[derive(Deserialize)]
    struct Spec {
        name: Option<String>,
        #[serde(rename = "type")]
        kind: String,
        #[serde(rename = "tensor-spec")]
        tensor: Option<TensorSpec>,
    }
    #[derive(Deserialize)]
    struct TensorSpec {
        dtype: String,
        shape: Vec<i64>,
    }
    let specs: Vec<Spec> =
        serde_json::from_str(json).map_err(|e| format!("the MLmodel signature is not valid: {e}"))?;
    if specs.iter().any(|s| s.kind != "tensor") {
        return Ok(None);
    }
    specs
        .into_iter()
        .map(|spec| {
            let tensor = spec.tensor.ok_or("a tensor in the MLmodel signature has no tensor-spec")?;
            let datatype = numpy_datatype(&tensor.dtype).ok_or_else(|| {
                format!("the MLmodel signature has dtype '{}', which has no tensor type", tensor.dtype)
            })?;
            Ok(DeclaredTensor { name: spec.name, datatype, shape: tensor.shape })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// numpy's dtype names, as MLflow writes them.
fn numpy_datatype(dtype: &str) -> Option<DataType> {
    Some(match dtype {
        "bool" => DataType::Bool,
        "uint8" => DataType::Uint8,
        "uint16" => DataType::Uint16,
        "uint32" => DataType::Uint32,
        "uint64" => DataType::Uint64,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float32" => DataType::Fp32,
        "float64" => DataType::Fp64,
        "str" | "object" | "bytes" => DataType::Bytes,
        _ => return None,
    })
}

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

/// What a verified webhook delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// e.g. `model_version_alias`, `model_version`, `registered_model`.
    pub entity: String,
    pub action: String,
    /// The registered model it names, when it names one.
    pub model: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the delivery has no {0} header")]
    MissingHeader(&'static str),
    #[error("the delivery's signature does not match (MLflow signs with the webhook's secret)")]
    BadSignature,
    #[error("the delivery's timestamp is more than {} s away from now; replays are refused", WEBHOOK_MAX_SKEW.as_secs())]
    Stale,
    #[error("the delivery's body is not an MLflow webhook payload: {0}")]
    Payload(String),
}

/// The headers MLflow sends with each delivery.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "x-mlflow-signature";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "x-mlflow-timestamp";
pub const WEBHOOK_DELIVERY_HEADER: &str = "x-mlflow-delivery-id";

/// Checks a delivery: `signature` is `v1,<base64 HMAC-SHA256 of "<delivery id>.<timestamp>.<body>">` under the
/// webhook's secret, and the timestamp (Unix seconds) is within [`WEBHOOK_MAX_SKEW`] of `now`.
pub fn verify_webhook(
    secret: &[u8],
    delivery_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<WebhookEvent, WebhookError> {
    let delivery_id = delivery_id.ok_or(WebhookError::MissingHeader(WEBHOOK_DELIVERY_HEADER))?;
    let timestamp = timestamp.ok_or(WebhookError::MissingHeader(WEBHOOK_TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(WebhookError::MissingHeader(WEBHOOK_SIGNATURE_HEADER))?;
    let presented = signature
        .strip_prefix("v1,")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .ok_or(WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(delivery_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&presented).map_err(|_| WebhookError::BadSignature)?;
    let sent = timestamp.trim().parse::<u64>().map_err(|_| WebhookError::Stale)?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now.abs_diff(sent) > WEBHOOK_MAX_SKEW.as_secs() {
        return Err(WebhookError::Stale);
    }
    #[derive(Deserialize)]
    struct Payload {
        entity: String,
        action: String,
        #[serde(default)]
        data: serde_json::Value,
    }
    let payload: Payload = serde_json::from_slice(body).map_err(|e| WebhookError::Payload(e.to_string()))?;
    let model = payload.data.get("name").and_then(|n| n.as_str()).map(str::to_owned);
    Ok(WebhookEvent { entity: payload.entity, action: payload.action, model })
}

/// Checks one `--mlflow-model` entry's names.
pub fn check_model(model: &MlflowModel) -> Result<(), String> {
    if model.registered.is_empty() {
        return Err("an MLflow model needs its registered name".to_owned());
    }
    if !is_valid_model_name(&model.serve_as) {
        return Err(format!(
            "MLflow model '{}' would be served as '{}', which is not a model name (letters, digits, '_', '-', '.'); \
             set serve_as",
            model.registered, model.serve_as
        ));
    }
    if model.aliases.is_empty() {
        return Err(format!("MLflow model '{}' names no alias to serve", model.registered));
    }
    let valid_alias =
        |a: &str| !a.is_empty() && a.len() <= 255 && a.chars().all(|c| c.is_alphanumeric() || "_-".contains(c));
    if let Some(bad) = model.aliases.iter().find(|a| !valid_alias(a)) {
        return Err(format!("MLflow model '{}': '{bad}' is not an alias", model.registered));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
