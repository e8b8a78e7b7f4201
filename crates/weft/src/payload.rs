//! How typed inputs and outputs map onto the JSON shapes on the wire.
//!
//! Inputs travel as a JSON array (positional arguments) or a JSON object
//! (named arguments). Results travel as a JSON array: the Python SDK sends a
//! list result as the array itself and wraps anything else in a one-element
//! array, and a caller reading one result takes the array's only element.
//! These functions apply those rules to serde types, in both directions.

use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;

/// Serialises a task's input into its wire shape.
///
/// Arrays (tuples, `Vec`s, slices) and objects (structs, maps) travel as they
/// are; `()` becomes `[]`; any other value is one positional argument,
/// `[value]`.
pub fn encode_input<I: Serialize + ?Sized>(input: &I) -> Result<Value, serde_json::Error> {
    Ok(match serde_json::to_value(input)? {
        value @ (Value::Array(_) | Value::Object(_)) => value,
        Value::Null => Value::Array(Vec::new()),
        other => Value::Array(vec![other]),
    })
}

/// Reads a wire input (positional array or named object) as a task's typed
/// input.
///
/// The value is first read as `I` directly: a tuple reads an array, a
/// serde-derived struct reads an object by field name or an array in field
/// order. When that fails, the input is read as a single argument: the only
/// element of a one-element array, the only value of a one-entry object, or
/// `()` for an empty input. So a task taking an `i64` accepts `[3]` and
/// `{"x": 3}` alike.
pub fn decode_input<I: DeserializeOwned>(value: &Value) -> Result<I, serde_json::Error> {
    let direct = match read::<I>(value) {
        Ok(input) => return Ok(input),
        Err(err) => err,
    };
    let single = match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        Value::Object(map) if map.len() == 1 => map.values().next().expect("one entry"),
        Value::Array(items) if items.is_empty() => &Value::Null,
        Value::Object(map) if map.is_empty() => &Value::Null,
        _ => return Err(de::Error::custom(direct)),
    };
    let as_single = match read::<I>(single) {
        Ok(input) => return Ok(input),
        Err(err) => err,
    };
    // Say first what the caller most likely meant: a lone object or array
    // (`[{"n": 1}]`) was meant as the argument itself.
    Err(de::Error::custom(
        if single.is_object() || single.is_array() {
            format!("{as_single} (read as positional arguments: {direct})")
        } else {
            format!("{direct} (read as a single argument: {as_single})")
        },
    ))
}

/// Reads `value` as `I`; an error names where in the value it is
/// (`num_shards: invalid type: …`).
fn read<I: DeserializeOwned>(value: &Value) -> Result<I, String> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let err = err.into_inner();
        if path == "." {
            err.to_string()
        } else {
            format!("{path}: {err}")
        }
    })
}

/// Wraps a task's return value into the JSON array of results: a list result
/// is the array itself, anything else is wrapped in a one-element array (the
/// Python SDK's rule).
pub fn encode_output<O: Serialize + ?Sized>(output: &O) -> Result<Value, serde_json::Error> {
    Ok(match serde_json::to_value(output)? {
        value @ Value::Array(_) => value,
        other => Value::Array(vec![other]),
    })
}

/// Reads a run's JSON array of results as a typed value.
///
/// The Python SDK's rule comes first: a one-element array is read as its only
/// element. When that does not fit `O` (a task that returned a one-element
/// list), the whole array is read instead.
pub fn decode_output<O: DeserializeOwned>(results: &Value) -> Result<O, serde_json::Error> {
    match results {
        Value::Array(items) if items.len() == 1 => O::deserialize(&items[0])
            .or_else(|single_err| O::deserialize(results).map_err(|_| single_err)),
        other => O::deserialize(other),
    }
}

/// The field names of a serde-derived struct input, in declaration order;
/// `None` for tuples, scalars and maps, whose parameter names serde does not
/// know. Used to report parameter names at registration.
pub(crate) fn struct_field_names<I: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    // The probe always ends in an error once it has seen (or not seen) the
    // struct's field list; the error carries nothing.
    let _ = I::deserialize(FieldProbe(&mut fields));
    fields
}

/// A deserializer that answers nothing and records the field list serde
/// passes to `deserialize_struct`.
struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe done")
    }
}

impl std::error::Error for ProbeDone {}

