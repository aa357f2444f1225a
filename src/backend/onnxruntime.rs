//! ONNX Runtime, through the `ort` crate with its library loaded at run time.
//!
//! The library is looked for once, at start, in this order: `--ort-library`, `ORT_DYLIB_PATH`, next to the
//! binary, the `onnxruntime` Python package (its `capi/libonnxruntime.so.*`; the wheel has no unversioned name),
//! then the system library path. `ort`'s own loader panics when the library is missing, so it is never used:
//! [`::ort::init_from`] is called on each candidate and its full error (`{:?}`: the Display text only says
//! "dlopen failed") is kept.
//!
//! Each instance thread owns its session (`Session::run` takes `&mut self`), with one intra-op thread by default:
//! a server scales by instances and batching, and intra-op threads of several instances would fight over the same
//! cores, which costs latency at every percentile instead of saving it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ::ort::environment::Environment;
use ::ort::ep::{self, ExecutionProviderDispatch};
use ::ort::session::Session as OrtSession;
use ::ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ::ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use bytes::Bytes;

use super::onnx_file::OnnxFile;
use super::signature::resolve_free_dims;
use super::{Backend, BackendError, BackendStatus, Device, ProviderStatus, Session, Signature, TensorSpec};
use crate::repository::CudaConfig;
use crate::tensor::{DataType, Tensor, push_bytes_element};

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

    pub fn library(&self) -> &Path {
        &self.library
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
                max_model_bytes: super::DEFAULT_MAX_MODEL_BYTES,
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
    fn builder(&self, options: SessionOptions) -> Result<SessionBuilder, String> {
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

/// Per-version settings from `model.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    pub device: Device,
    pub intra_op_threads: usize,
    /// CUDA provider options (defaults unless `[cuda]` says otherwise).
    pub cuda: CudaConfig,
    /// Most bytes the weights may need.
    pub max_model_bytes: u64,
}

/// One model version on ONNX Runtime.
pub struct OrtBackend {
    runtime: Arc<OrtRuntime>,
    model: Vec<u8>,
    options: SessionOptions,
    signature: Signature,
    /// The session made while loading (to check the model and read its outputs), kept for the first instance.
    spare: Mutex<Option<OrtSession>>,
}

impl std::fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend").field("options", &self.options).field("signature", &self.signature).finish()
    }
}

impl OrtBackend {
    pub fn load(runtime: Arc<OrtRuntime>, path: &Path, options: SessionOptions) -> Result<OrtBackend, BackendError> {
        let fail = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        let mut file = OnnxFile::read(path, options.max_model_bytes)?;
        let model = file.take_model_bytes();
        let session =
            runtime.builder(options).map_err(&fail)?.commit_from_memory(&model).map_err(|e| fail(e.to_string()))?;

        let mut inputs = file.inputs;
        inputs.iter_mut().for_each(resolve_free_dims);
        let batch = inputs.first().and_then(|i| i.dim_names.first().cloned().flatten());
        let outputs = session
            .outputs()
            .iter()
            .map(|outlet| output_spec(outlet.name(), outlet.dtype(), batch.as_deref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let signature = Signature { inputs, outputs, notes: file.notes };
        Ok(OrtBackend { runtime, model, options, signature, spare: Mutex::new(Some(session)) })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn device(&self) -> Device {
        self.options.device
    }

    fn session(&self) -> Result<Box<dyn Session>, BackendError> {
        let spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let session = match spare {
            Some(session) => session,
            None => self
                .runtime
                .builder(self.options)
                .map_err(BackendError::Compute)?
                .commit_from_memory(&self.model)
                .map_err(|e| BackendError::Compute(e.to_string()))?,
        };
        let input_names = self.signature.inputs.iter().map(|i| i.name.clone()).collect();
        let output_names = self.signature.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Box::new(OrtInstance { session, input_names, output_names }))
    }
}

struct OrtInstance {
    session: OrtSession,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl Session for OrtInstance {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        let values = inputs
            .iter()
            .zip(&self.input_names)
            .map(|(tensor, name)| Ok((name.as_str(), to_ort(tensor)?)))
            .collect::<Result<Vec<(&str, DynValue)>, BackendError>>()?;
        let outputs = self.session.run(values).map_err(|e| BackendError::Compute(e.to_string()))?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| BackendError::Compute(format!("the model produced no '{name}'")))?;
                from_ort(value)
            })
            .collect()
    }
}

