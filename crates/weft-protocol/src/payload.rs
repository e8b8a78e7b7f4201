//! Task inputs and outputs as they travel: JSON, base64-wrapped on the
//! task socket.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("task input must be a JSON array (positional) or object (named), got {0}")]
    InputShape(&'static str),
}

/// A task's input: positional arguments (a JSON array) or named ones (an
/// object). Anything else is refused at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInput(Value);

impl TaskInput {
    /// Accepts an array or an object; names the offending JSON type otherwise.
    pub fn new(value: Value) -> Result<Self, PayloadError> {
        match value {
            Value::Array(_) | Value::Object(_) => Ok(Self(value)),
            other => Err(PayloadError::InputShape(json_type_name(&other))),
        }
    }

    /// An empty positional input, `[]`.
    pub fn empty() -> Self {
        Self(Value::Array(Vec::new()))
    }

    /// The JSON value (always an array or an object).
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// Consumes the input, returning its JSON value.
    pub fn into_value(self) -> Value {
        self.0
    }

    /// Decodes the base64 JSON a task socket carries. An empty string is an
    /// empty positional input, as the SDKs treat it.
    pub fn from_base64(encoded: &str) -> Result<Self, PayloadError> {
        if encoded.is_empty() {
            return Ok(Self::empty());
        }
        Self::new(decode_base64_json(encoded)?)
    }

    /// Encodes as base64 JSON for the task socket.
    pub fn to_base64(&self) -> String {
        encode_base64_json(&self.0)
    }
}

/// The JSON type's name, for error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Base64 (standard alphabet, padded) of a value's compact JSON.
pub fn encode_base64_json(value: &Value) -> String {
    STANDARD.encode(serde_json::to_vec(value).expect("a JSON value always serialises"))
}

/// Decodes base64 JSON.
pub fn decode_base64_json(encoded: &str) -> Result<Value, PayloadError> {
    let bytes = STANDARD.decode(encoded.trim())?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Decodes base64 without parsing, for size checks before the parse.
pub fn decode_base64(encoded: &str) -> Result<Vec<u8>, PayloadError> {
    Ok(STANDARD.decode(encoded.trim())?)
}

/// Results travel as a JSON array. The Python SDK sends a list result as the
/// array itself and wraps anything else in a one-element array; a caller
/// reading one result takes the array's only element, else the array.
pub fn results_to_single(results: Value) -> Value {
    match results {
        Value::Array(mut items) if items.len() == 1 => items.pop().expect("one element"),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_accepts_arrays_and_objects_only() {
        assert!(TaskInput::new(json!([1, 2])).is_ok());
        assert!(TaskInput::new(json!({"a": 1})).is_ok());
        let err = TaskInput::new(json!(3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task input must be a JSON array (positional) or object (named), got a number"
        );
    }

    #[test]
    fn base64_round_trip_and_empty() {
        let input = TaskInput::new(json!([1, {"x": "é"}])).unwrap();
        assert_eq!(TaskInput::from_base64(&input.to_base64()).unwrap(), input);
        assert_eq!(TaskInput::from_base64("").unwrap(), TaskInput::empty());
        assert!(matches!(
            TaskInput::from_base64("!!"),
            Err(PayloadError::Base64(_))
        ));
    }

    #[test]
    fn single_result_unwraps_one_element_arrays() {
        assert_eq!(results_to_single(json!([5])), json!(5));
        assert_eq!(results_to_single(json!([1, 2])), json!([1, 2]));
        assert_eq!(results_to_single(json!([])), json!([]));
    }
}
