//! A real Prometheus scrapes a running infergate: the exposition passes `promtool check metrics`, the alert rules
//! pass `promtool check rules`, counters equal the requests sent, and PromQL's p99 agrees with the client's.
//!
//! Needs the `prometheus` and `promtool` binaries, which `scripts/test` installs (Debian's `prometheus` package);
//! ignored by a plain `cargo test`, run by `scripts/test`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, iris_rows, temp_dir};
use infergate::telemetry::DURATION_BUCKETS;
use serde_json::Value;

struct Prometheus {
    child: Child,
    base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_prometheus(target: std::net::SocketAddr, dir: &std::path::Path) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: infergate\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is not installed: scripts/test installs it");
    let prometheus = Prometheus { child, base: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{}/-/ready", prometheus.base)).send().await
            && r.status() == 200
        {
            return prometheus;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The single value of an instant PromQL query, if it has one.
async fn query(client: &reqwest::Client, prometheus: &Prometheus, promql: &str) -> Option<f64> {
    let response: Value = client
        .get(format!("{}/api/v1/query", prometheus.base))
        .query(&[("query", promql)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["status"], "success", "{promql}: {response}");
    let value = response["data"]["result"].get(0)?["value"][1].as_str()?.to_owned();
    value.parse().ok()
}

fn bucket_index(seconds: f64) -> usize {
    DURATION_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(DURATION_BUCKETS.len())
}

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: scripts/test installs it");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test]
#[ignore = "needs prometheus and promtool; scripts/test installs them and runs it"]
async fn a_real_prometheus_scrapes_infergate() {
    let server = TestServer::bundled().await;
    let dir = temp_dir("prometheus");
    let prometheus = start_prometheus(server.server.metrics_addr(), &dir).await;
    let client = reqwest::Client::new();

    // Known load: iris requests of 1000 rows, timed by the client; big enough that the server's work (decoding and
    // computing, a few milliseconds) outweighs the client's own, so both p99s land in neighbouring buckets.
    let sent = 150;
    let mut latencies = Vec::with_capacity(sent);
    for _ in 0..sent {
        let started = Instant::now();
        let (status, _) = server.post_json("/v2/models/iris/versions/1/infer", &iris_rows(1000)).await;
        latencies.push(started.elapsed().as_secs_f64());
        assert_eq!(status, 200);
    }
    latencies.sort_by(f64::total_cmp);
    let client_p99 = latencies[(latencies.len() as f64 * 0.99).ceil() as usize - 1];

    let counter = r#"sum(infergate_requests_total{model="iris",version="1",error_type="none"})"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&client, &prometheus, counter).await != Some(sent as f64) {
        assert!(Instant::now() < deadline, "prometheus never saw {sent} requests");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let inferences = query(&client, &prometheus, r#"sum(infergate_inferences_total{model="iris",version="1"})"#).await;
    assert_eq!(inferences, Some((sent * 1000) as f64), "one inference per row");
    let promql_p99 = query(
        &client,
        &prometheus,
        r#"histogram_quantile(0.99, sum by (le) (infergate_request_duration_seconds_bucket{model="iris",version="1"}))"#,
    )
    .await
    .unwrap();
    let (server_bucket, client_bucket) = (bucket_index(promql_p99), bucket_index(client_p99));
    assert!(
        server_bucket.abs_diff(client_bucket) <= 1,
        "PromQL p99 {promql_p99}s (bucket {server_bucket}) vs client p99 {client_p99}s (bucket {client_bucket})"
    );
    println!("p99: PromQL {:.3} ms, client {:.3} ms", promql_p99 * 1e3, client_p99 * 1e3);

    // Every query of the Grafana dashboard parses and runs in this Prometheus.
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/infergate.json")).unwrap(),
    )
    .unwrap();
    // The panels whose series this server has (requests by protocol, process metrics of infergate's own job)
    // show data, not only parse.
    let with_data = ["Requests per second by protocol", "Process resident memory", "Open file descriptors"];
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$model", ".*")
                .replace("$job", ".*");
            let mut value = query(&client, &prometheus, &expr).await;
            if with_data.iter().any(|prefix| title.starts_with(prefix)) {
                // A rate needs two scrapes of the series; Prometheus scrapes every second.
                let deadline = Instant::now() + Duration::from_secs(30);
                while value.is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    value = query(&client, &prometheus, &expr).await;
                }
                assert!(value.is_some(), "panel '{title}' shows nothing: {expr}");
            }
        }
    }

    // The exposition format and the alert rules pass Prometheus' own checks.
    let scrape = client.get(format!("http://{}/metrics", server.server.metrics_addr())).send().await.unwrap();
    let (ok, report) = promtool(&["check", "metrics"], Some(&scrape.bytes().await.unwrap()));
    assert!(ok, "promtool check metrics: {report}");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yaml");
    let (ok, report) = promtool(&["check", "rules", rules], None);
    assert!(ok, "promtool check rules: {report}");
    // And the checks do fail on broken input.
    let (ok, _) = promtool(&["check", "metrics"], Some(b"infergate_broken{model=\"x\" 1\n"));
    assert!(!ok, "promtool accepted a broken exposition");
    let broken_rules = dir.join("broken.yaml");
    std::fs::write(&broken_rules, "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(\n")
        .unwrap();
    let (ok, _) = promtool(&["check", "rules", broken_rules.to_str().unwrap()], None);
    assert!(!ok, "promtool accepted a broken rule");

    drop(prometheus);
    std::fs::remove_dir_all(&dir).unwrap();
}
