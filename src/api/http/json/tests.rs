use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::api::{ApiError, InferRequest, InferResponse, NamedTensor, SharedMemory};
use crate::tensor::{Tensor, push_bytes_element};

fn decode_json(json: &str) -> Result<InferRequest, ApiError> {
    decode_request(&Bytes::copy_from_slice(json.as_bytes()), None, &SharedMemory::default()).map(|(request, _)| request)
}

fn decode_one(json: &str) -> Result<Tensor, ApiError> {
    Ok(decode_json(json)?.inputs.remove(0).tensor)
}

fn input(datatype: &str, shape: &str, data: &str) -> String {
    format!(r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#)
}

#[test]
fn flat_and_nested_data_agree() {
    let flat = decode_one(&input("FP32", "[2,2]", "[1,2,3,4.5]")).unwrap();
    let nested = decode_one(&input("FP32", "[2,2]", "[[1,2],[3,4.5]]")).unwrap();
    assert_eq!(flat, nested);
    assert_eq!(&flat.data()[12..], 4.5f32.to_le_bytes());
}

#[test]
fn every_datatype_decodes_and_encodes() {
    let cases = [
        ("BOOL", "[true,false]"),
        ("UINT8", "[0,255]"),
        ("UINT16", "[0,65535]"),
        ("UINT32", "[0,4294967295]"),
        ("UINT64", "[0,18446744073709551615]"),
        ("INT8", "[-128,127]"),
        ("INT16", "[-32768,32767]"),
        ("INT32", "[-2147483648,2147483647]"),
        ("INT64", "[-9223372036854775808,9223372036854775807]"),
        ("FP32", "[-1.5,0.25]"),
        ("FP64", "[-1.5,1e300]"),
        ("BYTES", r#"["a","héllo"]"#),
    ];
    for (datatype, data) in cases {
        let tensor = decode_one(&input(datatype, "[2]", data)).unwrap();
        let response = InferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: None,
            outputs: vec![NamedTensor { name: "x".into(), tensor }],
            variant: None,
            cold_start: None,
        };
        let encoded = encode_response(&response, &OutputFormat::default()).unwrap();
        assert_eq!(encoded.header_length, None);
        let json: serde_json::Value = serde_json::from_slice(&encoded.body).unwrap();
        let expected: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(json["outputs"][0]["data"], expected, "{datatype}");
        assert_eq!(json["outputs"][0]["datatype"], datatype);
    }
}

#[test]
fn out_of_range_and_wrong_kinds_are_refused() {
    for (datatype, data) in [
        ("UINT8", "[256]"),
        ("INT8", "[-129]"),
        ("UINT64", "[-1]"),
        ("INT32", "[1.5]"),
        ("FP32", "[1e300]"),
        ("FP32", r#"["1"]"#),
        ("BOOL", "[1]"),
        ("BYTES", "[1]"),
    ] {
        let err = decode_one(&input(datatype, "[1]", data)).unwrap_err();
        assert!(matches!(err, ApiError::MalformedRequest(_)), "{datatype} {data}: {err}");
    }
}

#[test]
fn shape_and_data_must_agree() {
    let err = decode_one(&input("FP32", "[2,4]", "[1,2,3]")).unwrap_err();
    assert_eq!(err.to_string(), "input 'x' has shape [2, 4] but 3 data elements were given");
    let err = decode_one(&input("FP32", "[1,2]", "[1,2,3]")).unwrap_err();
    assert_eq!(err.to_string(), "input 'x' has shape [1, 2] but more than 2 data elements were given");
    let err = decode_one(&input("FP32", "[1]", "[[]]")).unwrap_err();
    assert_eq!(err.to_string(), "input 'x' has shape [1] but 0 data elements were given");
    assert!(decode_one(&input("FP32", "[1000000000000,4]", "[1,2,3,4]")).is_err());
    assert!(decode_one(&input("FP32", "[18446744073709551615,18446744073709551615]", "[1]")).is_err());
    assert!(decode_one(&input("FP32", "[1e12,4]", "[1]")).is_err());
    assert!(decode_one(&input("FP32", "[-1,4]", "[1]")).is_err());
    assert!(decode_one(&input("FP99", "[1]", "[1]")).is_err());
}

#[test]
fn malformed_json_is_refused() {
    for body in ["", "{", "[]", "{\"inputs\": 3}", "{\"inputs\":[{\"name\":\"x\"}]}", &"[".repeat(10_000)] {
        assert!(matches!(decode_json(body), Err(ApiError::MalformedRequest(_))), "{body:.40}");
    }
}

#[test]
fn outputs_id_and_timeout_are_read() {
    let body = r#"{"id":"42","inputs":[],"outputs":[{"name":"label","parameters":{"binary_data":false}}],
        "parameters":{"timeout":1500,"priority":1}}"#;
    let (request, format) =
        decode_request(&Bytes::copy_from_slice(body.as_bytes()), None, &SharedMemory::default()).unwrap();
    assert!(!format.binary("label"));
    assert_eq!(request.timeout, Some(Duration::from_micros(1500)));
    assert_eq!(request.id.as_deref(), Some("42"));
    assert_eq!(request.outputs, Some(vec!["label".to_owned()]));
}

#[test]
fn binary_inputs_and_outputs_round_trip() {
    let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
        {"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":13}},
        {"name":"j","shape":[1],"datatype":"INT32","data":[7]}],
        "outputs":[{"name":"x","parameters":{"binary_data":true}},{"name":"j"}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&1.5f32.to_le_bytes());
    body.extend_from_slice(&(-2.0f32).to_le_bytes());
    for s in ["abc", "de"] {
        push_bytes_element(&mut body, s.as_bytes()).unwrap();
    }
    let (request, format) =
        decode_request(&Bytes::from(body.clone()), Some(header.len()), &SharedMemory::default()).unwrap();
    assert_eq!(request.inputs[0].tensor.data(), &body[header.len()..header.len() + 8]);
    let strings: Vec<&[u8]> = request.inputs[1].tensor.bytes_elements().collect();
    assert_eq!(strings, [b"abc".as_slice(), b"de".as_slice()]);
    assert!(format.binary("x") && !format.binary("j"));

    let response = InferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id: None,
        outputs: request.inputs.into_iter().map(|i| NamedTensor { name: i.name, tensor: i.tensor }).collect(),
        variant: Some("b".into()),
        cold_start: None,
    };
    let encoded = encode_response(&response, &format).unwrap();
    let len = encoded.header_length.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&encoded.body[..len]).unwrap();
    assert_eq!(json["parameters"]["variant"], "b", "the variant that answered is a response parameter");
    assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(json["outputs"][0].get("data").is_none());
    assert_eq!(json["outputs"][1]["data"], serde_json::json!(["abc", "de"]));
    assert_eq!(&encoded.body[len..], &body[header.len()..header.len() + 8]);
}

#[test]
fn binary_sizes_must_add_up() {
    let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let with_tail = |tail: usize| {
        let mut body = header.to_vec();
        body.resize(header.len() + tail, 0);
        decode_request(&Bytes::from(body), Some(header.len()), &SharedMemory::default()).map(|_| ())
    };
    assert!(with_tail(8).is_ok());
    for tail in [4, 12] {
        assert!(matches!(with_tail(tail), Err(ApiError::MalformedRequest(_))), "{tail}");
    }
    assert!(decode_request(&Bytes::from_static(b"{}"), Some(100), &SharedMemory::default()).is_err());
    let wrong_size = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let mut body = wrong_size.to_vec();
    body.resize(wrong_size.len() + 8, 0);
    assert!(decode_request(&Bytes::from(body), Some(wrong_size.len()), &SharedMemory::default()).is_err());
}
