//! Starts a real infergate server in-process on 127.0.0.1, port 0, and talks to it over HTTP.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use infergate::{Config, Server};
use serde_json::Value;

pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest difference allowed between our floats and ONNX Runtime's.
pub const TOLERANCE: f64 = 1e-5;

pub fn bundled_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn config(repository: &Path) -> Config {
    Config {
        model_repository: repository.to_owned(),
        http_host: "127.0.0.1".parse().unwrap(),
        grpc_host: "127.0.0.1".parse().unwrap(),
        metrics_host: "127.0.0.1".parse().unwrap(),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        // The repository is watched only by the tests about watching it.
        model_control_mode: infergate::config::ModelControlMode::None,
        ..Config::default()
    }
}

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        config.validate().unwrap();
        let server = Server::start(config).await.unwrap();
        let base = format!("http://{}", server.http_addr().unwrap());
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let test = TestServer { server, base, client };
        test.wait_ready().await;
        test
    }

    pub async fn bundled() -> TestServer {
        TestServer::start(config(&bundled_models())).await
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(r) = self.client.get(self.url("/v2/health/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready within {READY_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        split(response).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self.client.post(self.url(path)).body(body).send().await.unwrap();
        split(response).await
    }
}

async fn split(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// A golden record made by tools/make_models.py with the Python onnxruntime.
pub struct Golden {
    pub model: String,
    pub version: String,
    pub request: Value,
    pub outputs: Value,
}

pub fn golden(file: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
    let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    Golden {
        model: record["model"].as_str().unwrap().to_owned(),
        version: record["version"].as_str().unwrap().to_owned(),
        request: record["request"].clone(),
        outputs: record["outputs"].clone(),
    }
}

/// Checks a response's outputs against the golden ones: same names, datatypes and shapes, integers equal,
/// floats within `tolerance`.
pub fn assert_outputs_match(response: &Value, golden: &Value, tolerance: f64) {
    let outputs = response["outputs"].as_array().unwrap();
    let expected = golden.as_object().unwrap();
    assert_eq!(outputs.len(), expected.len(), "{response}");
    for output in outputs {
        let name = output["name"].as_str().unwrap();
        let want = &expected[name];
        assert_eq!(output["datatype"], want["datatype"], "{name}");
        assert_eq!(output["shape"], want["shape"], "{name}");
        let got = output["data"].as_array().unwrap();
        let want = want["data"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if w.is_i64() || w.is_u64() || w.is_string() {
                assert_eq!(g, w, "{name}[{i}]");
            } else {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!((g - w).abs() <= tolerance, "{name}[{i}]: got {g}, ONNX Runtime gave {w}");
            }
        }
    }
}

/// A fresh, empty folder under the system temp dir, unique to this test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infergate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies a bundled model file (e.g. `mlp/1/model.onnx`) into `root` as `version` of `model`.
pub fn copy_model(root: &Path, model: &str, version: u64, source: &str) {
    let dir = root.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(bundled_models().join(source), dir.join("model.onnx")).unwrap();
}

/// Copies a test fixture (e.g. `slow/1/model.onnx`, under tests/fixtures) into `root` as `version` of `model`.
pub fn copy_fixture(root: &Path, model: &str, version: u64, source: &str) {
    let dir = root.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join(source), dir.join("model.onnx")).unwrap();
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The ONNX Runtime library the tests run against: `ORT_DYLIB_PATH` (set by scripts/test), else the one in the
/// project's virtual environment.
pub fn ort_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().into_iter().flatten().flatten().find_map(|python| {
        let capi = python.path().join("site-packages/onnxruntime/capi");
        std::fs::read_dir(capi)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.")))
    });
    found.unwrap_or_else(|| panic!("no ONNX Runtime library: run scripts/test, or set ORT_DYLIB_PATH"))
}

/// A server config whose ONNX Runtime library must load.
pub fn config_with_ort(repository: &Path) -> Config {
    Config { ort_library: Some(ort_library()), ..config(repository) }
}

/// Rows for the `slow` fixture (256 features): about a second per few hundred rows on one core.
pub fn slow_rows(rows: usize) -> Value {
    serde_json::json!({"inputs":[{"name":"x","shape":[rows,256],"datatype":"FP32","data":vec![0.5f32; rows * 256]}]})
}

/// Version 1 of `model`, copied from a bundled model file, with this `model.toml`.
pub fn repository_with(root: &Path, model: &str, source: &str, toml: &str) {
    copy_model(root, model, 1, source);
    std::fs::write(root.join(model).join("model.toml"), toml).unwrap();
}

/// An iris request of `rows` rows; a few hundred keep the embedded backend busy for a noticeable time.
pub fn iris_rows(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows).flat_map(|i| [5.0 + (i % 20) as f32 * 0.1, 3.0, 1.5, 0.2]).collect();
    serde_json::json!({"inputs":[{"name":"X","shape":[rows,4],"datatype":"FP32","data":data}]})
}

