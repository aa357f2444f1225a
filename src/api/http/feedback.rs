//! `POST /v2/models/{model}/feedback`: ground truth for earlier requests, one record or a JSON array of them.

use axum::extract::State;
use axum::response::Response;

use super::body::{Keyed, ReadBody};
use super::routes::{PathParam, Routes};
use super::{AppState, json_body};
use crate::api::{self, ApiError, FeedbackRecord};

pub(super) fn routes(table: Routes<AppState>) -> Routes<AppState> {
    table.post("/v2/models/{model}/feedback", feedback)
}

async fn feedback(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    let records = parse(&body)?;
    Ok(json_body(&api::feedback(&state.gateway, &model, records)?))
}

/// One `{ "id", "target" }` record, or an array of them.
fn parse(body: &[u8]) -> Result<Vec<FeedbackRecord>, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::malformed(format!("the feedback is not JSON: {e}")))?;
    let records = match value {
        serde_json::Value::Array(_) => serde_json::from_value::<Vec<FeedbackRecord>>(value),
        value => serde_json::from_value::<FeedbackRecord>(value).map(|record| vec![record]),
    };
    records.map_err(|e| {
        ApiError::malformed(format!("feedback is {{\"id\": \"...\", \"target\": ...}} or an array of those: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_or_an_array() {
        assert_eq!(parse(br#"{"id": "a", "target": 1}"#).unwrap().len(), 1);
        assert_eq!(parse(br#"[{"id": "a", "target": 1}, {"id": "b", "target": [0, 2]}]"#).unwrap().len(), 2);
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"id": "a"}"#).unwrap_err().to_string().contains("target"));
        assert!(parse(br#"{"id": "a", "target": 1, "extra": 2}"#).is_err());
        assert!(parse(br#"[{"id": 5, "target": 1}]"#).is_err());
    }
}
