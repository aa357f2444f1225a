//! `[logging]` and `[feedback]` of `model.toml`: which answered requests are written to a payload log, and whether
//! predictions are kept so that ground truth sent later can be joined to them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[logging]`: a sample of the model's answered requests, written to one of the server's payload-log sinks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Share of the answered requests logged, in percent.
    #[serde(default = "all")]
    pub percent: f64,
    #[serde(default)]
    pub mode: LogMode,
    pub sink: LogSink,
    /// Leave BYTES inputs out of the records (free text often holds personal data).
    #[serde(default)]
    pub exclude_bytes: bool,
    /// Inputs left out of the records by name.
    #[serde(default)]
    pub exclude_inputs: Vec<String>,
    /// A record (a file line, or an event's body) larger than this is dropped and counted.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

/// What a record holds of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    Request,
    Response,
    #[default]
    Both,
}

impl LogMode {
    pub fn inputs(self) -> bool {
        self != LogMode::Response
    }

    pub fn outputs(self) -> bool {
        self != LogMode::Request
    }
}

/// Where records go: the server's folder of JSON-lines files, or its CloudEvents HTTP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogSink {
    File,
    Http,
}

/// `[feedback]`: predictions are kept for the server's feedback window, so labels sent later are joined to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    pub task: FeedbackTask,
}

/// What a prediction is, read from the model's first output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackTask {
    /// An integer or boolean output is a label, a float output of two or more columns is class scores (the
    /// highest wins), a float output of one value per row is a regression.
    #[default]
    Auto,
    Classification,
    Regression,
}

fn all() -> f64 {
    100.0
}

fn default_max_record_bytes() -> usize {
    1 << 20
}

/// Largest record a model may allow: a record is held in memory whole before it is written.
const MAX_RECORD_BYTES_LIMIT: usize = 256 << 20;

impl LoggingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.percent) {
            return Err(format!("[logging] percent must be between 0 and 100, got {}", self.percent));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return Err(format!(
                "[logging] max_record_bytes must be between 1 and {MAX_RECORD_BYTES_LIMIT}, got {}",
                self.max_record_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_needs_a_sink_and_sane_bounds() {
        let config: LoggingConfig = toml::from_str("sink = \"file\"").unwrap();
        assert_eq!((config.percent, config.mode, config.max_record_bytes), (100.0, LogMode::Both, 1 << 20));
        assert!(toml::from_str::<LoggingConfig>("percent = 5.0").is_err());
        assert!(toml::from_str::<LoggingConfig>("sink = \"kafka\"").is_err());
        let over: LoggingConfig = toml::from_str("sink = \"http\"\npercent = 150.0").unwrap();
        assert!(over.validate().unwrap_err().contains("between 0 and 100"));
        let none: LoggingConfig = toml::from_str("sink = \"http\"\nmax_record_bytes = 0").unwrap();
        assert!(none.validate().is_err());
        assert!(LogMode::Request.inputs() && !LogMode::Request.outputs());
        assert!(!LogMode::Response.inputs() && LogMode::Both.outputs());
    }
}
