//! Finding and loading the ONNX Runtime library, and registering execution providers on a session builder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ::ort::environment::Environment;
use ::ort::ep::{self, ExecutionProviderDispatch};
use ::ort::session::Session as OrtSession;
use ::ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use super::SessionOptions;
use crate::backend::{BackendStatus, Device, ProviderStatus};
use crate::repository::CudaConfig;

/// Why ONNX Runtime is not available.
#[derive(Debug)]
pub enum DiscoverError {
    /// The library named by `--ort-library` or `ORT_DYLIB_PATH` did not load: a configuration error.
    Explicit(String),
    /// No candidate loaded; each one's reason is in the message.
    NotFound(String),
}

/// The runtime this process loaded, if any.
static LOADED: Mutex<Option<Arc<OrtRuntime>>> = Mutex::new(None);

/// The loaded ONNX Runtime library and its environment.
pub struct OrtRuntime {
    library: PathBuf,
    found_by: &'static str,
    environment: Environment,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime").field("library", &self.library).field("found_by", &self.found_by).finish()
    }
}

impl OrtRuntime {
    /// Finds and loads the library. ONNX Runtime allows one library and one environment per process, so once one
    /// has loaded, every later call returns it.
    pub fn discover(explicit: Option<&Path>) -> Result<Arc<OrtRuntime>, DiscoverError> {
        let mut loaded = LOADED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runtime) = loaded.as_ref() {
            return Ok(Arc::clone(runtime));
        }
        let runtime = Arc::new(OrtRuntime::find(explicit)?);
        *loaded = Some(Arc::clone(&runtime));
        Ok(runtime)
    }

    fn find(explicit: Option<&Path>) -> Result<OrtRuntime, DiscoverError> {
        let from_env = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some((path, found_by)) =
            explicit.map(|p| (p.to_owned(), "--ort-library")).or(from_env.map(|p| (p, "ORT_DYLIB_PATH")))
        {
            return OrtRuntime::load(&path, found_by).map_err(|reason| {
                DiscoverError::Explicit(format!("ONNX Runtime library {} (from {found_by}): {reason}", path.display()))
            });
        }
        let mut tried = Vec::new();
        for (path, found_by) in candidates() {
            match OrtRuntime::load(&path, found_by) {
                Ok(runtime) => return Ok(runtime),
                Err(reason) => tried.push(format!("{} ({found_by}): {reason}", path.display())),
            }
        }
        Err(DiscoverError::NotFound(if tried.is_empty() {
            "no ONNX Runtime library found (set --ort-library or ORT_DYLIB_PATH, or pip install onnxruntime)".to_owned()
        } else {
            format!("no ONNX Runtime library loaded; tried {}", tried.join("; "))
        }))
    }

    fn load(path: &Path, found_by: &'static str) -> Result<OrtRuntime, String> {
        let builder = ::ort::init_from(path).map_err(|e| load_error(&e))?;
        let environment = builder.with_name("infergate").build().map_err(|e| format!("{e:?}"))?;
        Ok(OrtRuntime { library: path.to_owned(), found_by, environment })
    }

    /// The library and where it was found; with `probe_providers`, also whether the CUDA execution provider
    /// registers (with its own message), which loads the provider's library and so is left to `infergate backends`.
    pub fn status(&self, probe_providers: bool) -> BackendStatus {
        let mut execution_providers = vec![ProviderStatus { name: "cpu", available: true, detail: String::new() }];
        if probe_providers {
            let probe = SessionOptions {
                device: Device::Cuda(0),
                intra_op_threads: 1,
                cuda: CudaConfig::default(),
                max_model_bytes: crate::backend::DEFAULT_MAX_MODEL_BYTES,
            };
            execution_providers.push(match self.builder(probe) {
                Ok(_) => ProviderStatus {
                    name: "cuda",
                    available: true,
                    detail: "CUDAExecutionProvider registers".to_owned(),
                },
                Err(reason) => ProviderStatus { name: "cuda", available: false, detail: reason },
            });
        }
        BackendStatus {
            name: "ort",
            available: true,
            detail: format!("{} (found by {}); {}", self.library.display(), self.found_by, ::ort::info()),
            execution_providers,
        }
    }

    /// A session builder for these options. A GPU device registers CUDA with `error_on_failure`: the model runs
    /// there or does not load, never silently on the CPU.
    pub(super) fn builder(&self, options: SessionOptions) -> Result<SessionBuilder, String> {
        let text = |e: ::ort::Error<SessionBuilder>| e.to_string();
        let builder = OrtSession::builder(&self.environment)
            .map_err(|e| e.to_string())?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(text)?
            .with_intra_threads(options.intra_op_threads)
            .map_err(text)?
            .with_inter_threads(1)
            .map_err(text)?;
        let providers: Vec<ExecutionProviderDispatch> = match options.device {
            Device::Cpu => vec![ep::CPU::default().build()],
            Device::Cuda(id) => vec![cuda(id, options.cuda)?],
        };
        builder.with_execution_providers(providers).map_err(|e| format!("{}: {e}", options.device))
    }
}

