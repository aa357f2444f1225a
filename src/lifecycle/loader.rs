//! Loading one version: load the model file on a backend, check it (declared signature, batchability), build its
//! metrics and drift trackers, start its instances and warm them up. Blocking work runs off the async workers.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use super::{ServingVersion, VersionState, budget, trim};
use crate::backend::{BackendError, Backends, Signature};
use crate::repository::local::FileStamp;
use crate::repository::{self, DeclaredSignature, DistributionChoice, ModelConfig, ModelSpec, MonitoringConfig};
use crate::scheduler::{BatchPolicy, Scheduler, SchedulerConfig, Warmup};
use crate::telemetry::{self, DriftMonitor, MonitorSpec, OutputShape, Reference, Statistics, Telemetry, Watched};
use crate::tensor::{DataType, Tensor};

/// What a load carries over besides the spec.
#[derive(Debug, Default)]
pub(super) struct LoadOptions {
    /// An on-demand version, which the budget may evict.
    pub evictable: bool,
    /// The statistics of the version's evicted copy, which its counts go on from.
    pub statistics: Option<Arc<Statistics>>,
    /// What the version's last load measured: the least it is taken to cost again.
    pub previous_cost: Option<u64>,
}

/// Loads one version; `warming` is called once the backend has loaded, before its instances warm up (the
/// caller shows the version as warming up then). The version's cost is measured as the growth of the process's
/// resident memory across the load, once the allocator has handed its free memory back (see `trim`), and is at
/// least the model file's size and what its last load measured; loads run one at a time under the table's control
/// lock, so the measure is the load's.
pub(super) async fn load_spec(
    spec: ModelSpec,
    backends: &Arc<Backends>,
    telemetry: &Arc<Telemetry>,
    warming: impl Fn() + Send + 'static,
    options: LoadOptions,
) -> VersionState {
    let (name, version) = (spec.name.clone(), spec.version);
    let (telemetry, backends) = (Arc::clone(telemetry), Arc::clone(backends));
    let load = move || {
        trim::release_free_memory();
        let before = budget::resident_bytes();
        let previous = options.previous_cost.unwrap_or(0);
        let mut serving = load_version(&spec, &backends, &telemetry, &warming, options)?;
        let file = std::fs::metadata(&serving.spec.model_path).map_or(0, |m| m.len());
        let grown = before.zip(budget::resident_bytes()).map_or(0, |(before, after)| after.saturating_sub(before));
        serving.cost = grown.max(file).max(previous);
        Ok::<_, BackendError>(serving)
    };
    match tokio::task::spawn_blocking(load).await {
        Ok(Ok(serving)) => VersionState::Ready(Arc::new(serving)),
        Ok(Err(e)) => {
            tracing::error!(model = %name, version, error = %e, "version failed to load");
            VersionState::Failed(e.to_string())
        }
        Err(e) => {
            tracing::error!(model = %name, version, error = %e, "version loader failed");
            VersionState::Failed(format!("the loader failed: {e}"))
        }
    }
}

/// Loads, checks and starts one version; blocking, run off the async workers. `warming` is called once the
/// backend has loaded, before the instances run their warm-up inferences.
fn load_version(
    spec: &ModelSpec,
    backends: &Backends,
    telemetry: &Telemetry,
    warming: &dyn Fn(),
    options: LoadOptions,
) -> Result<ServingVersion, BackendError> {
    let started = Instant::now();
    let stamp = FileStamp::of(&spec.model_path);
    repository::local::verify_checksum(&spec.model_path)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let backend = backends.load(&spec.model_path, &spec.config)?;
    let config = &spec.config;
    let checked = match &spec.declared {
        Some(declared) => check_declared(declared, backend.signature()),
        None => Ok(()),
    };
    checked
        .and_then(|()| check_batchable(backend.signature(), config.max_batch_size))
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let label = format!("{}-{}", spec.name, spec.version);
    let monitors = monitor_plan(backend.signature(), &config.monitoring)
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let drift = drift_monitor(spec, backend.signature(), &monitors, telemetry.window())
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    let mut metrics = telemetry.version(&spec.name, spec.version, &monitors, drift);
    if let Some(statistics) = options.statistics {
        metrics.statistics = statistics;
    }
    let scheduling = scheduler_config(config, backend.signature())
        .map_err(|reason| BackendError::Load { path: spec.model_path.display().to_string(), reason })?;
    if scheduling.warmup.is_some() {
        warming();
    }
    let scheduler = Scheduler::start(&label, Arc::clone(&backend), scheduling, metrics.clone())?;
    telemetry.set_load_duration(&spec.name, spec.version, started.elapsed());
    tracing::info!(
        model = %spec.name,
        version = spec.version,
        backend = backend.name(),
        device = %backend.device(),
        load_ms = started.elapsed().as_millis() as u64,
        "version ready"
    );
    Ok(ServingVersion {
        name: spec.name.clone(),
        version: spec.version,
        backend_name: backend.name(),
        device: backend.device(),
        stamp,
        signature: backend.signature().clone(),
        scheduler,
        metrics,
        spec: Arc::new(spec.clone()),
        cost: 0,
        evictable: options.evictable,
        last_use: AtomicU64::new(super::unix_millis(SystemTime::now())),
        backend: Arc::downgrade(&backend),
    })
}

