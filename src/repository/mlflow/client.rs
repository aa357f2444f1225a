//! The registry's REST API: resolving aliases and reaching artifacts through the tracking server's proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{LATEST, MlflowAuth, MlflowError, MlflowModel};

/// Talks to one MLflow tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    pub(super) base: reqwest::Url,
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

    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
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
    pub(super) async fn artifact(&self, path: &[String], file: &str) -> Result<reqwest::Response, MlflowError> {
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
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
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
pub(super) fn proxied_path(artifact_uri: &str) -> Result<Vec<String>, String> {
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
