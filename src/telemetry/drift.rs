//! Drift: live prediction and feature distributions compared with a reference by the population stability
//! index (PSI). The reference comes from `reference.json` in the version folder (`infergate reference` builds
//! one); the live side is a sliding window of counts, so the gauges follow current traffic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::count_window::CountWindow;
use super::predictions::{Distribution, MonitorSpec, for_each_class, for_each_value};
use super::psi::{EPSILON, psi};
use crate::tensor::Tensor;

/// Feature columns tracked per input, to bound the series a wide input could create.
pub const MAX_FEATURES: usize = 64;

/// `reference.json`: reference distributions of outputs (by name) and of input columns (by input name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    #[serde(default)]
    pub predictions: BTreeMap<String, ReferenceDistribution>,
    #[serde(default)]
    pub features: BTreeMap<String, Vec<ReferenceDistribution>>,
}

/// Either class shares (`classes`: class → share), or bucket bounds with one share per bucket plus one for
/// values above the last bound (`buckets`, `shares`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceDistribution {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<f64>,
}

/// How values fall into the bins of one reference distribution.
#[derive(Debug)]
enum Bins {
    /// Reference classes in order; one more bin for classes the reference never saw.
    Classes(Vec<f64>),
    /// Bucket bounds; value v goes to the first bucket whose bound is >= v.
    Buckets(Vec<f64>),
}

impl Bins {
    fn bin(&self, value: f64) -> usize {
        match self {
            Bins::Classes(classes) => classes.iter().position(|&c| c == value).unwrap_or(classes.len()),
            Bins::Buckets(bounds) => bucket_of(bounds, value),
        }
    }
}

#[derive(Debug)]
struct Tracked {
    bins: Bins,
    expected: Vec<f64>,
    live: CountWindow,
}

impl Tracked {
    fn new(reference: &ReferenceDistribution, window: Duration) -> Result<Tracked, String> {
        if reference.classes.len() > super::MAX_CLASSES {
            return Err(format!("at most {} classes are tracked, got {}", super::MAX_CLASSES, reference.classes.len()));
        }
        let (bins, mut expected) = if !reference.classes.is_empty() {
            let mut classes = Vec::with_capacity(reference.classes.len());
            let mut shares = Vec::with_capacity(reference.classes.len() + 1);
            for (class, share) in &reference.classes {
                classes.push(class.parse::<f64>().map_err(|_| format!("class '{class}' is not a number"))?);
                shares.push(*share);
            }
            shares.push(0.0);
            (Bins::Classes(classes), shares)
        } else {
            if reference.shares.len() != reference.buckets.len() + 1 {
                return Err(format!(
                    "{} buckets need {} shares (one more, for values above the last bound), got {}",
                    reference.buckets.len(),
                    reference.buckets.len() + 1,
                    reference.shares.len()
                ));
            }
            if !reference.buckets.windows(2).all(|w| w[0] < w[1]) {
                return Err("bucket bounds must be ascending".to_owned());
            }
            (Bins::Buckets(reference.buckets.clone()), reference.shares.clone())
        };
        let total: f64 = expected.iter().sum();
        if expected.iter().any(|s| !s.is_finite() || *s < 0.0) || (total - 1.0).abs() > 0.01 {
            return Err(format!("shares must be non-negative and sum to 1, got a sum of {total}"));
        }
        expected.iter_mut().for_each(|s| *s = s.max(EPSILON));
        let live = CountWindow::new(window, expected.len());
        Ok(Tracked { bins, expected, live })
    }

    fn add(&self, value: f64, now: Instant) {
        self.live.add(self.bins.bin(value), now);
    }

    /// PSI of the live window against the reference; NaN with too few live observations.
    fn psi(&self, now: Instant) -> f64 {
        psi(&self.expected, &self.live.totals(now))
    }
}

/// The bucket of a value: the first whose bound is >= it, as Prometheus' `le`; past the last bound, one more.
fn bucket_of(bounds: &[f64], value: f64) -> usize {
    bounds.partition_point(|&b| b < value)
}

/// Calls `f` with (column, value) for every element of a [N, F] tensor, row by row.
fn for_each_column(tensor: &Tensor, mut f: impl FnMut(usize, f64)) {
    let width = tensor.shape().get(1).copied().unwrap_or(1).max(1);
    let mut column = 0;
    for_each_value(tensor, |v| {
        f(column, v);
        column = (column + 1) % width;
    });
}