/// Checks the signature a source declares (MLflow's `MLmodel`) against the graph's: every declared tensor must
/// exist (by name, or by position when unnamed) with the same datatype and rank, and equal fixed dimensions.
fn check_declared(declared: &DeclaredSignature, signature: &Signature) -> Result<(), String> {
    let sides = [("input", &declared.inputs, &signature.inputs), ("output", &declared.outputs, &signature.outputs)];
    for (side, declared, actual) in sides {
        for (position, tensor) in declared.iter().enumerate() {
            let label = tensor.name.clone().unwrap_or_else(|| format!("#{position}"));
            let found = match &tensor.name {
                Some(name) => actual.iter().find(|spec| &spec.name == name),
                None => actual.get(position),
            };
            let Some(spec) = found else {
                let names: Vec<&str> = actual.iter().map(|spec| spec.name.as_str()).collect();
                return Err(format!(
                    "the MLmodel signature declares {side} '{label}', which the ONNX graph does not have (its \
                     {side}s: {})",
                    names.join(", ")
                ));
            };
            let dims_agree = tensor.shape.len() == spec.shape.len()
                && tensor.shape.iter().zip(&spec.shape).all(|(&d, &a)| d < 0 || a < 0 || d == a);
            if tensor.datatype != spec.datatype || !dims_agree {
                return Err(format!(
                    "the MLmodel signature declares {side} '{label}' as {} {:?}, but the ONNX graph has {}",
                    tensor.datatype.as_str(),
                    tensor.shape,
                    spec.describe()
                ));
            }
        }
    }
    Ok(())
}

/// Batching stacks requests along dimension 0 and splits outputs back by rows, so every input and output must
/// have the same free first dimension (the batch), not merely some free one.
fn check_batchable(signature: &Signature, max_batch_size: usize) -> Result<(), String> {
    if max_batch_size == 0 {
        return Ok(());
    }
    let batch_dim = |spec: &crate::backend::TensorSpec| spec.dim_names.first().cloned().flatten();
    let mut specs = signature.inputs.iter().chain(&signature.outputs);
    let batch = signature.inputs.first().and_then(batch_dim);
    let mismatch = specs.find(|spec| batch.is_none() || batch_dim(spec) != batch);
    match mismatch {
        Some(spec) => Err(format!(
            "max_batch_size = {max_batch_size} needs every input and output to share one free first (batch) \
             dimension, but '{}' is {} with first dimension {}",
            spec.name,
            spec.describe(),
            batch_dim(spec).unwrap_or_else(|| "fixed".to_owned())
        )),
        None => Ok(()),
    }
}

/// The version's `reference.json`, if its folder has one.
pub const REFERENCE_FILE: &str = "reference.json";

/// Drift trackers for what the version's `reference.json` describes; none without one.
fn drift_monitor(
    spec: &ModelSpec,
    signature: &Signature,
    monitors: &[MonitorSpec],
    window: Duration,
) -> Result<DriftMonitor, String> {
    let Some(path) = spec.model_path.parent().map(|dir| dir.join(REFERENCE_FILE)) else {
        return Ok(DriftMonitor::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DriftMonitor::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let reference: Reference = serde_json::from_str(&text).map_err(|e| format!("invalid {}: {e}", path.display()))?;
    let inputs: Vec<(String, Option<usize>)> = signature
        .inputs
        .iter()
        .map(|i| {
            let float = matches!(i.datatype, DataType::Fp32 | DataType::Fp64);
            let width = match i.shape.as_slice() {
                [_, f] if float && *f > 0 => usize::try_from(*f).ok(),
                _ => None,
            };
            (i.name.clone(), width)
        })
        .collect();
    DriftMonitor::new(&reference, monitors, &inputs, window).map_err(|e| format!("{}: {e}", path.display()))
}

/// `[monitoring]` of a version's signature: the outputs whose predictions are counted (see
/// [`telemetry::monitor_plan`]).
pub fn monitor_plan(signature: &Signature, monitoring: &MonitoringConfig) -> Result<Vec<MonitorSpec>, String> {
    let outputs: Vec<OutputShape<'_>> = signature
        .outputs
        .iter()
        .map(|o| OutputShape { name: &o.name, datatype: o.datatype, shape: &o.shape })
        .collect();
    let watched: Vec<Watched<'_>> = monitoring
        .outputs
        .iter()
        .map(|w| Watched {
            name: &w.name,
            classes: match w.distribution {
                DistributionChoice::Classes => true,
                DistributionChoice::Histogram => false,
            },
            buckets: &w.buckets,
        })
        .collect();
    telemetry::monitor_plan(&outputs, monitoring.predictions, &watched)
}

/// One row of zeros (empty strings for BYTES) per input, every free dimension 1.
fn warmup_inputs(signature: &Signature) -> Result<Vec<Tensor>, String> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|&d| usize::try_from(d).unwrap_or(1).max(1)).collect();
            let elements: usize = shape.iter().product();
            let bytes = match spec.datatype.element_size() {
                Some(size) => vec![0u8; elements * size],
                None => vec![0u8; elements * 4],
            };
            Tensor::new(spec.datatype, shape, bytes::Bytes::from(bytes))
                .map_err(|e| format!("warm-up input '{}': {e}", spec.name))
        })
        .collect()
}

