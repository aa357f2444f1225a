//! The per-model `model.toml`. Unknown keys are refused, so a typo never silently falls back to a default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Device;
use super::observe_config::{FeedbackConfig, LoggingConfig};
use super::traffic_config::{RolloutConfig, TrafficConfig};

/// Which backend computes a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// ONNX Runtime when its library loaded, else tract.
    #[default]
    Auto,
    /// ONNX Runtime; the version fails to load when its library is not available.
    Ort,
    /// tract-onnx, embedded.
    Tract,
}

/// Which of a model's versions are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// The N highest version numbers.
    Latest(u32),
    /// Exactly these versions.
    Specific(Vec<u64>),
    /// Every version found.
    All,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve among those present (sorted ascending), and the named versions that are absent.
    pub fn select(&self, present: &[u64]) -> (Vec<u64>, Vec<u64>) {
        match self {
            VersionPolicy::Latest(n) => {
                let keep = present.len().saturating_sub(*n as usize);
                (present[keep..].to_vec(), Vec::new())
            }
            VersionPolicy::Specific(wanted) => {
                let mut wanted = wanted.clone();
                wanted.sort_unstable();
                wanted.dedup();
                wanted.into_iter().partition(|v| present.contains(v))
            }
            VersionPolicy::All => (present.to_vec(), Vec::new()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub backend: BackendChoice,
    /// `"cpu"` or `"cuda:N"` (ONNX Runtime's CUDA provider; never a silent CPU fallback).
    #[serde(default)]
    pub device: Device,
    /// ONNX Runtime intra-op threads per instance; `[batching] instances` adds runs in parallel instead.
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Most rows one backend run may hold; 0 means the model has no batch dimension and is never batched.
    #[serde(default)]
    pub max_batch_size: usize,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    #[serde(default)]
    pub warmup: WarmupConfig,
    /// `[cuda]`: ONNX Runtime CUDA provider options, for `device = "cuda:N"`.
    #[serde(default)]
    pub cuda: Option<CudaConfig>,
    /// `[traffic]`: the split of unpinned requests across variants, and the shadow.
    #[serde(default)]
    pub traffic: Option<TrafficConfig>,
    /// `[rollout]`: automatic promotion or rollback of a candidate variant.
    #[serde(default)]
    pub rollout: Option<RolloutConfig>,
    /// Most bytes the version's weights may need; larger versions are refused at load [default: the server's
    /// --max-model-bytes]
    #[serde(default)]
    pub max_model_bytes: Option<u64>,
    /// `[logging]`: a sample of the answered requests written to a payload log.
    #[serde(default)]
    pub logging: Option<LoggingConfig>,
    /// `[feedback]`: predictions kept so that ground truth sent later is joined to them.
    #[serde(default)]
    pub feedback: Option<FeedbackConfig>,
    /// Load the model on its first request instead of at start, and let its versions be evicted, least recently
    /// used first, to fit the server's --max-loaded-bytes and --max-loaded-models [default: true under
    /// `--model-control-mode on-demand`, else false]
    #[serde(default)]
    pub on_demand: Option<bool>,
    /// Never evict the model's versions; under `--model-control-mode on-demand` they load at start.
    #[serde(default)]
    pub keep_loaded: bool,
}

/// `[cuda]`: how ONNX Runtime's CUDA provider runs this model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CudaConfig {
    /// Most GPU memory the provider's arena may take, in MiB; 0 = no limit.
    pub memory_limit_mb: u64,
    /// How the provider's memory arena grows: by powers of two, or by what each allocation asks.
    pub arena_extend_strategy: ArenaStrategy,
    /// How cuDNN picks convolution algorithms [default: `exhaustive` for a version that is not batched, `default`
    /// for one that is]
    pub cudnn_conv_algo_search: Option<ConvSearch>,
    /// CUDA graphs (capture a run once, replay it): must be false; `true` is refused, since ONNX Runtime replays a
    /// graph only for inputs and outputs bound in GPU memory and infergate passes host tensors.
    pub cuda_graphs: bool,
    /// TF32 tensor cores for FP32 matrix products and convolutions (ONNX Runtime's default): faster, with about
    /// 10 bits of mantissa in the products; `false` keeps full FP32 precision.
    pub tf32: bool,
}

impl Default for CudaConfig {
    fn default() -> Self {
        CudaConfig {
            memory_limit_mb: 0,
            arena_extend_strategy: ArenaStrategy::default(),
            cudnn_conv_algo_search: None,
            cuda_graphs: false,
            tf32: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArenaStrategy {
    #[default]
    NextPowerOfTwo,
    SameAsRequested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConvSearch {
    #[default]
    Exhaustive,
    Heuristic,
    Default,
}

/// `[warmup]`: inferences each instance runs before the version takes traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WarmupConfig {
    /// Runs per instance and batch size, on inputs of zeros shaped by the signature; 0 turns warm-up off.
    pub runs: usize,
    /// Batch sizes (rows) to warm up; empty means one row.
    pub batch_sizes: Vec<usize>,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        WarmupConfig { runs: 1, batch_sizes: Vec::new() }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backend: BackendChoice::default(),
            device: Device::default(),
            intra_op_threads: 1,
            version_policy: VersionPolicy::default(),
            max_batch_size: 0,
            batching: BatchingConfig::default(),
            monitoring: MonitoringConfig::default(),
            warmup: WarmupConfig::default(),
            cuda: None,
            traffic: None,
            rollout: None,
            max_model_bytes: None,
            logging: None,
            feedback: None,
            on_demand: None,
            keep_loaded: false,
        }
    }
}

fn one() -> usize {
    1
}

/// `[monitoring]`: which outputs' predictions are counted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// `false` turns prediction tracking off for the model.
    pub predictions: bool,
    /// The outputs to watch; when empty, they are inferred from the signature.
    pub outputs: Vec<OutputMonitoring>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig { predictions: true, outputs: Vec::new() }
    }
}