/// CUDA, registered with `error_on_failure`. `is_available()` only says the provider was compiled in, so it is not
/// asked: registering it is the real test, and its message the real reason.
#[cfg(feature = "cuda")]
fn cuda(id: u32, options: CudaConfig) -> Result<ExecutionProviderDispatch, String> {
    use crate::repository::{ArenaStrategy, ConvSearch};
    let id = i32::try_from(id).map_err(|_| format!("CUDA device {id} is out of range"))?;
    let mut provider = ep::CUDA::default()
        .with_device_id(id)
        .with_arena_extend_strategy(match options.arena_extend_strategy {
            ArenaStrategy::NextPowerOfTwo => ep::ArenaExtendStrategy::NextPowerOfTwo,
            ArenaStrategy::SameAsRequested => ep::ArenaExtendStrategy::SameAsRequested,
        })
        .with_conv_algorithm_search(match options.cudnn_conv_algo_search.unwrap_or_default() {
            ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
            ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
            ConvSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
        })
        .with_cuda_graph(options.cuda_graphs)
        .with_tf32(options.tf32);
    if options.memory_limit_mb > 0 {
        let bytes = usize::try_from(options.memory_limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        provider = provider.with_memory_limit(bytes);
    }
    Ok(provider.build().error_on_failure())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_id: u32, _options: CudaConfig) -> Result<ExecutionProviderDispatch, String> {
    Err("this infergate was built without CUDA support (cargo feature `cuda`)".to_owned())
}

/// The real reason a library did not load: the dynamic loader's own message (only `{:?}` carries it).
fn load_error(e: &::ort::LoadDynamicError) -> String {
    match e {
        ::ort::LoadDynamicError::Dlopen { error, .. } => format!("the dynamic loader refused it: {error:?}"),
        ::ort::LoadDynamicError::MissingApi { .. } => {
            "it does not export `OrtGetApiBase`, so it is not an ONNX Runtime library".to_owned()
        }
        other => other.to_string(),
    }
}

/// Where the library may be, after the explicit settings: beside the binary, the Python package, the system path.
fn candidates() -> Vec<(PathBuf, &'static str)> {
    let mut found = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        for name in versioned_libraries(&dir) {
            found.push((name, "next to the binary"));
        }
    }
    for dir in python_package_dirs() {
        for name in versioned_libraries(&dir.join("capi")) {
            found.push((name, "the onnxruntime Python package"));
        }
    }
    found.push((PathBuf::from("libonnxruntime.so"), "the system library path"));
    found.push((PathBuf::from("libonnxruntime.so.1"), "the system library path"));
    found
}

/// `libonnxruntime.so` and `libonnxruntime.so.<version>` in `dir`, unversioned first, then newest first.
fn versioned_libraries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so."))
        .collect();
    names.sort_by(|a, b| b.cmp(a));
    names.sort_by_key(|name| name != "libonnxruntime.so");
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// The `onnxruntime` package folders of the active virtual environment and of `python3`, without importing it.
fn python_package_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from)
        && let Ok(entries) = std::fs::read_dir(venv.join("lib"))
    {
        for entry in entries.flatten() {
            let dir = entry.path().join("site-packages/onnxruntime");
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    let script = "import importlib.util as u\ns = u.find_spec('onnxruntime')\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    if let Ok(output) =
        std::process::Command::new("python3").arg("-c").arg(script).stderr(std::process::Stdio::null()).output()
        && output.status.success()
    {
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !dir.is_empty() && !dirs.iter().any(|d| d == Path::new(&dir)) {
            dirs.push(PathBuf::from(dir));
        }
    }
    dirs
}
