//! Triton's system shared-memory extension, for clients on the same host (a sidecar's application): a client
//! registers a window of a POSIX shared-memory object as a named region, then names the region (with an offset
//! and a size) in an input's or a requested output's parameters instead of sending the tensor's bytes. Off unless
//! `--shared-memory`, since an object is readable by anyone who may open it.
//!
//! The registry is swapped, not locked, on the request path: a request takes the regions it names (an `Arc`
//! each) when it is decoded, so a region unregistered meanwhile stays readable and writable until it is answered.

mod read;
mod region;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::{ApiError, NamedTensor};
use crate::tensor::{DataType, Tensor};
use region::Region;

pub use region::SHM_DIR;

/// The parameters naming a region, as Triton's clients send them on inputs and requested outputs.
pub const REGION_PARAMETER: &str = "shared_memory_region";
pub const OFFSET_PARAMETER: &str = "shared_memory_offset";
pub const BYTE_SIZE_PARAMETER: &str = "shared_memory_byte_size";

/// Regions one server holds at most: each keeps a file open.
pub const MAX_REGIONS: usize = 1024;
/// The longest region name accepted.
const MAX_NAME_BYTES: usize = 256;

/// The registered regions.
#[derive(Debug)]
pub struct SharedMemory {
    enabled: bool,
    /// Inputs read from regions are bounded like request bodies.
    max_input_bytes: usize,
    regions: ArcSwap<HashMap<String, Arc<Region>>>,
    /// Registrations and removals take turns; readers never wait.
    changes: Mutex<()>,
}

/// One region, as the status calls show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// Where a tensor is in shared memory: a region, and a window of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedRef {
    pub region: String,
    pub offset: u64,
    pub byte_size: u64,
}

impl SharedRef {
    /// The region named by the parameters of a tensor (`("input", name)` or `("output", name)`), if any: a region
    /// needs a byte size, and an offset or a byte size needs a region.
    pub fn from_parameters(
        tensor: (&str, &str),
        region: Option<String>,
        offset: Option<u64>,
        byte_size: Option<u64>,
    ) -> Result<Option<SharedRef>, ApiError> {
        let (kind, name) = tensor;
        let refuse =
            |has: &str, lacks: &str| ApiError::malformed(format!("{kind} '{name}' has a {has} without {lacks}"));
        match (region, byte_size) {
            (Some(region), Some(byte_size)) => Ok(Some(SharedRef { region, offset: offset.unwrap_or(0), byte_size })),
            (Some(_), None) => Err(refuse(REGION_PARAMETER, BYTE_SIZE_PARAMETER)),
            (None, Some(_)) => Err(refuse(BYTE_SIZE_PARAMETER, REGION_PARAMETER)),
            (None, None) if offset.is_some() => Err(refuse(OFFSET_PARAMETER, REGION_PARAMETER)),
            (None, None) => Ok(None),
        }
    }
}

/// A requested output to be written into a region once computed; holds the region until then.
#[derive(Debug, Clone)]
pub struct OutputTarget {
    pub output: String,
    region: Arc<Region>,
    offset: u64,
    byte_size: u64,
}

impl Default for SharedMemory {
    /// The extension off.
    fn default() -> SharedMemory {
        SharedMemory::new(false, 0)
    }
}

