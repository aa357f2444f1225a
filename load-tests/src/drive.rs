//! When requests are sent. Closed loop: each caller sends its next request as soon as the previous one is answered.
//! Open loop: requests are due at a fixed arrival rate (constant or ramping linearly), spread over the callers
//! round-robin; a request's latency runs from the moment it was due, not from when a free caller got to send it,
//! so a stalled server cannot hide its queueing by slowing the generator down (coordinated omission).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::caller::{Caller, Outcome};

/// Latencies are recorded from 1 µs to 10 minutes with three significant digits.
const HIGHEST_US: u64 = 600_000_000;

/// One stretch of load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub seconds: f64,
    /// Open loop at this many requests per second, ramping linearly to `rate_end`; closed loop when `None`.
    pub rate: Option<(f64, f64)>,
}

/// What a stretch of load produced.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of answered requests, µs.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub shed: u64,
    pub failed: BTreeMap<String, u64>,
    /// Answers per traffic variant, when the server names it.
    pub variants: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl Tally {
    pub fn new(seconds: f64) -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
            ok: 0,
            shed: 0,
            failed: BTreeMap::new(),
            variants: BTreeMap::new(),
            seconds,
        }
    }

    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok { variant } => {
                self.ok += 1;
                self.latency.saturating_record((latency.as_micros() as u64).clamp(1, HIGHEST_US));
                if let Some(variant) = variant {
                    *self.variants.entry(variant).or_default() += 1;
                }
            }
            Outcome::Shed => self.shed += 1,
            Outcome::Failed(kind) => *self.failed.entry(kind).or_default() += 1,
        }
    }

    /// Adds another tally of the same stretch (another caller's).
    pub fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.shed += other.shed;
        for (kind, n) in &other.failed {
            *self.failed.entry(kind.clone()).or_default() += n;
        }
        for (variant, n) in &other.variants {
            *self.variants.entry(variant.clone()).or_default() += n;
        }
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.shed + self.failed.values().sum::<u64>()
    }
}

/// Seconds after the start at which request `index` is due, for a rate ramping linearly from `start` to `end`
/// over `seconds`: the time at which the arrivals so far, `start·t + (end−start)·t²/(2·seconds)`, reach `index`.
pub fn due_at(index: u64, (start, end): (f64, f64), seconds: f64) -> f64 {
    let n = index as f64;
    let slope = (end - start) / seconds;
    if slope.abs() < 1e-9 {
        return n / start;
    }
    (-start + (start * start + 2.0 * slope * n).max(0.0).sqrt()) / slope
}

/// Runs `callers` through one stretch of load; gives them back (connections stay open) with the merged tally.
pub async fn run(callers: Vec<Caller>, load: Load) -> (Vec<Caller>, Tally) {
    let count = callers.len() as u64;
    let start = Instant::now();
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(index, caller)| {
            tokio::spawn(async move {
                match load.rate {
                    None => closed_loop(caller, start, load.seconds).await,
                    Some(rate) => open_loop(caller, start, load.seconds, rate, index as u64, count).await,
                }
            })
        })
        .collect();
    let mut callers = Vec::with_capacity(tasks.len());
    let mut total = Tally::new(load.seconds);
    for task in tasks {
        if let Ok((caller, tally)) = task.await {
            total.merge(&tally);
            callers.push(caller);
        }
    }
    (callers, total)
}

async fn closed_loop(mut caller: Caller, start: Instant, seconds: f64) -> (Caller, Tally) {
    let end = start + Duration::from_secs_f64(seconds);
    let mut tally = Tally::new(seconds);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let outcome = caller.call().await;
        tally.record(outcome, sent.elapsed());
    }
    (caller, tally)
}

async fn open_loop(
    mut caller: Caller,
    start: Instant,
    seconds: f64,
    rate: (f64, f64),
    first: u64,
    step: u64,
) -> (Caller, Tally) {
    let mut tally = Tally::new(seconds);
    if rate.0 <= 0.0 && rate.1 <= 0.0 {
        return (caller, tally);
    }
    // Requests still unsent this long after the stretch's end are counted as `backlog` failures, not sent.
    let give_up = start + Duration::from_secs_f64(seconds * 1.5 + 1.0);
    let mut index = first;
    loop {
        let at = due_at(index, rate, seconds);
        if !at.is_finite() || at >= seconds {
            break;
        }
        let due = start + Duration::from_secs_f64(at);
        if Instant::now() > give_up {
            tally.record(Outcome::Failed("backlog".to_owned()), Duration::ZERO);
            index += step;
            continue;
        }
        wait_until(due).await;
        let outcome = caller.call().await;
        tally.record(outcome, due.elapsed());
        index += step;
    }
    (caller, tally)
}

/// Sleeps until `due`: the timer (millisecond resolution) for most of the wait, then yields until the moment comes,
/// so requests leave on time at high rates.
async fn wait_until(due: Instant) {
    let now = Instant::now();
    if due <= now {
        return;
    }
    if due - now > Duration::from_micros(1500) {
        tokio::time::sleep_until((due - Duration::from_millis(1)).into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rates_space_requests_evenly() {
        assert!((due_at(100, (1000.0, 1000.0), 10.0) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn ramps_send_the_area_under_the_rate() {
        // From 0 to 200 req/s over 10 s: 1,000 requests in all, the first half of them in the last ~2.9 s.
        let (rate, seconds) = ((0.0, 200.0), 10.0);
        assert!((due_at(1000, rate, seconds) - 10.0).abs() < 1e-9);
        assert!((due_at(500, rate, seconds) - 50f64.sqrt()).abs() < 1e-9);
        // Falling ramps too.
        assert!((due_at(1000, (200.0, 0.0), seconds) - 10.0).abs() < 1e-6);
        assert!(due_at(10, (200.0, 0.0), seconds) < 0.06);
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::new(1.0);
        a.record(Outcome::Ok { variant: Some("a".to_owned()) }, Duration::from_micros(100));
        a.record(Outcome::Shed, Duration::ZERO);
        let mut b = Tally::new(1.0);
        b.record(Outcome::Failed("http 503".to_owned()), Duration::ZERO);
        b.record(Outcome::Ok { variant: Some("a".to_owned()) }, Duration::from_micros(300));
        a.merge(&b);
        assert_eq!((a.ok, a.shed, a.requests()), (2, 1, 4));
        assert_eq!(a.variants["a"], 2);
        assert_eq!(a.failed["http 503"], 1);
        assert_eq!(a.latency.max(), 300);
    }
}
