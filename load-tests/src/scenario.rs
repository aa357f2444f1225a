//! Scenario files: phases of load (closed loop, or open loop at a constant or ramping rate), requests sent to the
//! server at set moments during a phase (a model load, a traffic change), the server process sampled over time, and
//! expectations checked per phase and over the whole run. A scenario whose expectations fail makes `loadgen` exit
//! non-zero, so tests and CI can run them. See `load-tests/scenarios/` for examples.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::caller::{Caller, Requests, Target};
use crate::drive::{self, Load, Tally};
use crate::http1;
use crate::process::{self, Sample};
use crate::report::Summary;
use crate::workload::{Protocol, Workload};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The model to call; the command line's `--model` wins.
    pub model: Option<String>,
    /// The protocol; the command line's `--protocol` wins.
    pub protocol: Option<Protocol>,
    /// Callers (connections or streams): the most requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Rows per request.
    #[serde(default = "default_rows")]
    pub rows: usize,
    /// Requests cycle through this many routing keys (sticky traffic splits); 0 sends none.
    #[serde(default)]
    pub routing_keys: usize,
    /// A request unanswered after this long is a `timeout` error.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Read the server process's memory, threads and descriptors this often (needs `--server-pid`).
    pub sample_seconds: Option<f64>,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
    /// Checked over every recorded phase together, and on the process samples.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    /// Open loop at this arrival rate (req/s); closed loop when absent.
    pub rate: Option<f64>,
    /// Ramp the arrival rate linearly to this by the phase's end.
    pub rate_end: Option<f64>,
    /// A warm-up phase is run but left out of the figures and the overall expectations.
    #[serde(default = "yes")]
    pub record: bool,
    #[serde(rename = "action", default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub expect: Expect,
}

/// A request to the server's REST endpoint during a phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Seconds into the phase.
    pub at: f64,
    /// Repeat this often until the phase ends.
    pub every: Option<f64>,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// A JSON body.
    pub body: Option<String>,
    /// Send the admin token (`--admin-token`) as a bearer token.
    #[serde(default)]
    pub admin: bool,
    /// The status that counts as success; any 2xx when absent.
    pub status: Option<u16>,
}

/// Bounds on a phase's (or the run's) figures; each one absent is not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Failed (not shed) requests over all requests.
    pub max_error_rate: Option<f64>,
    pub max_shed_rate: Option<f64>,
    /// Past capacity the server must shed (429 / RESOURCE_EXHAUSTED) rather than queue without bound.
    pub min_shed_rate: Option<f64>,
    /// p99 of the answered requests.
    pub max_p99_ms: Option<f64>,
    pub min_requests_per_second: Option<f64>,
    /// Expected share of the answers per traffic variant, each within `variant_tolerance`.
    #[serde(default)]
    pub variants: BTreeMap<String, f64>,
    #[serde(default = "default_variant_tolerance")]
    pub variant_tolerance: f64,
    /// Resident memory growth from the first samples of the first recorded phase to the last samples.
    pub max_rss_growth_percent: Option<f64>,
    pub max_fd_growth: Option<u64>,
    pub max_thread_growth: Option<u64>,
}

fn default_concurrency() -> usize {
    8
}
fn default_rows() -> usize {
    1
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_method() -> String {
    "POST".to_owned()
}
fn default_variant_tolerance() -> f64 {
    0.05
}
fn yes() -> bool {
    true
}

impl Scenario {
    pub fn read(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        scenario.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("a scenario needs at least one [[phase]]".to_owned());
        }
        if self.concurrency == 0 || self.rows == 0 {
            return Err("concurrency and rows must be at least 1".to_owned());
        }
        for phase in &self.phases {
            if !(phase.seconds > 0.0 && phase.seconds.is_finite()) {
                return Err(format!("phase {:?}: seconds must be positive", phase.name));
            }
            if phase.rate_end.is_some() && phase.rate.is_none() {
                return Err(format!("phase {:?}: rate_end needs a rate to start from", phase.name));
            }
            if phase.rate.into_iter().chain(phase.rate_end).any(|r| !(r >= 0.0 && r.is_finite())) {
                return Err(format!("phase {:?}: rates must be finite and not negative", phase.name));
            }
            if phase.actions.iter().any(|a| a.every.is_some_and(|e| e < 0.01)) {
                return Err(format!("phase {:?}: an action repeats at most every 10 ms", phase.name));
            }
        }
        Ok(())
    }
}

/// What is needed besides the scenario to run it.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    /// The server process to sample.
    pub server_pid: Option<u32>,
    pub admin_token: Option<String>,
}