/// `[[monitoring.outputs]]`: one watched output.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputMonitoring {
    /// The output's name, as the model's signature has it.
    pub name: String,
    /// How its predictions are counted.
    pub distribution: DistributionChoice,
    /// Histogram bucket bounds, ascending; empty means scores in [0, 1] by tenths.
    #[serde(default)]
    pub buckets: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DistributionChoice {
    /// A counter per predicted class: the value of a label output, or the highest column of a score output.
    Classes,
    /// A histogram of a one-score-per-row output.
    Histogram,
}

/// `[batching]`: how requests wait for and share a backend run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// How long the first request of a batch may wait for company, in microseconds; 0 = eager.
    pub max_queue_delay_us: u64,
    /// Batch sizes (rows) dispatched without waiting for the delay.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting per version; past it requests are answered 429.
    pub max_queue_size: usize,
    /// Deadline of a request that sets none, in milliseconds; 0 = none.
    pub default_timeout_ms: u64,
    /// Backend runs of this version that may go at once, each on its own thread.
    pub instances: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_queue_delay_us: 0,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            default_timeout_ms: 0,
            instances: 1,
        }
    }
}

/// Requests a version may hold waiting. Enough to absorb a burst from a few hundred concurrent clients on a
/// sub-millisecond model; past it, callers are told to retry rather than pile up memory.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 256;
/// Upper bounds that catch typos (an extra zero or three) rather than restrict real deployments.
const MAX_QUEUE_SIZE_LIMIT: usize = 1_000_000;
const MAX_INSTANCES: usize = 64;
const MAX_BATCH_SIZE_LIMIT: usize = 1 << 20;
const MAX_QUEUE_DELAY_US: u64 = 10_000_000;

/// Most warm-up runs per instance: enough to settle any runtime, few enough to keep loads quick.
const MAX_WARMUP_RUNS: usize = 100;

