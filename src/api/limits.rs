//! The server's limits on what one inference request may ask for, checked before anything else is done with it.

use super::ApiError;
use super::pipeline::NamedTensor;
use crate::config::RequestLimits;

/// Refuses a request that asks for more than the server's limits, naming the limit.
pub(super) fn check_limits(limits: &RequestLimits, inputs: &[NamedTensor]) -> Result<(), ApiError> {
    let mut total: usize = 0;
    for input in inputs {
        let (tensor, name) = (&input.tensor, &input.name);
        let elements = tensor.element_count();
        if elements > limits.max_tensor_elements {
            return Err(ApiError::LimitExceeded(format!(
                "input '{name}' has {elements} elements, more than the limit of {} (--max-tensor-elements)",
                limits.max_tensor_elements
            )));
        }
        total = total.saturating_add(elements);
        if let Some(&rows) = tensor.shape().first()
            && rows > limits.max_request_rows
        {
            return Err(ApiError::LimitExceeded(format!(
                "input '{name}' has {rows} rows, more than the limit of {} (--max-request-rows)",
                limits.max_request_rows
            )));
        }
        if let Some(longest) = tensor.bytes_elements().map(<[u8]>::len).max()
            && longest > limits.max_bytes_element
        {
            return Err(ApiError::LimitExceeded(format!(
                "input '{name}' has a BYTES element of {longest} bytes, more than the limit of {} \
                 (--max-bytes-element)",
                limits.max_bytes_element
            )));
        }
    }
    if total > limits.max_request_elements {
        return Err(ApiError::LimitExceeded(format!(
            "the request's inputs have {total} elements, more than the limit of {} (--max-request-elements)",
            limits.max_request_elements
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::api::pipeline::zeros as input;
    use crate::tensor::{DataType, Tensor};

    #[test]
    fn limits_name_the_limit() {
        let limits = RequestLimits {
            max_tensor_elements: 8,
            max_request_elements: 12,
            max_request_rows: 3,
            max_bytes_element: 4,
        };
        assert!(check_limits(&limits, &[input("a", vec![3, 2])]).is_ok());
        let err = check_limits(&limits, &[input("a", vec![2, 5])]).unwrap_err();
        assert!(err.to_string().contains("--max-tensor-elements"), "{err}");
        let err = check_limits(&limits, &[input("a", vec![4, 1])]).unwrap_err();
        assert!(err.to_string().contains("--max-request-rows"), "{err}");
        let err = check_limits(&limits, &[input("a", vec![2, 4]), input("b", vec![1, 6])]).unwrap_err();
        assert!(err.to_string().contains("--max-request-elements"), "{err}");
        let mut data = Vec::new();
        for element in [&b"abcd"[..], b"abcde"] {
            crate::tensor::push_bytes_element(&mut data, element).unwrap();
        }
        let bytes =
            NamedTensor { name: "s".into(), tensor: Tensor::new(DataType::Bytes, vec![2], Bytes::from(data)).unwrap() };
        let err = check_limits(&limits, &[bytes]).unwrap_err();
        assert!(matches!(err, ApiError::LimitExceeded(_)) && err.to_string().contains("5 bytes"), "{err}");
    }
}
