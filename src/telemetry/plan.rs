//! Which outputs of a version have their predictions counted, and how (the plan a version's
//! [`PredictionMonitor`](super::PredictionMonitor) and drift trackers follow).

use super::DEFAULT_SCORE_BUCKETS;
use super::predictions::{Distribution, MAX_CLASSES, MonitorSpec};
use crate::tensor::{DataType, describe};

/// One output of the model's signature.
#[derive(Debug, Clone, Copy)]
pub struct OutputShape<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    /// -1 for a free dimension.
    pub shape: &'a [i64],
}

/// One output that `[monitoring]` names.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    pub name: &'a str,
    /// Classes (a counter per class), else a histogram of scores.
    pub classes: bool,
    /// The histogram's bucket bounds; empty: [`DEFAULT_SCORE_BUCKETS`].
    pub buckets: &'a [f64],
}

/// The outputs whose predictions to count: those `watched` names, or, when it names none, every output that looks
/// like a classifier's (integer labels [N], or scores [N, K]) or a score ([N] or [N, 1]). None with `predictions`
/// off.
pub fn monitor_plan(
    outputs: &[OutputShape<'_>],
    predictions: bool,
    watched: &[Watched<'_>],
) -> Result<Vec<MonitorSpec>, String> {
    if !predictions {
        return Ok(Vec::new());
    }
    let is_integer = |dt: DataType| !matches!(dt, DataType::Fp32 | DataType::Fp64 | DataType::Bytes);
    if watched.is_empty() {
        let inferred = outputs.iter().enumerate().filter_map(|(output, spec)| {
            let distribution = match (spec.datatype, spec.shape) {
                (DataType::Bytes, _) => return None,
                (dt, [_]) if is_integer(dt) => Distribution::Labels,
                (_, [_]) => Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec()),
                (dt, [_, 1]) if !is_integer(dt) => Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec()),
                (_, [_, k]) if (2..=MAX_CLASSES as i64).contains(k) => Distribution::Argmax,
                _ => return None,
            };
            Some(MonitorSpec { output, name: spec.name.to_owned(), distribution })
        });
        return Ok(inferred.collect());
    }
    watched
        .iter()
        .map(|watched| {
            let output = outputs.iter().position(|o| o.name == watched.name).ok_or_else(|| {
                format!("[monitoring] names output '{}', which the model does not have", watched.name)
            })?;
            let spec = &outputs[output];
            let distribution = match (watched.classes, watched.buckets) {
                (true, _) if is_integer(spec.datatype) => Distribution::Labels,
                (true, _) if spec.shape.len() == 2 => Distribution::Argmax,
                (true, _) => {
                    return Err(format!(
                        "[monitoring] output '{}' is {}: classes need integer labels or a [N, K] score output",
                        spec.name,
                        describe(spec.datatype, spec.shape)
                    ));
                }
                (false, []) => Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec()),
                (false, buckets) => Distribution::Histogram(buckets.to_vec()),
            };
            Ok(MonitorSpec { output, name: spec.name.to_owned(), distribution })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUTS: [OutputShape<'static>; 5] = [
        OutputShape { name: "label", datatype: DataType::Int64, shape: &[-1] },
        OutputShape { name: "probabilities", datatype: DataType::Fp32, shape: &[-1, 3] },
        OutputShape { name: "score", datatype: DataType::Fp32, shape: &[-1, 1] },
        OutputShape { name: "embedding", datatype: DataType::Fp32, shape: &[-1, 1000] },
        OutputShape { name: "names", datatype: DataType::Bytes, shape: &[-1] },
    ];

    #[test]
    fn classifier_and_score_outputs_are_inferred() {
        let plan = monitor_plan(&OUTPUTS, true, &[]).unwrap();
        let kinds: Vec<(&str, &Distribution)> = plan.iter().map(|m| (m.name.as_str(), &m.distribution)).collect();
        assert_eq!(
            kinds,
            [
                ("label", &Distribution::Labels),
                ("probabilities", &Distribution::Argmax),
                ("score", &Distribution::Histogram(DEFAULT_SCORE_BUCKETS.to_vec())),
            ]
        );
        assert!(monitor_plan(&OUTPUTS, false, &[]).unwrap().is_empty());
    }

    #[test]
    fn configured_outputs_are_checked() {
        let classes = |name| [Watched { name, classes: true, buckets: &[] }];
        assert!(monitor_plan(&OUTPUTS, true, &classes("nope")).unwrap_err().contains("'nope'"));
        let err = monitor_plan(&OUTPUTS, true, &classes("names")).unwrap_err();
        assert!(err.contains("'names' is BYTES [-1]"), "{err}");
        let plan = monitor_plan(&OUTPUTS, true, &classes("embedding")).unwrap();
        assert_eq!(plan[0].distribution, Distribution::Argmax);
        assert_eq!(plan[0].output, 3);
        let buckets = [0.0, 5.0, 10.0];
        let histogram = [Watched { name: "score", classes: false, buckets: &buckets }];
        assert_eq!(
            monitor_plan(&OUTPUTS, true, &histogram).unwrap()[0].distribution,
            Distribution::Histogram(buckets.to_vec())
        );
    }
}