impl SharedMemory {
    /// `enabled` is `--shared-memory`; `max_input_bytes` bounds an input read from a region.
    pub fn new(enabled: bool, max_input_bytes: usize) -> SharedMemory {
        SharedMemory { enabled, max_input_bytes, regions: ArcSwap::default(), changes: Mutex::new(()) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `POST /v2/systemsharedmemory/region/{name}/register`, `SystemSharedMemoryRegister`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<(), ApiError> {
        self.check_enabled()?;
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(ApiError::invalid_input(format!(
                "a region name must be 1 to {MAX_NAME_BYTES} bytes long, got {}",
                name.len()
            )));
        }
        let _turn = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let regions = self.regions.load();
        if regions.contains_key(name) {
            return Err(ApiError::invalid_input(format!("region '{name}' is already registered; unregister it first")));
        }
        if regions.len() >= MAX_REGIONS {
            return Err(ApiError::LimitExceeded(format!(
                "{MAX_REGIONS} shared memory regions are registered, the most a server holds; unregister some first"
            )));
        }
        let region = Region::open(name, key, offset, byte_size)?;
        let mut next = HashMap::clone(&regions);
        next.insert(name.to_owned(), Arc::new(region));
        self.regions.store(Arc::new(next));
        tracing::info!(region = name, key, offset, byte_size, "shared memory region registered");
        Ok(())
    }

    /// `POST /v2/systemsharedmemory[/region/{name}]/unregister`, `SystemSharedMemoryUnregister`: one region, or
    /// every one when `name` is `None`. Unregistering a region that is not registered does nothing, so clean-up
    /// code may run twice.
    pub fn unregister(&self, name: Option<&str>) -> Result<(), ApiError> {
        self.check_enabled()?;
        let _turn = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let regions = self.regions.load();
        let next = match name {
            None => HashMap::new(),
            Some(name) if !regions.contains_key(name) => return Ok(()),
            Some(name) => {
                let mut next = HashMap::clone(&regions);
                next.remove(name);
                next
            }
        };
        self.regions.store(Arc::new(next));
        tracing::info!(region = name.unwrap_or("(all)"), "shared memory region unregistered");
        Ok(())
    }

    /// `GET /v2/systemsharedmemory[/region/{name}]/status`, `SystemSharedMemoryStatus`, ordered by name.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>, ApiError> {
        self.check_enabled()?;
        let regions = self.regions.load();
        let view = |region: &Region| RegionStatus {
            name: region.name.clone(),
            key: region.key.clone(),
            offset: region.offset,
            byte_size: region.byte_size,
        };
        match name {
            Some(name) => {
                let region = regions.get(name).ok_or_else(|| {
                    ApiError::NotFound(format!("no system shared memory region named '{name}' is registered"))
                })?;
                Ok(vec![view(region)])
            }
            None => {
                let mut all: Vec<RegionStatus> = regions.values().map(|region| view(region)).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(all)
            }
        }
    }

    /// An input whose bytes are read from a region.
    pub fn read_input(
        &self,
        name: String,
        datatype: DataType,
        shape: Vec<usize>,
        at: &SharedRef,
    ) -> Result<NamedTensor, ApiError> {
        let what = format!("input '{name}'");
        let region = self.region(&what, &at.region)?;
        region.check_window(&what, at.offset, at.byte_size)?;
        let len = usize::try_from(at.byte_size).ok().filter(|&len| len <= self.max_input_bytes).ok_or_else(|| {
            ApiError::LimitExceeded(format!(
                "{what}: shared_memory_byte_size {} is larger than the limit of {} bytes (--max-request-bytes)",
                at.byte_size, self.max_input_bytes
            ))
        })?;
        let data = region.read(&what, at.offset, len)?;
        let tensor = Tensor::new(datatype, shape, Bytes::from(data))
            .map_err(|e| ApiError::invalid_input(format!("{what} (region '{}'): {e}", at.region)))?;
        Ok(NamedTensor { name, tensor })
    }

    /// Where a requested output goes: the region is held from now until the output is written.
    pub fn output_target(&self, output: String, at: &SharedRef) -> Result<OutputTarget, ApiError> {
        let what = format!("output '{output}'");
        let region = self.region(&what, &at.region)?;
        region.check_window(&what, at.offset, at.byte_size)?;
        Ok(OutputTarget { output, region, offset: at.offset, byte_size: at.byte_size })
    }

    fn region(&self, what: &str, name: &str) -> Result<Arc<Region>, ApiError> {
        self.check_enabled()?;
        self.regions.load().get(name).cloned().ok_or_else(|| {
            ApiError::invalid_input(format!("{what}: no system shared memory region named '{name}' is registered"))
        })
    }

    fn check_enabled(&self) -> Result<(), ApiError> {
        if self.enabled {
            return Ok(());
        }
        Err(ApiError::Forbidden(
            "system shared memory is off; start the server with --shared-memory (INFERGATE_SHARED_MEMORY) to use it"
                .to_owned(),
        ))
    }
}

impl OutputTarget {
    /// Writes the computed output into its window; an output larger than the window is refused.
    pub fn write(&self, tensor: &Tensor) -> Result<(), ApiError> {
        let what = format!("output '{}'", self.output);
        let data = tensor.data();
        if data.len() as u64 > self.byte_size {
            return Err(ApiError::invalid_input(format!(
                "{what} is {} bytes but its shared_memory_byte_size is {}",
                data.len(),
                self.byte_size
            )));
        }
        self.region.write(&what, self.offset, data)
    }
}

/// The target of each output that names a region, in the order asked.
pub type OutputTargets = Vec<OutputTarget>;

/// The target of `output`, if it has one.
pub fn target_of<'a>(targets: &'a [OutputTarget], output: &str) -> Option<&'a OutputTarget> {
    targets.iter().find(|target| target.output == output)
}

#[cfg(test)]
mod tests;