/// What happened to one action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub phase: String,
    /// Seconds into the phase.
    pub at: f64,
    pub request: String,
    pub status: Option<u16>,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One expectation, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub scope: String,
    pub what: String,
    pub limit: f64,
    pub value: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub phases: Vec<Summary>,
    /// Every recorded phase together.
    pub total: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionResult>,
    pub checks: Vec<Check>,
    pub passed: bool,
}

impl Report {
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {} is {:.4}, limit {:.4}", c.scope, c.what, c.value, c.limit))
            .collect();
        failures.extend(
            self.actions
                .iter()
                .filter(|a| !a.ok)
                .map(|a| format!("{}: {} at {:.1}s got {:?} {}", a.phase, a.request, a.at, a.status, a.message)),
        );
        failures
    }
}

/// Runs the scenario's phases in order with one set of callers (connections stay open across phases).
pub async fn run(scenario: &Scenario, workload: &Workload, options: &Options) -> Result<Report, String> {
    let target = Arc::new(options.target.clone());
    let requests = Requests::prepare(&target, workload)?;
    let mut callers = Vec::with_capacity(scenario.concurrency);
    for index in 0..scenario.concurrency {
        callers.push(Caller::new(Arc::clone(&target), &requests, index).await?);
    }
    let started = Instant::now();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = match (options.server_pid, scenario.sample_seconds) {
        (Some(pid), Some(every)) => {
            Some(tokio::spawn(sample_until_stopped(pid, every, started, Arc::clone(&sampling))))
        }
        _ => None,
    };

    let (protocol, model) = (target.protocol.name(), workload.model.as_str());
    let mut summaries = Vec::new();
    let mut actions = Vec::new();
    let mut checks = Vec::new();
    let mut total = Tally::new(0.0);
    // Growth is judged from the first recorded phase on: warm-up phases fill caches and pools.
    let mut recorded_from = None;
    for phase in &scenario.phases {
        if phase.record && recorded_from.is_none() {
            recorded_from = Some(started.elapsed().as_secs_f64());
        }
        let load = Load { seconds: phase.seconds, rate: phase.rate.map(|r| (r, phase.rate_end.unwrap_or(r))) };
        let action_tasks: Vec<_> = phase
            .actions
            .iter()
            .map(|action| {
                let (action, name, seconds, options) =
                    (action.clone(), phase.name.clone(), phase.seconds, options.clone());
                tokio::spawn(async move { run_action(&action, &name, seconds, &options).await })
            })
            .collect();
        let (back, tally) = drive::run(callers, load).await;
        callers = back;
        for task in action_tasks {
            actions.extend(task.await.unwrap_or_default());
        }
        let summary = Summary::new(&phase.name, model, protocol, scenario.concurrency, load.rate, &tally);
        eprintln!("{}", summary.line());
        checks.extend(check(&phase.name, &phase.expect, &summary, &[]));
        if phase.record {
            total.merge(&tally);
            total.seconds += tally.seconds;
        }
        summaries.push(summary);
    }
    sampling.store(false, Ordering::Relaxed);
    let samples = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let total = Summary::new("total", model, protocol, scenario.concurrency, None, &total);
    let after_warm_up: Vec<Sample> = samples.iter().filter(|s| s.at >= recorded_from.unwrap_or(0.0)).copied().collect();
    checks.extend(check("total", &scenario.expect, &total, &after_warm_up));
    let passed = checks.iter().all(|c| c.passed) && actions.iter().all(|a| a.ok);
    Ok(Report { scenario: scenario.name.clone(), phases: summaries, total, samples, actions, checks, passed })
}

async fn sample_until_stopped(pid: u32, every: f64, started: Instant, running: Arc<AtomicBool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(every.max(0.05)));
    while running.load(Ordering::Relaxed) {
        tick.tick().await;
        match process::sample(pid, started) {
            Some(sample) => samples.push(sample),
            None => break,
        }
    }
    samples
}