/// The batch sizes to warm up: as configured, else one row. (Warming every size of a batched conv model on ONNX
/// Runtime's CUDA provider was measured and did not help: it chooses its algorithms again on each change of shape.)
fn warmup_batch_sizes(config: &ModelConfig) -> Vec<usize> {
    match &config.warmup.batch_sizes[..] {
        [] => vec![1],
        sizes => sizes.to_vec(),
    }
}

fn scheduler_config(config: &ModelConfig, signature: &Signature) -> Result<SchedulerConfig, String> {
    let batching = &config.batching;
    let mut preferred_batch_sizes = batching.preferred_batch_sizes.clone();
    preferred_batch_sizes.sort_unstable();
    preferred_batch_sizes.dedup();
    Ok(SchedulerConfig {
        policy: BatchPolicy {
            max_batch_size: config.max_batch_size,
            max_queue_delay: Duration::from_micros(batching.max_queue_delay_us),
            preferred_batch_sizes,
            max_queue_size: batching.max_queue_size,
        },
        instances: batching.instances,
        default_timeout: (batching.default_timeout_ms > 0).then(|| Duration::from_millis(batching.default_timeout_ms)),
        warmup: match config.warmup.runs {
            0 => None,
            runs => Some(Warmup { row: warmup_inputs(signature)?, batch_sizes: warmup_batch_sizes(config), runs }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TensorSpec;
    use crate::tensor::DataType;

    fn spec(name: &str, shape: Vec<i64>, first: Option<&str>) -> TensorSpec {
        let mut dim_names = vec![None; shape.len()];
        dim_names[0] = first.map(str::to_owned);
        TensorSpec { name: name.into(), datatype: DataType::Fp32, dim_names, shape }
    }

    #[test]
    fn warm_up_covers_the_configured_batch_sizes() {
        let config = |text: &str| ModelConfig::parse(text).unwrap();
        assert_eq!(warmup_batch_sizes(&config("max_batch_size = 8")), vec![1]);
        assert_eq!(warmup_batch_sizes(&config("device = \"cuda:0\"\nmax_batch_size = 4")), vec![1]);
        let chosen = config("device = \"cuda:0\"\nmax_batch_size = 64\n[warmup]\nbatch_sizes = [1, 64]");
        assert_eq!(warmup_batch_sizes(&chosen), vec![1, 64]);
        let cpu = config("max_batch_size = 64\n[warmup]\nbatch_sizes = [16]");
        assert_eq!(warmup_batch_sizes(&cpu), vec![16]);
        let refused = ModelConfig::parse("max_batch_size = 4\n[warmup]\nbatch_sizes = [8]").unwrap_err();
        assert!(refused.contains("between 1 and max_batch_size (4), got 8"), "{refused}");
        assert!(ModelConfig::parse("[warmup]\nbatch_sizes = [2]").is_err());
    }

    #[test]
    fn batching_needs_one_shared_batch_dimension() {
        let ok = Signature {
            inputs: vec![spec("x", vec![-1, 4], Some("N"))],
            outputs: vec![spec("y", vec![-1], Some("N"))],
            notes: vec![],
        };
        assert!(check_batchable(&ok, 8).is_ok());
        let fixed = Signature {
            inputs: vec![spec("x", vec![-1, 4], Some("N"))],
            outputs: vec![spec("y", vec![3], None)],
            notes: vec![],
        };
        let err = check_batchable(&fixed, 8).unwrap_err();
        assert!(err.contains("'y' is FP32 [3] with first dimension fixed"), "{err}");
        assert!(check_batchable(&fixed, 0).is_ok());
        let other_symbol = Signature {
            inputs: vec![spec("x", vec![-1, 4], Some("N")), spec("table", vec![-1, 4], Some("M"))],
            outputs: vec![spec("y", vec![-1], Some("N"))],
            notes: vec![],
        };
        assert!(check_batchable(&other_symbol, 8).unwrap_err().contains("'table'"));
    }
}