/// The value of the sample whose name and labels are exactly `series` (e.g. `name{a="b"}`, labels in name
/// order, as the text format lists them), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of the samples of `family` whose labels include every pair of `labels` (whatever their other labels),
/// or `None` when no sample matches: a family asserted on some of its labels only.
pub fn metric_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else { continue };
        let (series, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once("} ") {
                Some(split) => split,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        // Label values in this server's families never hold a quote, so `",` ends one.
        let pairs: Vec<(&str, &str)> = series
            .split("\",")
            .filter_map(|pair| pair.split_once("=\"").map(|(name, value)| (name, value.trim_end_matches('"'))))
            .collect();
        if labels.iter().all(|label| pairs.contains(label))
            && let Ok(value) = value.trim().parse::<f64>()
        {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// A config parsed from `infergate serve` flags as the binary parses them (flags not given take their defaults,
/// and INFERGATE_* variables of the environment apply), on `repository`, listening on 127.0.0.1 port 0 and
/// loading the models once: for settings a test names by their flag.
pub fn config_from_flags(repository: &Path, flags: &[&str]) -> Config {
    use clap::Parser;
    let mut args = Vec::from(
        ["infergate", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
            .map(String::from),
    );
    args.extend(["--model-control-mode", "none", "--model-repository"].map(String::from));
    args.push(repository.to_str().unwrap().to_owned());
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    let cli = infergate::config::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let infergate::config::Command::Serve(serve) = cli.into_command() else { panic!("{args:?} is not serve") };
    Config::resolve(serve).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The Prometheus exposition of a test server's metrics port.
pub async fn scrape(server: &TestServer) -> String {
    let url = format!("http://{}/metrics", server.server.metrics_addr());
    let response = server.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    response.text().await.unwrap()
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all signed by the CA.
pub fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca"]
            .iter()
            .chain(&["-keyout", "ca.key", "-out", "ca.pem"])
            .copied()
            .collect::<Vec<_>>(),
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        let (key, csr, pem, subject) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("/CN={name}"));
        openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr]);
        openssl(
            dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
                .iter()
                .chain(&["-extfile", ext, "-out", &pem])
                .copied()
                .collect::<Vec<_>>(),
        );
    }
}

/// Runs `tests/interop/<script>` with the test environment's Python against the infergate binary `infergate` and
/// the bundled models, in the fresh folder `work` (`--infergate`, `--models`, `--work`, then `args`); it must exit
/// 0 within `limit` and print `passed` (its closing line). Prints the script's output; removes `work` on success.
pub async fn run_interop_script(
    script: &str,
    args: &[&str],
    infergate: &str,
    work: &Path,
    limit: Duration,
    passed: &str,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop").join(script))
        .args(["--infergate", infergate])
        .arg("--models")
        .arg(bundled_models())
        .arg("--work")
        .arg(work)
        .args(args)
        .kill_on_drop(true)
        .output();
    // The script stops every server it starts; a hang is a failure, not a stuck suite.
    let output = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} {args:?} did not finish within {limit:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{script} {args:?} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(passed), "{stdout}");
    std::fs::remove_dir_all(work).unwrap();
}
