//! How a relaunched parent finds the children its earlier attempts started.
//!
//! # The rule
//!
//! A task's code is run again from the top when its attempt is relaunched
//! (after a crash of the runtime or of a node) or retried (after it
//! failed or timed out). Its `ctx.run` calls come again, and the children
//! they name may already exist: starting them again would run a charge,
//! an email or a write twice. So when attempt *k* of a parent asks to start
//! a child, the store hands back instead, if there is one, the **earliest
//! child of the same parent with the same task and the same input** that
//!
//! - an earlier attempt (`< k`) started or took over, and
//! - attempt *k* has not taken yet (each child is handed to one `ctx.run`
//!   per attempt: two identical calls get two children, in order), and
//! - has not failed or been canceled (those are started anew, as the task
//!   would expect of a child that failed).
//!
//! The child is then *taken* by attempt *k*, so that attempt *k + 1*, after
//! another crash, finds it the same way: adoption survives any number of
//! crashes, and a fan-out of width N has exactly N children however often
//! its parent is relaunched. Inputs are compared as JSON values (key order
//! and whitespace do not matter), found through an index on
//! [`input_fingerprint`] rather than by reading every child.
//!
//! Each store records, per child, the parent attempt that last took it
//! (`taken_by_attempt`) and the fingerprint of its input, and applies the
//! rule in the same transaction that would otherwise create the child.

use md5::{Digest, Md5};
use serde_json::Value;
use weft_protocol::payload::Json;

/// Whether a stored child's input is the input a call asks for: equal as
/// JSON values (key order and whitespace aside; `1` and `1.0` differ, as
/// they do to the task). Both stores confirm a fingerprint match with this,
/// so the rule cannot drift between them; a stored input that is not JSON
/// matches nothing.
pub fn same_input(stored: &str, input: &Json) -> bool {
    stored == input.as_str()
        || serde_json::from_str::<Value>(stored).is_ok_and(|v| v == input.to_value())
}

/// A 64-bit fingerprint of a JSON value, the same for equal values
/// whatever their key order or formatting: MD5 of the value's canonical
/// text (object keys sorted, no whitespace), first 8 bytes. Equal
/// fingerprints are confirmed by comparing the values, so a collision
/// costs a comparison, never a wrong adoption.
pub fn input_fingerprint(value: &Value) -> i64 {
    let mut text = String::new();
    canonical(value, &mut text);
    let digest = Md5::digest(text.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("MD5 has 16 bytes"))
}

/// Canonical JSON text: object keys sorted, numbers and strings as
/// serde_json writes them. Written out rather than relying on serde_json's
/// map type, whose order is a cargo feature (`preserve_order`) away from
/// changing.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_ignore_key_order_and_formatting() {
        let a: Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": 1}], "a": "é"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":"é","b":[1,{"x":1,"y":2}]}"#).unwrap();
        assert_eq!(input_fingerprint(&a), input_fingerprint(&b));
        let mut text = String::new();
        canonical(&a, &mut text);
        assert_eq!(text, r#"{"a":"é","b":[1,{"x":1,"y":2}]}"#);
    }

    #[test]
    fn different_inputs_have_different_fingerprints() {
        let values = [
            json!([1]),
            json!([2]),
            json!(["1"]),
            json!([1, 2]),
            json!([[1], 2]),
            json!({"x": 1}),
            json!({"x": 1.5}),
            json!([]),
            json!({}),
            json!([null]),
        ];
        let prints: std::collections::HashSet<_> = values.iter().map(input_fingerprint).collect();
        assert_eq!(prints.len(), values.len());
    }
}