impl ModelConfig {
    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        let config: ModelConfig = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.validate()?;
        Ok(config)
    }

    /// The cuDNN algorithm search of this model on a GPU: as configured; else `exhaustive` (ONNX Runtime's default:
    /// the fastest algorithm, measured once for the one input shape) when requests are not batched, and `default`
    /// when they are. ONNX Runtime chooses the algorithms again whenever the input shape changes from one run to the
    /// next, which batches of varying size do all the time: measured on an H200 with ResNet-18 (docs/performance.md),
    /// a batched run then took about 97 ms with `exhaustive`, 39 ms with `heuristic` and 17-22 ms with `default`.
    pub fn conv_search(&self) -> ConvSearch {
        match self.cuda.and_then(|cuda| cuda.cudnn_conv_algo_search) {
            Some(search) => search,
            None if self.max_batch_size > 0 => ConvSearch::Default,
            None => ConvSearch::Exhaustive,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match &self.version_policy {
            VersionPolicy::Latest(0) => return Err("version_policy latest must be at least 1".to_owned()),
            VersionPolicy::Specific(v) if v.is_empty() => {
                return Err("version_policy specific lists no version".to_owned());
            }
            _ => {}
        }
        if self.max_model_bytes == Some(0) {
            return Err("max_model_bytes must be at least 1".to_owned());
        }
        if self.on_demand == Some(true) && self.keep_loaded {
            return Err("on_demand = true and keep_loaded = true contradict each other: a model kept loaded is \
                        loaded at start and never evicted"
                .to_owned());
        }
        if self.max_batch_size > MAX_BATCH_SIZE_LIMIT {
            return Err(format!("max_batch_size must be at most {MAX_BATCH_SIZE_LIMIT}, got {}", self.max_batch_size));
        }
        if self.warmup.runs > MAX_WARMUP_RUNS {
            return Err(format!("warmup.runs must be at most {MAX_WARMUP_RUNS}, got {}", self.warmup.runs));
        }
        if self.intra_op_threads == 0 || self.intra_op_threads > MAX_INSTANCES {
            return Err(format!(
                "intra_op_threads must be between 1 and {MAX_INSTANCES}, got {}",
                self.intra_op_threads
            ));
        }
        if let Some(traffic) = &self.traffic {
            traffic.validate()?;
        }
        if let Some(rollout) = &self.rollout {
            rollout.validate(self.traffic.as_ref())?;
            if rollout.max_accuracy_drop.is_some() && self.feedback.is_none() {
                return Err("[rollout] max_accuracy_drop needs [feedback], which keeps the predictions labels are \
                            joined to"
                    .to_owned());
            }
        }
        if let Some(logging) = &self.logging {
            logging.validate()?;
        }
        if self.cuda.is_some() && self.device == Device::Cpu {
            return Err("[cuda] options need device = \"cuda:N\"".to_owned());
        }
        if self.cuda.is_some_and(|cuda| cuda.cuda_graphs) {
            return Err("cuda_graphs is not supported: ONNX Runtime replays a CUDA graph only for inputs and outputs \
                        bound in GPU memory, and infergate passes host tensors; leave it off"
                .to_owned());
        }
        if let Some(&size) =
            self.warmup.batch_sizes.iter().find(|&&size| size == 0 || size > self.max_batch_size.max(1))
        {
            return Err(format!(
                "warmup.batch_sizes must be between 1 and max_batch_size ({}), got {size}",
                self.max_batch_size.max(1)
            ));
        }
        if self.backend == BackendChoice::Tract && self.device != Device::Cpu {
            return Err(format!(
                "device = \"{}\" needs backend = \"ort\" (or \"auto\"); tract computes on the CPU",
                self.device
            ));
        }
        let b = &self.batching;
        if b.instances == 0 || b.instances > MAX_INSTANCES {
            return Err(format!("batching.instances must be between 1 and {MAX_INSTANCES}, got {}", b.instances));
        }
        if b.max_queue_size == 0 || b.max_queue_size > MAX_QUEUE_SIZE_LIMIT {
            return Err(format!(
                "batching.max_queue_size must be between 1 and {MAX_QUEUE_SIZE_LIMIT}, got {}",
                b.max_queue_size
            ));
        }
        if b.max_queue_delay_us > MAX_QUEUE_DELAY_US {
            return Err(format!(
                "batching.max_queue_delay_us must be at most {MAX_QUEUE_DELAY_US}, got {}",
                b.max_queue_delay_us
            ));
        }
        if self.max_batch_size == 0 && !b.preferred_batch_sizes.is_empty() {
            return Err("batching.preferred_batch_sizes needs max_batch_size > 0".to_owned());
        }
        if let Some(&bad) = b.preferred_batch_sizes.iter().find(|&&p| p == 0 || p > self.max_batch_size) {
            return Err(format!(
                "batching.preferred_batch_sizes must lie between 1 and max_batch_size ({}), got {bad}",
                self.max_batch_size
            ));
        }
        for output in &self.monitoring.outputs {
            if !output.buckets.windows(2).all(|w| w[0] < w[1]) || output.buckets.iter().any(|b| !b.is_finite()) {
                return Err(format!("monitoring output '{}': buckets must be finite and ascending", output.name));
            }
            if output.distribution == DistributionChoice::Classes && !output.buckets.is_empty() {
                return Err(format!("monitoring output '{}': buckets only apply to histograms", output.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_policy_form() {
        assert_eq!(ModelConfig::parse("").unwrap(), ModelConfig::default());
        let c = ModelConfig::parse("backend = \"tract\"\nversion_policy = { latest = 2 }").unwrap();
        assert_eq!(c.backend, BackendChoice::Tract);
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        let c = ModelConfig::parse("version_policy = { specific = [3, 1] }").unwrap();
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![3, 1]));
        let c = ModelConfig::parse("version_policy = \"all\"").unwrap();
        assert_eq!(c.version_policy, VersionPolicy::All);
        let c = ModelConfig::parse("on_demand = true").unwrap();
        assert_eq!((c.on_demand, c.keep_loaded), (Some(true), false));
        let refused = ModelConfig::parse("on_demand = true\nkeep_loaded = true").unwrap_err();
        assert!(refused.contains("contradict"), "{refused}");
    }

    #[test]
    fn refuses_typos_and_nonsense() {
        assert!(ModelConfig::parse("backnd = \"tract\"").unwrap_err().contains("backnd"));
        assert!(ModelConfig::parse("backend = \"tensorflow\"").unwrap_err().contains("tensorflow"));
        assert!(ModelConfig::parse("version_policy = { latest = 0 }").is_err());
        assert!(ModelConfig::parse("version_policy = { specific = [] }").is_err());
        assert!(ModelConfig::parse("version_policy = { latest = -1 }").is_err());
    }

    #[test]
    fn cuda_options() {
        let config = ModelConfig::parse(
            "device = \"cuda:1\"\n[cuda]\nmemory_limit_mb = 2048\narena_extend_strategy = \"same_as_requested\"\n\
             cudnn_conv_algo_search = \"heuristic\"\ncuda_graphs = false\n",
        )
        .unwrap();
        assert_eq!(config.device, Device::Cuda(1));
        let cuda = config.cuda.unwrap();
        assert_eq!(cuda.cudnn_conv_algo_search, Some(ConvSearch::Heuristic));
        assert_eq!((cuda.memory_limit_mb, cuda.cuda_graphs, cuda.tf32), (2048, false, true));
        assert_eq!(cuda.arena_extend_strategy, ArenaStrategy::SameAsRequested);
        assert_eq!(config.conv_search(), ConvSearch::Heuristic);
        let exact = ModelConfig::parse("device = \"cuda:0\"\n[cuda]\ntf32 = false\n").unwrap();
        assert_eq!((exact.cuda.unwrap().tf32, exact.conv_search()), (false, ConvSearch::Exhaustive));
        let batched = ModelConfig::parse("device = \"cuda:0\"\nmax_batch_size = 8\n").unwrap();
        assert_eq!(batched.conv_search(), ConvSearch::Default);
        assert!(ModelConfig::parse("[cuda]\ntf32 = false\n").unwrap_err().contains("cuda:N"));
        let graphs = ModelConfig::parse("device = \"cuda:0\"\n[cuda]\ncuda_graphs = true\n").unwrap_err();
        assert!(graphs.contains("bound in GPU memory"), "{graphs}");
        assert!(ModelConfig::parse("device = \"cuda:0\"\n[cuda]\nconv = 1\n").is_err());
    }

    #[test]
    fn batching_settings() {
        let c = ModelConfig::parse(
            "max_batch_size = 32\n[batching]\nmax_queue_delay_us = 500\npreferred_batch_sizes = [8, 16]\ninstances = 2",
        )
        .unwrap();
        assert_eq!(c.max_batch_size, 32);
        assert_eq!(c.batching.max_queue_delay_us, 500);
        assert_eq!(c.batching.preferred_batch_sizes, [8, 16]);
        assert_eq!(c.batching.instances, 2);
        assert_eq!(c.batching.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        for bad in [
            "[batching]\ninstances = 0",
            "[batching]\nmax_queue_size = 0",
            "[batching]\npreferred_batch_sizes = [4]",
            "max_batch_size = 8\n[batching]\npreferred_batch_sizes = [16]",
            "[batching]\nmax_queue_delay_us = 99999999999",
            "[batching]\nmax_delay = 5",
            "max_batch_size = 99999999999",
            "[[monitoring.outputs]]\nname = \"y\"\ndistribution = \"histogram\"\nbuckets = [1.0, 0.5]",
            "[[monitoring.outputs]]\nname = \"y\"\ndistribution = \"classes\"\nbuckets = [1.0]",
            "[[monitoring.outputs]]\nname = \"y\"\ndistribution = \"pie\"",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_versions() {
        let present = [1, 2, 5];
        assert_eq!(VersionPolicy::Latest(1).select(&present), (vec![5], vec![]));
        assert_eq!(VersionPolicy::Latest(9).select(&present), (vec![1, 2, 5], vec![]));
        assert_eq!(VersionPolicy::Specific(vec![5, 3, 1, 1]).select(&present), (vec![1, 5], vec![3]));
        assert_eq!(VersionPolicy::All.select(&present), (vec![1, 2, 5], vec![]));
    }
}