impl de::Error for ProbeDone {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        ProbeDone
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.0 = Some(fields);
        Err(ProbeDone)
    }

    // A newtype around a struct, or an `Option` of one, names the inner
    // struct's fields.
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeDone> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AddArgs {
        a: i64,
        b: i64,
    }

    #[test]
    fn inputs_encode_positionally_or_by_name() {
        assert_eq!(encode_input(&(3,)).unwrap(), json!([3]));
        assert_eq!(encode_input(&(1, "x")).unwrap(), json!([1, "x"]));
        assert_eq!(encode_input(&3).unwrap(), json!([3]));
        assert_eq!(encode_input(&"hi").unwrap(), json!(["hi"]));
        assert_eq!(encode_input(&()).unwrap(), json!([]));
        assert_eq!(encode_input(&vec![1, 2]).unwrap(), json!([1, 2]));
        assert_eq!(
            encode_input(&AddArgs { a: 1, b: 2 }).unwrap(),
            json!({"a": 1, "b": 2})
        );
    }

    #[test]
    fn a_struct_input_reads_named_and_positional() {
        let want = AddArgs { a: 1, b: 2 };
        assert_eq!(
            decode_input::<AddArgs>(&json!({"a": 1, "b": 2})).unwrap(),
            want
        );
        assert_eq!(decode_input::<AddArgs>(&json!([1, 2])).unwrap(), want);
        // A struct passed as the only positional argument.
        assert_eq!(
            decode_input::<AddArgs>(&json!([{"a": 1, "b": 2}])).unwrap(),
            want
        );
    }

    #[test]
    fn tuples_read_positional_inputs() {
        assert_eq!(
            decode_input::<(i64, String)>(&json!([1, "x"])).unwrap(),
            (1, "x".to_string())
        );
        assert_eq!(decode_input::<(i64,)>(&json!([3])).unwrap(), (3,));
        assert!(decode_input::<(i64, i64)>(&json!([3])).is_err());
    }

    #[test]
    fn a_single_argument_reads_from_one_element_inputs() {
        assert_eq!(decode_input::<i64>(&json!([3])).unwrap(), 3);
        assert_eq!(decode_input::<i64>(&json!({"x": 3})).unwrap(), 3);
        assert_eq!(
            decode_input::<Vec<i64>>(&json!([[1, 2, 3]])).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            decode_input::<Vec<i64>>(&json!([1, 2, 3])).unwrap(),
            vec![1, 2, 3]
        );
        decode_input::<()>(&json!([])).unwrap();
        decode_input::<()>(&json!({})).unwrap();
    }

    #[test]
    fn input_errors_say_what_was_expected() {
        let err = decode_input::<i64>(&json!(["a"])).unwrap_err().to_string();
        assert!(err.contains("expected i64"), "{err}");
        assert!(err.contains("single argument"), "{err}");
        let err = decode_input::<AddArgs>(&json!({"a": 1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `b`"), "{err}");
        // A lone object meant as the argument: its own error comes first,
        // naming the field.
        let err = decode_input::<AddArgs>(&json!([{"a": 1, "b": "two"}]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("b: invalid type: string \"two\", expected i64"),
            "{err}"
        );
    }

    #[test]
    fn outputs_wrap_non_lists_in_one_element_arrays() {
        assert_eq!(encode_output(&9).unwrap(), json!([9]));
        assert_eq!(encode_output(&vec![1, 2]).unwrap(), json!([1, 2]));
        assert_eq!(encode_output(&()).unwrap(), json!([null]));
        assert_eq!(encode_output(&json!({"k": 1})).unwrap(), json!([{"k": 1}]));
        assert_eq!(encode_output(&(1, 2)).unwrap(), json!([1, 2]));
    }

    #[test]
    fn results_unwrap_one_element_arrays() {
        assert_eq!(decode_output::<i64>(&json!([9])).unwrap(), 9);
        assert_eq!(decode_output::<Value>(&json!([9])).unwrap(), json!(9));
        assert_eq!(
            decode_output::<Value>(&json!([1, 2])).unwrap(),
            json!([1, 2])
        );
        // A task that returned a one-element list: the element does not fit
        // `Vec`, so the whole array is read.
        assert_eq!(decode_output::<Vec<i64>>(&json!([5])).unwrap(), vec![5]);
        assert_eq!(
            decode_output::<Vec<Vec<i64>>>(&json!([[1, 2]])).unwrap(),
            vec![vec![1, 2]]
        );
        decode_output::<()>(&json!([null])).unwrap();
        assert_eq!(
            decode_output::<Vec<i64>>(&json!([])).unwrap(),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn struct_inputs_name_their_parameters() {
        assert_eq!(struct_field_names::<AddArgs>(), Some(&["a", "b"][..]));
        assert_eq!(
            struct_field_names::<Option<AddArgs>>(),
            Some(&["a", "b"][..])
        );
        assert_eq!(struct_field_names::<(i64, i64)>(), None);
        assert_eq!(struct_field_names::<i64>(), None);
    }
}
