//! Ground truth for earlier predictions: `{ "id", "target" }` records, joined to what the model predicted for
//! that request (kept by the pipeline for models with `[feedback]`), counted per version and variant, and fed to
//! the answering variant's window so a rollout can judge the candidate's accuracy.
//!
//! A call is checked whole before anything is applied: one bad record refuses the call and changes nothing.
//! Ids never seen, pushed out of the store, or labelled already are counted, not refused.

use serde::{Deserialize, Serialize};

use super::request_id::MAX_ID_BYTES;
use super::{ApiError, Gateway};
use crate::lifecycle::LookupError;
use crate::telemetry::feedback::{FEEDBACK_RESULTS, Lookup, Prediction};

/// One label: the request's id and its true class or value (one per row of the request, or a single value for a
/// one-row request).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRecord {
    pub id: String,
    pub target: serde_json::Value,
}

/// What became of a call's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FeedbackSummary {
    pub matched: u64,
    pub unknown_id: u64,
    pub expired: u64,
    pub duplicate: u64,
}

/// A record checked against its prediction, waiting to be applied.
enum Checked {
    Matched { id: String, version: u64, variant: Option<std::sync::Arc<str>>, rows: Vec<Row> },
    Unknown,
    Expired,
    Duplicate,
}

/// One labelled row: a class compared with the prediction, or a regression's error.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Classified { correct: bool },
    Regressed { error: f64 },
}

/// Joins `records` to the predictions of `model` and records the outcome.
pub fn feedback(gateway: &Gateway, model: &str, records: Vec<FeedbackRecord>) -> Result<FeedbackSummary, ApiError> {
    match gateway.table.resolve(model, None) {
        Err(e @ (LookupError::ModelNotFound { .. } | LookupError::VersionNotFound { .. })) => return Err(e.into()),
        // A model that is loading, failed or evicted still takes labels for the predictions it made.
        Ok(_)
        | Err(
            LookupError::Unavailable { .. }
            | LookupError::Followed { .. }
            | LookupError::NotLoaded { .. }
            | LookupError::LoadPending { .. },
        ) => {}
    }
    let max_batch = gateway.predictions.settings().max_batch;
    if records.is_empty() {
        return Err(ApiError::invalid_input("the feedback holds no record"));
    }
    if records.len() > max_batch {
        return Err(ApiError::InvalidInput(format!(
            "the feedback holds {} records; at most {max_batch} are taken in one call (--feedback-max-batch)",
            records.len()
        )));
    }
    let checked = records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            check(gateway, model, record).map_err(|reason| {
                ApiError::invalid_input(format!("feedback record {i}: {reason}; nothing was applied"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(apply(gateway, model, checked))
}

fn check(gateway: &Gateway, model: &str, record: FeedbackRecord) -> Result<Checked, String> {
    if record.id.is_empty() || record.id.len() > MAX_ID_BYTES {
        return Err(format!("the id must be 1 to {MAX_ID_BYTES} bytes long"));
    }
    let values = match &record.target {
        serde_json::Value::Array(values) => values.iter().collect::<Vec<_>>(),
        value => vec![value],
    };
    match gateway.predictions.lookup(model, &record.id) {
        Lookup::Found(kept) => {
            if values.len() != kept.prediction.rows() {
                return Err(format!(
                    "the request '{}' had {} rows; the target's length is {}",
                    record.id,
                    kept.prediction.rows(),
                    values.len()
                ));
            }
            if kept.labelled {
                return Ok(Checked::Duplicate);
            }
            let rows = rows(&kept.prediction, &values)?;
            Ok(Checked::Matched { id: record.id, version: kept.version, variant: kept.variant, rows })
        }
        // Nothing to compare with, but a target that is no number is still a mistake of the caller's.
        Lookup::Expired | Lookup::Unknown if values.iter().any(|v| number(v).is_none()) || values.is_empty() => {
            Err(format!("the target must be a number or a list of numbers, got {}", record.target))
        }
        Lookup::Expired => Ok(Checked::Expired),
        Lookup::Unknown => Ok(Checked::Unknown),
    }
}

/// Compares each row's target with the prediction.
fn rows(prediction: &Prediction, targets: &[&serde_json::Value]) -> Result<Vec<Row>, String> {
    match prediction {
        Prediction::Classes(classes) => classes
            .iter()
            .zip(targets)
            .map(|(&class, target)| {
                let label = number(target).filter(|n| n.fract() == 0.0 && n.abs() < 9.0e15).ok_or_else(|| {
                    format!("a classifier's target is an integer class (or a list of them), got {target}")
                })?;
                Ok(Row::Classified { correct: class == label as i64 })
            })
            .collect(),
        Prediction::Values(values) => values
            .iter()
            .zip(targets)
            .map(|(&value, target)| {
                let truth = number(target)
                    .ok_or_else(|| format!("a regressor's target is a number (or a list of them), got {target}"))?;
                Ok(Row::Regressed { error: value - truth })
            })
            .collect(),
    }
}

/// A JSON number (or boolean, as 0 and 1), finite.
fn number(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        value => value.as_f64().filter(|n| n.is_finite()),
    }
}

fn apply(gateway: &Gateway, model: &str, checked: Vec<Checked>) -> FeedbackSummary {
    let metrics = &gateway.table.telemetry().feedback;
    let policy = gateway.traffic.policy(model);
    let mut summary = FeedbackSummary::default();
    for record in checked {
        match record {
            Checked::Unknown => summary.unknown_id += 1,
            Checked::Expired => summary.expired += 1,
            Checked::Duplicate => summary.duplicate += 1,
            // A second record for the same id in one call is a duplicate too.
            Checked::Matched { id, .. } if !gateway.predictions.mark_labelled(model, &id) => summary.duplicate += 1,
            Checked::Matched { version, variant, rows, .. } => {
                summary.matched += 1;
                let recorder = metrics.recorder(model, version, variant.as_deref().unwrap_or(""));
                let window = variant
                    .as_deref()
                    .and_then(|name| policy.as_ref().and_then(|policy| policy.variant(name)))
                    .map(|variant| &variant.window);
                for row in rows {
                    match row {
                        Row::Classified { correct } => {
                            recorder.classified(correct);
                            if let Some(window) = window {
                                window.observe_label(correct);
                            }
                        }
                        Row::Regressed { error } => recorder.regressed(error),
                    }
                }
            }
        }
    }
    let counts = [summary.matched, summary.unknown_id, summary.expired, summary.duplicate];
    for (result, n) in FEEDBACK_RESULTS.into_iter().zip(counts) {
        metrics.count(model, result, n);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_compared_row_by_row_and_must_fit_the_task() {
        let classes = Prediction::Classes(vec![2, 0]);
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let (two, zero, one_and_half, text) = (json("2"), json("0.0"), json("1.5"), json("\"setosa\""));
        assert_eq!(
            rows(&classes, &[&two, &zero]).unwrap(),
            [Row::Classified { correct: true }, Row::Classified { correct: true }]
        );
        assert_eq!(rows(&classes, &[&zero, &zero]).unwrap()[0], Row::Classified { correct: false });
        assert!(rows(&classes, &[&one_and_half, &zero]).unwrap_err().contains("integer class"));
        assert!(rows(&classes, &[&text, &zero]).is_err());
        let values = Prediction::Values(vec![1.5]);
        assert_eq!(rows(&values, &[&two]).unwrap(), [Row::Regressed { error: -0.5 }]);
        assert!(rows(&values, &[&text]).unwrap_err().contains("regressor"));
        assert_eq!(number(&json("true")), Some(1.0));
        assert_eq!(number(&json("null")), None);
    }
}
