//! Prediction distributions: per model version and output, a counter per predicted class, or a histogram of a
//! score. Counters are created on a class's first sighting and reached without locks afterwards, so the request
//! path allocates nothing once a version has seen its classes.

use std::sync::OnceLock;

use prometheus::{Histogram, IntCounter, IntCounterVec};

use crate::tensor::{DataType, Tensor};

/// Classes tracked one by one; larger label values and wider score rows count as class "other", so a model
/// cannot create unbounded series.
pub const MAX_CLASSES: usize = 256;

/// What to record of one output.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// The output holds one class label per row (an integer).
    Labels,
    /// The output holds one score per class per row ([N, K]); the predicted class is the highest.
    Argmax,
    /// The output holds one score per row; its histogram, with these bucket bounds.
    Histogram(Vec<f64>),
}

/// Which output to watch and how.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    /// Position of the output in the model signature.
    pub output: usize,
    pub name: String,
    pub distribution: Distribution,
}

#[derive(Debug)]
enum Recorder {
    Classes {
        family: IntCounterVec,
        labels: [String; 3],
        counters: Box<[OnceLock<IntCounter>]>,
        other: OnceLock<IntCounter>,
        argmax: bool,
    },
    Histogram(Histogram),
}

/// The prediction recorders of one version.
#[derive(Debug)]
pub struct PredictionMonitor {
    outputs: Vec<(usize, Recorder)>,
}

impl PredictionMonitor {
    pub(super) fn new(
        specs: &[MonitorSpec],
        model: &str,
        version: &str,
        classes: &IntCounterVec,
        histogram: impl Fn(&str, &[f64]) -> Histogram,
    ) -> PredictionMonitor {
        let outputs = specs
            .iter()
            .map(|spec| {
                let recorder = match &spec.distribution {
                    Distribution::Labels | Distribution::Argmax => Recorder::Classes {
                        family: classes.clone(),
                        labels: [model.to_owned(), version.to_owned(), spec.name.clone()],
                        counters: (0..MAX_CLASSES).map(|_| OnceLock::new()).collect(),
                        other: OnceLock::new(),
                        argmax: spec.distribution == Distribution::Argmax,
                    },
                    Distribution::Histogram(buckets) => Recorder::Histogram(histogram(&spec.name, buckets)),
                };
                (spec.output, recorder)
            })
            .collect();
        PredictionMonitor { outputs }
    }

    /// Records the predictions of one answered request; `outputs` in signature order.
    pub fn observe(&self, outputs: &[Tensor]) {
        for (ix, recorder) in &self.outputs {
            let Some(tensor) = outputs.get(*ix) else { continue };
            match recorder {
                Recorder::Classes { argmax, .. } => for_each_class(tensor, *argmax, |c| recorder.count_class(c)),
                Recorder::Histogram(histogram) => for_each_value(tensor, |v| histogram.observe(v)),
            }
        }
    }
}

impl Recorder {
    fn count_class(&self, class: f64) {
        let Recorder::Classes { family, labels, counters, other, .. } = self else { return };
        let slot = (class >= 0.0 && class.fract() == 0.0).then_some(class as usize).filter(|&c| c < MAX_CLASSES);
        let counter = match slot {
            Some(c) => counters[c].get_or_init(|| {
                family.with_label_values(&[labels[0].as_str(), labels[1].as_str(), labels[2].as_str(), &c.to_string()])
            }),
            None => other.get_or_init(|| {
                family.with_label_values(&[labels[0].as_str(), labels[1].as_str(), labels[2].as_str(), "other"])
            }),
        };
        counter.inc();
    }
}

/// Calls `f` with the predicted class of every row: the label itself, or the highest column of a [N, K] row.
pub(crate) fn for_each_class(tensor: &Tensor, argmax: bool, mut f: impl FnMut(f64)) {
    if !argmax {
        return for_each_value(tensor, f);
    }
    let width = tensor.shape().get(1).copied().unwrap_or(1).max(1);
    let (mut best, mut best_score, mut column) = (0usize, f64::NEG_INFINITY, 0usize);
    for_each_value(tensor, |v| {
        if v > best_score {
            (best, best_score) = (column, v);
        }
        column += 1;
        if column == width {
            f(best as f64);
            (best, best_score, column) = (0, f64::NEG_INFINITY, 0);
        }
    });
}

/// Calls `f` with every element of a numeric tensor, as f64; BYTES tensors have no values to record.
pub(crate) fn for_each_value(tensor: &Tensor, mut f: impl FnMut(f64)) {
    macro_rules! each {
        ($ty:ty) => {
            for chunk in tensor.data().chunks_exact(std::mem::size_of::<$ty>()) {
                let mut raw = [0u8; std::mem::size_of::<$ty>()];
                raw.copy_from_slice(chunk);
                f(<$ty>::from_le_bytes(raw) as f64);
            }
        };
    }
    match tensor.dtype() {
        DataType::Bool | DataType::Uint8 => tensor.data().iter().for_each(|&b| f(f64::from(b))),
        DataType::Int8 => each!(i8),
        DataType::Uint16 => each!(u16),
        DataType::Int16 => each!(i16),
        DataType::Uint32 => each!(u32),
        DataType::Int32 => each!(i32),
        DataType::Uint64 => each!(u64),
        DataType::Int64 => each!(i64),
        DataType::Fp32 => each!(f32),
        DataType::Fp64 => each!(f64),
        DataType::Bytes => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::telemetry::Telemetry;

    fn tensor<T: Copy>(dtype: DataType, shape: Vec<usize>, values: &[T], to_le: fn(T) -> Vec<u8>) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|&v| to_le(v)).collect();
        Tensor::new(dtype, shape, Bytes::from(data)).unwrap()
    }

    #[test]
    fn labels_argmax_and_the_other_class() {
        let telemetry = Telemetry::new(std::time::Duration::from_secs(60));
        let specs = [
            MonitorSpec { output: 0, name: "label".into(), distribution: Distribution::Labels },
            MonitorSpec { output: 1, name: "scores".into(), distribution: Distribution::Argmax },
        ];
        let metrics = telemetry.version("m", 1, &specs, Default::default());
        let labels = tensor(DataType::Int64, vec![4], &[0i64, 300, -1, 2], |v| v.to_le_bytes().to_vec());
        let scores =
            tensor(DataType::Fp32, vec![2, 3], &[0.1f32, 0.7, 0.2, 0.5, 0.2, 0.3], |v| v.to_le_bytes().to_vec());
        metrics.predictions.observe(&[labels, scores]);
        let text = String::from_utf8(telemetry.render(&[])).unwrap();
        for (series, count) in [
            (r#"{class="0",model="m",output="label",version="1"} 1"#, 1),
            (r#"{class="2",model="m",output="label",version="1"} 1"#, 1),
            (r#"{class="other",model="m",output="label",version="1"} 2"#, 2),
            (r#"{class="1",model="m",output="scores",version="1"} 1"#, 1),
            (r#"{class="0",model="m",output="scores",version="1"} 1"#, 1),
        ] {
            assert!(text.contains(&format!("infergate_predictions_total{series}")), "{series} ({count}) in {text}");
        }
    }
}
