//! A payload-log record and its encodings: a JSON line for the file sink, and the v2 JSON request and response
//! bodies of the HTTP sink's CloudEvents.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::tensor::{DataType, JsonData, Tensor};

/// One answered request, as the request path hands it over: tensors share the request's and the answer's bytes,
/// and nothing is encoded until the sink's thread takes it.
#[derive(Debug)]
pub struct PayloadRecord {
    pub id: String,
    pub time: SystemTime,
    pub model: String,
    pub version: u64,
    pub variant: Option<Arc<str>>,
    /// From the request's arrival to its answer.
    pub latency: Duration,
    /// `None` when the model's mode leaves the inputs out.
    pub inputs: Option<Vec<(String, Tensor)>>,
    /// `None` when the model's mode leaves the outputs out.
    pub outputs: Option<Vec<(String, Tensor)>>,
    /// Inputs left out by the model's exclusions.
    pub omitted_inputs: Vec<String>,
    /// A record whose encoding is larger than this is dropped.
    pub max_bytes: usize,
}

#[derive(Serialize)]
struct JsonTensor<'a> {
    name: &'a str,
    datatype: DataType,
    shape: &'a [usize],
    data: JsonData<'a>,
}

fn tensors(list: &[(String, Tensor)]) -> Vec<JsonTensor<'_>> {
    list.iter()
        .map(|(name, tensor)| JsonTensor {
            name,
            datatype: tensor.dtype(),
            shape: tensor.shape(),
            data: JsonData(tensor),
        })
        .collect()
}

#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    time: String,
    model: &'a str,
    version: String,
    variant: Option<&'a str>,
    latency_ms: f64,
    inputs: Option<Vec<JsonTensor<'a>>>,
    outputs: Option<Vec<JsonTensor<'a>>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    omitted_inputs: &'a [String],
}

/// The body of an `org.kubeflow.serving.inference.request` event: the v2 request as the model received it.
#[derive(Serialize)]
struct RequestBody<'a> {
    id: &'a str,
    inputs: Vec<JsonTensor<'a>>,
}

/// The body of an `org.kubeflow.serving.inference.response` event: the v2 answer.
#[derive(Serialize)]
struct ResponseBody<'a> {
    model_name: &'a str,
    model_version: String,
    id: &'a str,
    outputs: Vec<JsonTensor<'a>>,
}

impl PayloadRecord {
    /// The record as one JSON line, newline included.
    pub fn line(&self) -> Vec<u8> {
        let line = Line {
            id: &self.id,
            time: format_time(self.time),
            model: &self.model,
            version: self.version.to_string(),
            variant: self.variant.as_deref(),
            latency_ms: self.latency.as_secs_f64() * 1000.0,
            inputs: self.inputs.as_deref().map(tensors),
            outputs: self.outputs.as_deref().map(tensors),
            omitted_inputs: &self.omitted_inputs,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The request event's body, when the record holds the inputs.
    pub fn request_body(&self) -> Option<Vec<u8>> {
        let inputs = self.inputs.as_deref()?;
        serde_json::to_vec(&RequestBody { id: &self.id, inputs: tensors(inputs) }).ok()
    }

    /// The response event's body, when the record holds the outputs.
    pub fn response_body(&self) -> Option<Vec<u8>> {
        let outputs = self.outputs.as_deref()?;
        let body = ResponseBody {
            model_name: &self.model,
            model_version: self.version.to_string(),
            id: &self.id,
            outputs: tensors(outputs),
        };
        serde_json::to_vec(&body).ok()
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-12-04T18:38:21.042Z`.
pub fn format_time(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PayloadRecord {
        let x =
            Tensor::new(DataType::Fp32, vec![1, 2], bytes::Bytes::from([1.5f32, -2.0].map(f32::to_le_bytes).concat()))
                .unwrap();
        let label = Tensor::new(DataType::Int64, vec![1], bytes::Bytes::from(2i64.to_le_bytes().to_vec())).unwrap();
        PayloadRecord {
            id: "r-1".into(),
            time: UNIX_EPOCH + Duration::from_millis(1_764_873_501_042),
            model: "iris".into(),
            version: 3,
            variant: Some("canary".into()),
            latency: Duration::from_micros(420),
            inputs: Some(vec![("X".into(), x)]),
            outputs: Some(vec![("label".into(), label)]),
            omitted_inputs: vec!["ssn".into()],
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(UNIX_EPOCH + Duration::from_millis(951_782_400_007)), "2000-02-29T00:00:00.007Z");
        assert_eq!(format_time(UNIX_EPOCH + Duration::from_secs(4_102_444_799)), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn a_line_holds_every_field_and_the_events_the_v2_bodies() {
        let record = record();
        let line: serde_json::Value = serde_json::from_slice(&record.line()).unwrap();
        assert_eq!(line["id"], "r-1");
        assert_eq!(line["time"], "2025-12-04T18:38:21.042Z");
        assert_eq!((line["version"].as_str(), line["variant"].as_str()), (Some("3"), Some("canary")));
        assert_eq!(line["inputs"][0]["data"], serde_json::json!([1.5, -2.0]));
        assert_eq!(line["outputs"][0]["datatype"], "INT64");
        assert_eq!(line["omitted_inputs"], serde_json::json!(["ssn"]));
        assert!((line["latency_ms"].as_f64().unwrap() - 0.42).abs() < 1e-9);
        let request: serde_json::Value = serde_json::from_slice(&record.request_body().unwrap()).unwrap();
        assert_eq!(request["inputs"][0]["shape"], serde_json::json!([1, 2]));
        let response: serde_json::Value = serde_json::from_slice(&record.response_body().unwrap()).unwrap();
        assert_eq!((response["model_name"].as_str(), response["model_version"].as_str()), (Some("iris"), Some("3")));
        let quiet = PayloadRecord { outputs: None, omitted_inputs: Vec::new(), ..record };
        let line: serde_json::Value = serde_json::from_slice(&quiet.line()).unwrap();
        assert!(line["outputs"].is_null() && line.get("omitted_inputs").is_none());
        assert!(quiet.response_body().is_none());
    }
}