/// Sends the action's request at its moment (and again `every` seconds) until the phase, `seconds` long, ends.
async fn run_action(action: &Action, phase: &str, seconds: f64, options: &Options) -> Vec<ActionResult> {
    let start = Instant::now();
    let mut results = Vec::new();
    let mut at = action.at;
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if action.admin
        && let Some(token) = &options.admin_token
    {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let body = action.body.clone().unwrap_or_default();
    while at < seconds {
        tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
        let request = format!("{} {}", action.method, action.path);
        let answer = http1::once(&options.target.http, &action.method, &action.path, &headers, body.as_bytes()).await;
        results.push(match answer {
            Ok(answer) => {
                let ok = match action.status {
                    Some(status) => answer.status == status,
                    None => (200..300).contains(&answer.status),
                };
                let message = if ok { String::new() } else { String::from_utf8_lossy(&answer.body).into_owned() };
                ActionResult { phase: phase.to_owned(), at, request, status: Some(answer.status), ok, message }
            }
            Err(message) => ActionResult { phase: phase.to_owned(), at, request, status: None, ok: false, message },
        });
        match action.every {
            Some(every) => at += every,
            None => break,
        }
    }
    results
}

/// The expectations of one scope against its figures (and the process samples, for the run's scope).
fn check(scope: &str, expect: &Expect, summary: &Summary, samples: &[Sample]) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |what: String, limit: f64, value: f64, passed: bool| {
        checks.push(Check { scope: scope.to_owned(), what, limit, value, passed });
    };
    if let Some(limit) = expect.max_error_rate {
        let value = summary.error_rate();
        push("error rate".to_owned(), limit, value, value <= limit);
    }
    if let Some(limit) = expect.max_shed_rate {
        let value = summary.shed_rate();
        push("shed rate".to_owned(), limit, value, value <= limit);
    }
    if let Some(limit) = expect.min_shed_rate {
        let value = summary.shed_rate();
        push("shed rate (at least)".to_owned(), limit, value, value >= limit);
    }
    if let Some(limit) = expect.max_p99_ms {
        let value = summary.p99_us as f64 / 1000.0;
        push("p99 ms".to_owned(), limit, value, value <= limit && summary.ok > 0);
    }
    if let Some(limit) = expect.min_requests_per_second {
        let value = summary.requests_per_second;
        push("req/s (at least)".to_owned(), limit, value, value >= limit);
    }
    for (variant, &share) in &expect.variants {
        let value = summary.variants.get(variant).copied().unwrap_or(0.0);
        push(
            format!("share of variant {variant} (expected {share})"),
            expect.variant_tolerance,
            value,
            (value - share).abs() <= expect.variant_tolerance,
        );
    }
    type Growth = (&'static str, Option<f64>, fn(&Sample) -> u64, bool);
    let growths: [Growth; 3] = [
        ("rss growth %", expect.max_rss_growth_percent, |s| s.rss_bytes, true),
        ("open fd growth", expect.max_fd_growth.map(|g| g as f64), |s| s.open_fds, false),
        ("thread growth", expect.max_thread_growth.map(|g| g as f64), |s| s.threads, false),
    ];
    for (what, limit, value_of, percent) in growths {
        let Some(limit) = limit else { continue };
        match process::growth(samples, value_of) {
            Some((first, last)) => {
                let growth = last as f64 - first as f64;
                let value = if percent { 100.0 * growth / (first.max(1) as f64) } else { growth };
                push(what.to_owned(), limit, value, value <= limit);
            }
            None => push(format!("{what} (no process samples: pass --server-pid)"), limit, f64::NAN, false),
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::read(&path).unwrap();
                count += 1;
            }
        }
        assert!(count >= 6, "{count} scenarios");
    }

    #[test]
    fn bad_scenarios_are_refused() {
        let parse = |text: &str| toml::from_str::<Scenario>(text).map_err(|e| e.to_string()).and_then(|s| s.validate());
        assert!(parse("name = \"x\"\nphase = []").unwrap_err().contains("at least one"));
        let ramp_without_start = "name = \"x\"\n[[phase]]\nname = \"p\"\nseconds = 1\nrate_end = 5";
        assert!(parse(ramp_without_start).unwrap_err().contains("rate_end"));
        assert!(parse("name = \"x\"\nunknown = 1\n[[phase]]\nname = \"p\"\nseconds = 1").is_err());
    }

    #[test]
    fn expectations_pass_and_fail() {
        let mut tally = Tally::new(1.0);
        for _ in 0..90 {
            tally.record(crate::caller::Outcome::Ok { variant: Some("a".to_owned()) }, Duration::from_millis(2));
        }
        for _ in 0..10 {
            tally.record(crate::caller::Outcome::Shed, Duration::ZERO);
        }
        let summary = Summary::new("p", "m", "grpc", 1, None, &tally);
        let expect = Expect {
            max_error_rate: Some(0.0),
            min_shed_rate: Some(0.05),
            max_p99_ms: Some(1.0),
            variants: [("a".to_owned(), 1.0)].into(),
            variant_tolerance: 0.01,
            max_rss_growth_percent: Some(10.0),
            ..Expect::default()
        };
        let checks = check("p", &expect, &summary, &[]);
        let passed: Vec<bool> = checks.iter().map(|c| c.passed).collect();
        // p99 of 2 ms breaks the 1 ms bound; RSS growth has no samples to judge.
        assert_eq!(passed, vec![true, true, false, true, false]);
    }
}
