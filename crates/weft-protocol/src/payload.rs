//! Task inputs and outputs as they travel: JSON, base64-wrapped on the
//! task socket.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

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

/// JSON kept as the text it was written in: key order, number formatting
/// and all. Render stores payloads (inputs, results) as the bytes an SDK
/// sent and hands them back the same; so does weft, end to end, where a
/// parse and re-serialisation would reorder keys or reformat numbers.
///
/// It serialises as the JSON it holds (not as a string), and compares by
/// value: `[1, 2]` equals `[1,2]`.
#[derive(Clone)]
pub struct Json(Arc<RawValue>);

impl Json {
    /// Checks that `text` is JSON and keeps it as it is.
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        Ok(Self(Arc::from(RawValue::from_string(text.into())?)))
    }

    /// Checks that `bytes` are JSON (UTF-8) and keeps them as they are.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let text: &RawValue = serde_json::from_slice(bytes)?;
        Ok(Self(Arc::from(text.to_owned())))
    }

    /// A value's compact JSON.
    pub fn from_value(value: &Value) -> Self {
        Self::parse(value.to_string()).expect("a JSON value always serialises to JSON")
    }

    /// `[]`.
    pub fn empty_array() -> Self {
        Self::parse("[]").expect("[] is JSON")
    }

    /// The text, as written.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value (parsed anew each time).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).expect("checked JSON parses")
    }

    /// The JSON type's name (`an array`, `an object`, ...), read from its
    /// first character.
    pub fn type_name(&self) -> &'static str {
        match self.as_str().trim_start().as_bytes().first() {
            Some(b'[') => "an array",
            Some(b'{') => "an object",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        }
    }

    /// A JSON array of results: this one if it is an array, else a
    /// one-element array holding it, as the SDKs send a single result.
    pub fn into_results(self) -> Self {
        if self.type_name() == "an array" {
            self
        } else {
            Self::parse(format!("[{}]", self.as_str())).expect("an array of JSON is JSON")
        }
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Self(Arc::from(raw)))
    }
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

/// Base64 of a payload's text, as written.
pub fn encode_base64_text(json: &Json) -> String {
    STANDARD.encode(json.as_str())
}

/// A task input as the task socket carries it: base64 of a JSON array or
/// object, kept as written; an empty string is `[]`, as the SDKs treat it.
pub fn decode_input(encoded: &str) -> Result<Json, PayloadError> {
    if encoded.is_empty() {
        return Ok(Json::empty_array());
    }
    let input = Json::parse_bytes(&decode_base64(encoded)?)?;
    check_input_shape(&input)?;
    Ok(input)
}

/// A task input is a JSON array (positional) or object (named).
pub fn check_input_shape(input: &Json) -> Result<(), PayloadError> {
    match input.type_name() {
        "an array" | "an object" => Ok(()),
        other => Err(PayloadError::InputShape(other)),
    }
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
    fn json_keeps_its_text_and_compares_by_value() {
        let text = r#"{"unicode": "é", "nested": {"b": 1, "a": 2}, "big": 123456789012345678901234567890, "f": 1.50}"#;
        let json = Json::parse(text).unwrap();
        assert_eq!(json.as_str(), text, "kept as written");
        let wrapped = serde_json::to_string(&serde_json::json!({"results": 0})).unwrap();
        assert_eq!(wrapped, r#"{"results":0}"#);
        #[derive(Serialize, Deserialize)]
        struct Holder {
            results: Json,
        }
        let out = serde_json::to_string(&Holder {
            results: json.clone(),
        })
        .unwrap();
        assert_eq!(
            out,
            format!(r#"{{"results":{text}}}"#),
            "embedded as JSON, not a string"
        );
        let back: Holder = serde_json::from_str(&out).unwrap();
        assert_eq!(back.results.as_str(), text);
        assert_eq!(
            Json::parse("[1, 2]").unwrap(),
            Json::parse("[1,2]").unwrap()
        );
        assert_eq!(Json::parse("[1]").unwrap(), json!([1]));
        assert!(Json::parse("{nope").is_err());
        assert_eq!(Json::parse(" 7").unwrap().into_results().as_str(), "[7]");
        assert_eq!(Json::parse("[7]").unwrap().into_results().as_str(), "[7]");
        assert_eq!(Json::parse("\"s\"").unwrap().type_name(), "a string");
    }

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
