//! Two servers measured side by side: each caller holds a connection to both and alternates between them, one
//! request at a time, in a closed loop. Every stall of the machine (another process, the hypervisor taking the
//! core) falls on both servers alike, so their latency quantiles can be compared at a precision that separate runs
//! minutes apart, on a shared machine, cannot give. The throughput is the same for both sides by construction
//! (each caller's rate is set by the two latencies together): compare latencies, not req/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::caller::{Caller, Requests, Target};
use crate::drive::Tally;
use crate::report::Summary;
use crate::workload::Workload;

/// One server of the pair.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: String,
    pub target: Target,
}

/// Alternates requests between the two sides with `concurrency` callers: `warmup` seconds unrecorded, then
/// `seconds` measured. Gives each side's figures, in the order of `sides`.
pub async fn compare(
    sides: [Side; 2],
    workload: &Workload,
    concurrency: usize,
    warmup: f64,
    seconds: f64,
) -> Result<[Summary; 2], String> {
    let mut pairs = Vec::with_capacity(concurrency);
    let [first, second] = &sides;
    let (first_target, second_target) = (Arc::new(first.target.clone()), Arc::new(second.target.clone()));
    let (first_requests, second_requests) =
        (Requests::prepare(&first_target, workload)?, Requests::prepare(&second_target, workload)?);
    for index in 0..concurrency {
        pairs.push([
            Caller::new(Arc::clone(&first_target), &first_requests, index).await?,
            Caller::new(Arc::clone(&second_target), &second_requests, index).await?,
        ]);
    }
    if warmup > 0.0 {
        pairs = alternate(pairs, warmup).await.0;
    }
    let (_, tallies) = alternate(pairs, seconds).await;
    let summary = |side: &Side, tally: &Tally| {
        Summary::new(&side.label, &workload.model, side.target.protocol.name(), concurrency, None, tally)
    };
    Ok([summary(first, &tallies[0]), summary(second, &tallies[1])])
}

/// Runs every pair of callers for `seconds`, each alternating between its two sides; merges the tallies per side.
async fn alternate(pairs: Vec<[Caller; 2]>, seconds: f64) -> (Vec<[Caller; 2]>, [Tally; 2]) {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(index, mut pair)| {
            tokio::spawn(async move {
                let mut tallies = [Tally::new(seconds), Tally::new(seconds)];
                // Callers start on alternate sides, so neither server gets every caller's first request at once.
                for side in (index % 2..).map(|n| n % 2) {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = pair[side].call().await;
                    tallies[side].record(outcome, sent.elapsed());
                }
                (pair, tallies)
            })
        })
        .collect();
    let mut pairs = Vec::with_capacity(tasks.len());
    let mut totals = [Tally::new(seconds), Tally::new(seconds)];
    for task in tasks {
        if let Ok((pair, tallies)) = task.await {
            for (total, tally) in totals.iter_mut().zip(&tallies) {
                total.merge(tally);
            }
            pairs.push(pair);
        }
    }
    (pairs, totals)
}
