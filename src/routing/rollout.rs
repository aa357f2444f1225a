//! Automatic rollout: the candidate's share rises step by step while it compares well with the baseline (error
//! rate, p99 latency, prediction distribution); a breach sets its share to 0 at once, passing the last step below
//! 100 promotes it. Every decision is logged, counted and kept for the rollout endpoint, and the state is written
//! to disk so a restart resumes where it was and never re-promotes a rolled-back candidate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::policy::Policy;
use super::state::TrafficState;
use super::window::WindowSummary;
use crate::durable::write_atomically;
use crate::repository::{RolloutConfig, TrafficConfig};
use crate::telemetry::{TrafficMetrics, psi_of_counts};

/// Decisions kept for the endpoint.
const KEPT_DECISIONS: usize = 100;

/// What the rollout endpoint shows.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    pub baseline: String,
    pub candidate: String,
    /// `running`, `rolled_back` or `promoted`.
    pub state: &'static str,
    pub step: usize,
    pub steps: Vec<u32>,
    pub candidate_percent: u32,
    pub decisions: Vec<Decision>,
}

/// One decision, with the numbers it was taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub at_unix: u64,
    /// `start`, `resume`, `advance`, `rollback` or `promote`.
    pub decision: &'static str,
    pub step: usize,
    pub candidate_percent: u32,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<WindowSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<WindowSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ratio: Option<f64>,
}

/// The state written to disk after every decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Saved {
    /// The rollout it belongs to: baseline and candidate with their targets, and the steps.
    identity: String,
    state: String,
    step: usize,
    reason: String,
}

/// Starts the rollout of `model`: resumes the saved state of the same rollout, or begins at its first step.
pub fn start(
    model: &str,
    traffic: Arc<TrafficState>,
    file: TrafficConfig,
    config: RolloutConfig,
    state_dir: Option<PathBuf>,
    metrics: TrafficMetrics,
) {
    let (generation_tx, generation_rx) = tokio::sync::oneshot::channel();
    let run = Rollout {
        model: model.to_owned(),
        identity: identity(&file, &config),
        traffic: Arc::clone(&traffic),
        file,
        config,
        path: state_dir.map(|dir| dir.join("rollout").join(format!("{model}.json"))),
        metrics,
        decisions: Vec::new(),
        generation: 0,
    };
    let task = tokio::spawn(async move {
        let mut run = run;
        // The generation is known once the task is registered; nothing changes before.
        let Ok(generation) = generation_rx.await else { return };
        run.generation = generation;
        run.run().await
    });
    let _ = generation_tx.send(traffic.set_task(task.abort_handle()));
}

/// What makes a rollout the same one after a restart: the whole `[rollout]` and both variants as configured
/// (targets and weights). Any change is a new rollout.
fn identity(file: &TrafficConfig, config: &RolloutConfig) -> String {
    let variants = [file.variant(&config.baseline), file.variant(&config.candidate)];
    serde_json::to_string(&(config, variants)).unwrap_or_default()
}

struct Rollout {
    model: String,
    identity: String,
    traffic: Arc<TrafficState>,
    file: TrafficConfig,
    config: RolloutConfig,
    path: Option<PathBuf>,
    metrics: TrafficMetrics,
    decisions: Vec<Decision>,
    generation: u64,
}

/// The numbers a decision is taken on: the baseline's and the candidate's windows, the PSI and the p99 ratio.
type Numbers = (WindowSummary, WindowSummary, f64, f64);

/// Where a step's comparison stands.
enum Verdict {
    Waiting,
    Pass,
    Breach(String),
}

