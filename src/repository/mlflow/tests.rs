use std::time::{Duration, UNIX_EPOCH};

use super::client::proxied_path;
use super::*;
use crate::repository::DeclaredTensor;
use crate::tensor::DataType;

/// An `MLmodel` as MLflow 3 writes it for `mlflow.onnx.log_model(..., signature=...)`: PyYAML folds the long
/// signature strings over several lines.
const MLMODEL: &str = r#"artifact_path: mlflow-artifacts:/0/models/m-c3796c683cc04588859d70a7edfe970f/artifacts
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_session_options: null
    onnx_version: 1.23.2
    providers:
    - CUDAExecutionProvider
    - CPUExecutionProvider
  python_function:
    data: model.onnx
    loader_module: mlflow.onnx
mlflow_version: 3.17.2
signature:
  inputs: '[{"name": "input", "type": "tensor", "tensor-spec": {"dtype": "float32",
    "shape": [-1, 4]}}]'
  outputs: '[{"name": "label", "type": "tensor", "tensor-spec": {"dtype": "int64",
    "shape": [-1]}}, {"name": "probabilities", "type": "tensor", "tensor-spec": {"dtype":
    "float32", "shape": [-1, 3]}}]'
  params: null
"#;

#[test]
fn mlmodel_signature_is_read() {
    let parsed = parse_mlmodel(MLMODEL).unwrap();
    assert_eq!(parsed.model_file, "model.onnx");
    let declared = parsed.declared.unwrap();
    let tensor = |name: &str, datatype, shape: &[i64]| DeclaredTensor {
        name: Some(name.to_owned()),
        datatype,
        shape: shape.to_vec(),
    };
    assert_eq!(declared.inputs, [tensor("input", DataType::Fp32, &[-1, 4])]);
    assert_eq!(
        declared.outputs,
        [tensor("label", DataType::Int64, &[-1]), tensor("probabilities", DataType::Fp32, &[-1, 3])]
    );
}

#[test]
fn mlmodel_without_onnx_or_with_tricks_is_refused() {
    let sklearn = "flavors:\n  sklearn:\n    pickled_model: model.pkl\n  python_function: {}\n";
    let err = parse_mlmodel(sklearn).unwrap_err();
    assert!(err.contains("[python_function, sklearn]"), "{err}");
    for bad in ["../../etc/passwd", "sub/model.onnx", ".."] {
        let text = format!("flavors:\n  onnx:\n    data: '{bad}'\n");
        assert!(parse_mlmodel(&text).unwrap_err().contains("not a plain file name"), "{bad}");
    }
    assert!(parse_mlmodel("flavors: [").is_err());
    // A column-based signature names no tensors: nothing to compare.
    let columns =
        "flavors:\n  onnx:\n    data: model.onnx\nsignature:\n  inputs: '[{\"name\": \"x\", \"type\": \"double\"}]'\n";
    assert_eq!(parse_mlmodel(columns).unwrap().declared, None);
    let no_signature = "flavors:\n  onnx:\n    data: m.onnx\n";
    assert_eq!(parse_mlmodel(no_signature).unwrap(), MlModel { model_file: "m.onnx".into(), declared: None });
}

#[test]
fn artifact_uris_map_to_the_proxy() {
    assert_eq!(proxied_path("mlflow-artifacts:/0/models/m-1/artifacts").unwrap(), ["0", "models", "m-1", "artifacts"]);
    assert_eq!(
        proxied_path("mlflow-artifacts://mlflow:5000/3/abc/artifacts/model").unwrap(),
        ["3", "abc", "artifacts", "model"]
    );
    assert!(proxied_path("s3://bucket/0/models").unwrap_err().contains("artifact proxy"));
    assert!(proxied_path("mlflow-artifacts:/0/../../secret").is_err());
    assert!(proxied_path("mlflow-artifacts:/").is_err());
}

/// Signed by MLflow 3.17's own `mlflow.webhooks.delivery._generate_hmac_signature`.
const PAYLOAD: &str = r#"{"entity": "model_version_alias", "action": "created", "timestamp": "2026-11-27T17:00:00+00:00", "data": {"name": "iris", "alias": "champion", "version": "2"}}"#;
const SIGNATURE: &str = "v1,W9JJH5Fx6UeyKmxGM0NcTmSjr3sTgv63P7ZuoPyRtE8=";

#[test]
fn webhook_signed_by_mlflow_is_accepted() {
    let sent = UNIX_EPOCH + Duration::from_secs(1_795_800_000);
    let verify = |secret: &str, delivery, timestamp, signature, body: &str, now| {
        verify_webhook(secret.as_bytes(), delivery, timestamp, signature, body.as_bytes(), now)
    };
    let event =
        verify("s3cret-webhook-key", Some("0b9a7c1e-delivery"), Some("1795800000"), Some(SIGNATURE), PAYLOAD, sent)
            .unwrap();
    assert_eq!(
        event,
        WebhookEvent { entity: "model_version_alias".into(), action: "created".into(), model: Some("iris".into()) }
    );
    let ok = |secret, delivery, timestamp, body, now| {
        verify(secret, Some(delivery), Some(timestamp), Some(SIGNATURE), body, now)
    };
    assert_eq!(ok("wrong-secret", "0b9a7c1e-delivery", "1795800000", PAYLOAD, sent), Err(WebhookError::BadSignature));
    assert_eq!(
        ok("s3cret-webhook-key", "other-delivery", "1795800000", PAYLOAD, sent),
        Err(WebhookError::BadSignature)
    );
    let tampered = PAYLOAD.replace("champion", "challenger");
    assert_eq!(
        ok("s3cret-webhook-key", "0b9a7c1e-delivery", "1795800000", &tampered, sent),
        Err(WebhookError::BadSignature)
    );
    let late = sent + WEBHOOK_MAX_SKEW + Duration::from_secs(1);
    assert_eq!(ok("s3cret-webhook-key", "0b9a7c1e-delivery", "1795800000", PAYLOAD, late), Err(WebhookError::Stale));
    assert_eq!(
        verify("s3cret-webhook-key", Some("0b9a7c1e-delivery"), Some("1795800000"), None, PAYLOAD, sent),
        Err(WebhookError::MissingHeader(WEBHOOK_SIGNATURE_HEADER))
    );
    assert_eq!(
        verify("s3cret-webhook-key", Some("d"), Some("1795800000"), Some("v1,not base64!"), PAYLOAD, sent),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn model_entries_are_checked() {
    let model = |registered: &str, serve_as: &str, aliases: &[&str]| MlflowModel {
        registered: registered.into(),
        serve_as: serve_as.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        config: Arc::new(ModelConfig::default()),
    };
    assert!(check_model(&model("iris", "iris", &["champion", "latest"])).is_ok());
    assert!(check_model(&model("My Model", "My Model", &["champion"])).unwrap_err().contains("serve_as"));
    assert!(check_model(&model("My Model", "my-model", &["champion"])).is_ok());
    assert!(check_model(&model("iris", "iris", &[])).is_err());
    assert!(check_model(&model("iris", "iris", &["a/b"])).is_err());
}