/// A spec for an output as ONNX Runtime declares it. A free first dimension without a name is taken to be the batch.
fn output_spec(name: &str, dtype: &ValueType, batch: Option<&str>) -> Result<TensorSpec, String> {
    let ValueType::Tensor { ty, shape, dimension_symbols } = dtype else {
        return Err(format!("output '{name}' is a {dtype}, not a tensor, which is not served"));
    };
    let datatype = our_datatype(*ty).ok_or_else(|| format!("output '{name}' has type {ty}, which is not served"))?;
    let dims: Vec<i64> = shape.iter().map(|&d| if d >= 0 { d } else { -1 }).collect();
    let dim_names = dims
        .iter()
        .enumerate()
        .map(|(axis, &d)| match (d, dimension_symbols.get(axis).filter(|s| !s.is_empty())) {
            (d, _) if d >= 0 => None,
            (_, Some(symbol)) => Some(symbol.clone()),
            (_, None) if axis == 0 => Some(batch.unwrap_or("N").to_owned()),
            (_, None) => Some(format!("{name}_{axis}")),
        })
        .collect();
    Ok(TensorSpec { name: name.to_owned(), datatype, shape: dims, dim_names })
}

fn our_datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn compute_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Compute(e.to_string())
}

/// Matches a datatype: `$body` runs with `$t` the Rust type of a fixed-size number; BOOL and BYTES have their own
/// arms.
macro_rules! by_datatype {
    ($datatype:expr, $t:ident => $body:expr, bool => $bool:expr, bytes => $bytes:expr $(,)?) => {
        match $datatype {
            DataType::Uint8 => {
                type $t = u8;
                $body
            }
            DataType::Uint16 => {
                type $t = u16;
                $body
            }
            DataType::Uint32 => {
                type $t = u32;
                $body
            }
            DataType::Uint64 => {
                type $t = u64;
                $body
            }
            DataType::Int8 => {
                type $t = i8;
                $body
            }
            DataType::Int16 => {
                type $t = i16;
                $body
            }
            DataType::Int32 => {
                type $t = i32;
                $body
            }
            DataType::Int64 => {
                type $t = i64;
                $body
            }
            DataType::Fp32 => {
                type $t = f32;
                $body
            }
            DataType::Fp64 => {
                type $t = f64;
                $body
            }
            DataType::Bool => $bool,
            DataType::Bytes => $bytes,
        }
    };
}

/// Decodes our little-endian bytes into an owned ONNX Runtime tensor (one copy).
fn to_ort(tensor: &Tensor) -> Result<DynValue, BackendError> {
    let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    let data = tensor.data();
    by_datatype!(tensor.dtype(),
        T => {
            let values: Vec<T> = data
                .chunks_exact(std::mem::size_of::<T>())
                .map(|c| T::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            OrtTensor::from_array((shape, values)).map(|t| t.into_dyn()).map_err(compute_error)
        },
        bool => {
            let values: Vec<bool> = data.iter().map(|&b| b != 0).collect();
            OrtTensor::from_array((shape, values)).map(|t| t.into_dyn()).map_err(compute_error)
        },
        bytes => {
            let strings = tensor
                .bytes_elements()
                .map(|element| String::from_utf8(element.to_vec()))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| compute_error("BYTES input is not valid UTF-8, which string models need"))?;
            OrtTensor::from_string_array((shape, strings.as_slice())).map(|t| t.into_dyn()).map_err(compute_error)
        },
    )
}

/// Copies an ONNX Runtime output into our little-endian bytes.
fn from_ort(value: &DynValue) -> Result<Tensor, BackendError> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(compute_error(format!("the model produced a {}, which is not served", value.dtype())));
    };
    let datatype =
        our_datatype(*ty).ok_or_else(|| compute_error(format!("the model produced {ty}, which is not served")))?;
    let (shape, data) = by_datatype!(datatype,
        T => {
            let (shape, values) = value.try_extract_tensor::<T>().map_err(compute_error)?;
            let mut bytes = Vec::with_capacity(std::mem::size_of_val(values));
            values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            (shape.to_vec(), Bytes::from(bytes))
        },
        bool => {
            let (shape, values) = value.try_extract_tensor::<bool>().map_err(compute_error)?;
            (shape.to_vec(), Bytes::from(values.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>()))
        },
        bytes => {
            let (shape, strings) = value.try_extract_strings().map_err(compute_error)?;
            let mut buf = Vec::new();
            for s in &strings {
                push_bytes_element(&mut buf, s.as_bytes()).map_err(compute_error)?;
            }
            (shape.to_vec(), Bytes::from(buf))
        },
    );
    let shape = shape.iter().map(|&d| usize::try_from(d).map_err(compute_error)).collect::<Result<Vec<_>, _>>()?;
    Tensor::new(datatype, shape, data).map_err(compute_error)
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