impl Rollout {
    async fn run(mut self) {
        let saved = self.load();
        let mut step = match saved {
            Some(saved) if saved.state == "rolled_back" => {
                let reason = format!("resumed after a restart: {}", saved.reason);
                return self.finish("resume", "rolled_back", 0, reason, None);
            }
            Some(saved) if saved.state == "promoted" => {
                let last = self.config.steps.len() - 1;
                let reason = format!("resumed after a restart: {}", saved.reason);
                return self.finish("resume", "promoted", last, reason, None);
            }
            Some(saved) => {
                let step = saved.step.min(self.config.steps.len() - 1);
                self.decide("resume", step, "resumed after a restart at the step it had reached".to_owned(), None);
                step
            }
            None => {
                self.decide("start", 0, "rollout started".to_owned(), None);
                0
            }
        };
        loop {
            if self.config.steps[step] >= 100 {
                let reason = "the candidate passed every step".to_owned();
                return self.finish("promote", "promoted", step, reason, None);
            }
            self.apply(step, "running");
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs_f64(self.config.check_secs)).await;
                let Some(policy) = self.traffic.policy.load_full() else { return };
                let (baseline, candidate) = match (
                    policy.variant(&self.config.baseline).map(|v| v.window.summary()),
                    policy.variant(&self.config.candidate).map(|v| v.window.summary()),
                ) {
                    (Some(b), Some(c)) => (b, c),
                    _ => return,
                };
                let held = started.elapsed() >= Duration::from_secs_f64(self.config.step_secs);
                let (verdict, psi, ratio) = self.judge(&baseline, &candidate, held);
                let numbers = Some((baseline, candidate, psi, ratio));
                match verdict {
                    Verdict::Waiting => continue,
                    Verdict::Breach(reason) => return self.finish("rollback", "rolled_back", step, reason, numbers),
                    Verdict::Pass => {
                        let reason =
                            format!("step {}% held {:.1} s within bounds", self.percent(step), self.config.step_secs);
                        self.decide("advance", step + 1, reason, numbers);
                        step += 1;
                        break;
                    }
                }
            }
        }
    }

    /// Compares the two windows: a breach as soon as both have enough answers; a pass once the step was held.
    fn judge(&self, baseline: &WindowSummary, candidate: &WindowSummary, held: bool) -> (Verdict, f64, f64) {
        // NaN (no breach) until both sides have predictions enough to compare.
        let psi = psi_of_counts(&baseline.predictions, &candidate.predictions);
        let ratio = if baseline.p99_ms > 0.0 { candidate.p99_ms / baseline.p99_ms } else { 1.0 };
        let c = &self.config;
        if baseline.requests < c.min_requests || candidate.requests < c.min_requests {
            return (Verdict::Waiting, psi, ratio);
        }
        let verdict = if candidate.error_rate > baseline.error_rate + c.max_error_rate_increase {
            Verdict::Breach(format!(
                "error rate {:.4} against the baseline's {:.4} (allowed +{})",
                candidate.error_rate, baseline.error_rate, c.max_error_rate_increase
            ))
        } else if ratio > c.max_p99_ratio {
            Verdict::Breach(format!(
                "p99 {:.2} ms is {ratio:.2}x the baseline's {:.2} ms (allowed {}x)",
                candidate.p99_ms, baseline.p99_ms, c.max_p99_ratio
            ))
        } else if psi > c.max_psi {
            Verdict::Breach(format!("prediction PSI {psi:.3} against the baseline (allowed {})", c.max_psi))
        } else if let Some(breach) = self.accuracy_breach(baseline, candidate) {
            Verdict::Breach(breach)
        } else if held && self.labelled_enough(baseline, candidate) {
            Verdict::Pass
        } else {
            Verdict::Waiting
        };
        (verdict, psi, ratio)
    }

    /// Whether both variants have the labels a judgement of accuracy needs (always, when accuracy is not judged).
    fn labelled_enough(&self, baseline: &WindowSummary, candidate: &WindowSummary) -> bool {
        let needed = self.config.min_feedback;
        self.config.max_accuracy_drop.is_none() || (baseline.labels >= needed && candidate.labels >= needed)
    }

    /// The breach of a candidate less accurate than the baseline by more than allowed, once both have the labels.
    fn accuracy_breach(&self, baseline: &WindowSummary, candidate: &WindowSummary) -> Option<String> {
        let allowed = self.config.max_accuracy_drop?;
        if !self.labelled_enough(baseline, candidate) {
            return None;
        }
        let (b, c) = (baseline.accuracy?, candidate.accuracy?);
        (b - c > allowed).then(|| {
            format!(
                "accuracy {c:.4} on {} labels against the baseline's {b:.4} on {} (allowed drop {allowed})",
                candidate.labels, baseline.labels
            )
        })
    }

    fn percent(&self, step: usize) -> u32 {
        self.config.steps[step]
    }

    /// Sets the weights of `step` (the candidate's share of the two variants' weight) and saves the state.
    fn apply(&mut self, step: usize, state: &'static str) {
        let candidate_percent = if state == "rolled_back" { 0 } else { self.percent(step) };
        let mut config = self.file.clone();
        let pool: u32 = config
            .variants
            .iter()
            .filter(|v| v.name == self.config.baseline || v.name == self.config.candidate)
            .map(|v| v.weight)
            .sum();
        let candidate_weight = (pool * candidate_percent).div_ceil(100).min(pool);
        for v in &mut config.variants {
            if v.name == self.config.candidate {
                v.weight = candidate_weight;
            } else if v.name == self.config.baseline {
                v.weight = pool - candidate_weight;
            }
        }
        let status = self.status(step, state, candidate_percent);
        let current = self.traffic.if_current(self.generation, || {
            self.traffic.store(&self.model, Some(Policy::new(config)), &self.metrics);
            self.traffic.rollout.store(Some(Arc::new(status)));
        });
        if !current {
            return;
        }
        self.metrics.rollout_percent.with_label_values(&[&self.model]).set(i64::from(candidate_percent));
        let reason = self.decisions.last().map(|d| d.reason.clone()).unwrap_or_default();
        self.save(state, step, &reason);
    }

    /// Records the decision that ends the rollout (or resumes its end state) and applies that state.
    fn finish(
        &mut self,
        decision: &'static str,
        state: &'static str,
        step: usize,
        reason: String,
        numbers: Option<Numbers>,
    ) {
        self.decide(decision, step, reason, numbers);
        self.apply(step, state);
    }

    fn decide(&mut self, decision: &'static str, step: usize, reason: String, numbers: Option<Numbers>) {
        let step = step.min(self.config.steps.len() - 1);
        let candidate_percent = if decision == "rollback" { 0 } else { self.percent(step) };
        let (baseline, candidate, psi, ratio) = match numbers {
            // A PSI without predictions enough to compare (NaN) is shown as none.
            Some((b, c, psi, ratio)) => (Some(b), Some(c), Some(psi).filter(|p| p.is_finite()), Some(ratio)),
            None => (None, None, None, None),
        };
        tracing::info!(
            model = %self.model,
            candidate = %self.config.candidate,
            decision,
            step,
            candidate_percent,
            baseline_requests = baseline.as_ref().map(|b| b.requests),
            candidate_requests = candidate.as_ref().map(|c| c.requests),
            baseline_error_rate = baseline.as_ref().map(|b| b.error_rate),
            candidate_error_rate = candidate.as_ref().map(|c| c.error_rate),
            baseline_p99_ms = baseline.as_ref().map(|b| b.p99_ms),
            candidate_p99_ms = candidate.as_ref().map(|c| c.p99_ms),
            psi,
            p99_ratio = ratio,
            %reason,
            "rollout decision"
        );
        self.metrics.rollout_decisions.with_label_values(&[&self.model, &self.config.candidate, decision]).inc();
        let at_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.decisions.push(Decision {
            at_unix,
            decision,
            step,
            candidate_percent,
            reason,
            baseline,
            candidate,
            psi,
            p99_ratio: ratio,
        });
        if self.decisions.len() > KEPT_DECISIONS {
            self.decisions.remove(0);
        }
    }

    fn status(&self, step: usize, state: &'static str, candidate_percent: u32) -> RolloutStatus {
        RolloutStatus {
            baseline: self.config.baseline.clone(),
            candidate: self.config.candidate.clone(),
            state,
            step,
            steps: self.config.steps.clone(),
            candidate_percent,
            decisions: self.decisions.clone(),
        }
    }

    fn load(&self) -> Option<Saved> {
        let path = self.path.as_ref()?;
        let text = std::fs::read(path).ok()?;
        match serde_json::from_slice::<Saved>(&text) {
            Ok(saved) if saved.identity == self.identity => Some(saved),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(model = %self.model, path = %path.display(), error = %e, "rollout state unreadable; starting over");
                None
            }
        }
    }

    /// Writes the state by temp file, fsync and rename, so a crash leaves the old state or the new one.
    fn save(&self, state: &str, step: usize, reason: &str) {
        let Some(path) = &self.path else { return };
        let saved = Saved { identity: self.identity.clone(), state: state.to_owned(), step, reason: reason.to_owned() };
        if let Err(e) = write_atomically(path, &serde_json::to_vec_pretty(&saved).unwrap_or_default()) {
            tracing::error!(model = %self.model, path = %path.display(), error = %e, "cannot save the rollout state");
        }
    }
}
