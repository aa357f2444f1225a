//! Where a model computes, as `model.toml` says it.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// Where a model computes: `"cpu"` or `"cuda:N"` in `model.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(u32),
}

impl Device {
    pub fn parse(text: &str) -> Result<Device, String> {
        match text {
            "cpu" => Ok(Device::Cpu),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("device '{text}' is neither \"cpu\" nor \"cuda:N\"")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Device, D::Error> {
        let text = String::deserialize(deserializer)?;
        Device::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// In the configuration reference, a device is the string `model.toml` holds.
impl schemars::JsonSchema for Device {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Device")
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(cpu|cuda:[0-9]+)$",
            "x-kind": "`\"cpu\"` or `\"cuda:N\"`",
        })
    }

    fn inline_schema() -> bool {
        true
    }
}