#[derive(Debug)]
struct PredictionDrift {
    output: usize,
    name: String,
    argmax: Option<bool>,
    tracked: Tracked,
}

#[derive(Debug)]
struct FeatureDrift {
    input: usize,
    name: String,
    columns: Vec<Tracked>,
}

/// The drift trackers of one version.
#[derive(Debug, Default)]
pub struct DriftMonitor {
    predictions: Vec<PredictionDrift>,
    features: Vec<FeatureDrift>,
}

/// One PSI value for the gauges: (output or input name, feature column or `None`, psi).
pub type PsiReading<'a> = (&'a str, Option<usize>, f64);

impl DriftMonitor {
    /// Trackers for what the reference describes. `monitors` says how each watched output is read; `inputs`
    /// describe the model's inputs in signature order: name, and the column count of a [N, F] float input.
    pub fn new(
        reference: &Reference,
        monitors: &[MonitorSpec],
        inputs: &[(String, Option<usize>)],
        window: Duration,
    ) -> Result<DriftMonitor, String> {
        let mut monitor = DriftMonitor::default();
        for (name, distribution) in &reference.predictions {
            let spec = monitors.iter().find(|m| &m.name == name).ok_or_else(|| {
                format!("reference.json describes output '{name}', which is not monitored (see [monitoring])")
            })?;
            let argmax = match spec.distribution {
                Distribution::Labels => Some(false),
                Distribution::Argmax => Some(true),
                Distribution::Histogram(_) => None,
            };
            let tracked =
                Tracked::new(distribution, window).map_err(|e| format!("reference for output '{name}': {e}"))?;
            monitor.predictions.push(PredictionDrift { output: spec.output, name: name.clone(), argmax, tracked });
        }
        for (name, columns) in &reference.features {
            let input = inputs
                .iter()
                .position(|(i, _)| i == name)
                .ok_or_else(|| format!("reference.json describes input '{name}', which the model does not have"))?;
            match inputs[input].1 {
                Some(width) if width == columns.len() && width <= MAX_FEATURES => {}
                Some(width) => {
                    return Err(format!(
                        "reference.json describes {} columns of input '{name}', which has {width} (at most \
                         {MAX_FEATURES} are tracked)",
                        columns.len()
                    ));
                }
                None => return Err(format!("input '{name}' is not a [N, F] float input with a fixed F")),
            }
            let columns = columns
                .iter()
                .enumerate()
                .map(|(c, d)| {
                    Tracked::new(d, window).map_err(|e| format!("reference for input '{name}' feature {c}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            monitor.features.push(FeatureDrift { input, name: name.clone(), columns });
        }
        Ok(monitor)
    }

    pub fn is_empty(&self) -> bool {
        self.predictions.is_empty() && self.features.is_empty()
    }

    /// Whether any input column is tracked (the request path keeps the inputs for it only then).
    pub fn tracks_inputs(&self) -> bool {
        !self.features.is_empty()
    }

    /// Records the input columns of one request; inputs in signature order, rows along dimension 0.
    pub fn observe_inputs(&self, inputs: &[Tensor]) {
        let now = Instant::now();
        for feature in &self.features {
            let Some(tensor) = inputs.get(feature.input) else { continue };
            for_each_column(tensor, |column, v| {
                if let Some(tracked) = feature.columns.get(column) {
                    tracked.add(v, now);
                }
            });
        }
    }

    /// Records the predictions of one answered request; outputs in signature order.
    pub fn observe_outputs(&self, outputs: &[Tensor]) {
        let now = Instant::now();
        for prediction in &self.predictions {
            let Some(tensor) = outputs.get(prediction.output) else { continue };
            match prediction.argmax {
                Some(argmax) => for_each_class(tensor, argmax, |c| prediction.tracked.add(c, now)),
                None => for_each_value(tensor, |v| prediction.tracked.add(v, now)),
            }
        }
    }

    /// PSI of every tracked output (feature `None`) and input column, now.
    pub fn readings(&self) -> Vec<PsiReading<'_>> {
        let now = Instant::now();
        let outputs = self.predictions.iter().map(|p| (p.name.as_str(), None, p.tracked.psi(now)));
        let features = self
            .features
            .iter()
            .flat_map(|f| f.columns.iter().enumerate().map(move |(c, t)| (f.name.as_str(), Some(c), t.psi(now))));
        outputs.chain(features).collect()
    }
}

/// Builds a reference from sample traffic: class shares of the label and score outputs in `monitors`, bucket
/// shares of histogram outputs, and per-column bucket shares (bounds at the sample's quantiles, `buckets` of
/// them at most) of every [N, F] float input. `inputs` are (name, tensor); `outputs` in signature order.
pub fn build_reference(
    monitors: &[MonitorSpec],
    inputs: &[(String, &Tensor)],
    outputs: &[Tensor],
    buckets: usize,
) -> Reference {
    let mut reference = Reference::default();
    for spec in monitors {
        let Some(tensor) = outputs.get(spec.output) else { continue };
        let distribution = match &spec.distribution {
            Distribution::Labels | Distribution::Argmax => {
                let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
                for_each_class(tensor, spec.distribution == Distribution::Argmax, |c| {
                    *counts.entry(c as i64).or_default() += 1;
                });
                let total: u64 = counts.values().sum();
                let classes =
                    counts.into_iter().map(|(c, n)| (c.to_string(), n as f64 / total.max(1) as f64)).collect();
                ReferenceDistribution { classes, ..Default::default() }
            }
            Distribution::Histogram(bounds) => {
                let mut values = Vec::new();
                for_each_value(tensor, |v| values.push(v));
                bucket_shares(bounds.clone(), &values)
            }
        };
        reference.predictions.insert(spec.name.clone(), distribution);
    }
    for (name, tensor) in inputs {
        let (Some(&rows), Some(&width)) = (tensor.shape().first(), tensor.shape().get(1)) else { continue };
        if tensor.shape().len() != 2
            || rows == 0
            || !matches!(tensor.dtype(), crate::tensor::DataType::Fp32 | crate::tensor::DataType::Fp64)
        {
            continue;
        }
        let mut columns = vec![Vec::with_capacity(rows); width.min(MAX_FEATURES)];
        for_each_column(tensor, |column, v| {
            if let Some(values) = columns.get_mut(column) {
                values.push(v);
            }
        });
        let distributions = columns.into_iter().map(|values| bucket_shares(quantile_bounds(&values, buckets), &values));
        reference.features.insert(name.clone(), distributions.collect());
    }
    reference
}

/// Up to `buckets - 1` distinct bounds at the sample's quantiles, so each bucket holds a similar share.
fn quantile_bounds(values: &[f64], buckets: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let mut bounds: Vec<f64> = (1..buckets.max(2))
        .filter_map(|i| sorted.get((i * sorted.len() / buckets.max(2)).min(sorted.len().saturating_sub(1))).copied())
        .collect();
    bounds.dedup();
    bounds
}

fn bucket_shares(buckets: Vec<f64>, values: &[f64]) -> ReferenceDistribution {
    let mut counts = vec![0u64; buckets.len() + 1];
    for &v in values {
        counts[bucket_of(&buckets, v)] += 1;
    }
    let total = values.len().max(1) as f64;
    ReferenceDistribution { buckets, shares: counts.iter().map(|&c| c as f64 / total).collect(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked() {
        let window = Duration::from_secs(60);
        let bad_sum = ReferenceDistribution { buckets: vec![1.0], shares: vec![0.5, 0.2], ..Default::default() };
        assert!(Tracked::new(&bad_sum, window).unwrap_err().contains("sum to 1"));
        let bad_len = ReferenceDistribution { buckets: vec![1.0, 2.0], shares: vec![0.5, 0.5], ..Default::default() };
        assert!(Tracked::new(&bad_len, window).unwrap_err().contains("need 3 shares"));
        let classes = ReferenceDistribution {
            classes: [("0".to_owned(), 0.5), ("x".to_owned(), 0.5)].into(),
            ..Default::default()
        };
        assert!(Tracked::new(&classes, window).unwrap_err().contains("'x'"));
    }

    #[test]
    fn bins() {
        let buckets = Bins::Buckets(vec![1.0, 2.0]);
        assert_eq!([0.5, 1.0, 1.5, 2.0, 9.0].map(|v| buckets.bin(v)), [0, 0, 1, 1, 2]);
        let classes = Bins::Classes(vec![0.0, 2.0]);
        assert_eq!([0.0, 2.0, 1.0].map(|v| classes.bin(v)), [0, 1, 2]);
    }
}
