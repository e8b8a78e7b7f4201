//! Trace context: the W3C `traceparent` a run's trace continues, and the
//! ids weft gives a run tree's spans.
//!
//! A run tree is one trace. Its ids are derived from the runs' own ids, so
//! every node, and a node started again after a crash, names a run's span
//! the same way without storing it: the trace id is the root run's UUID
//! (`trn-0192…` has trace id `0192…`), or the trace of the `traceparent` a
//! client started the root run with; a run's span id and each attempt's
//! are the first eight bytes of a SHA-256 of the run id (and the attempt
//! number).

use sha2::{Digest, Sha256};

/// A span's place in a trace, as `traceparent` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanRef {
    /// A `traceparent` header's value (version 00); `None` unless it is
    /// well formed with ids that are not all zero.
    pub fn parse(traceparent: &str) -> Option<SpanRef> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let [version, trace, span, flags, ..] = parts[..] else {
            return None;
        };
        // Version ff is invalid; a later version may add fields after these.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.len() != 4) {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?;
        let span_id: [u8; 8] = hex(span)?;
        let [flags]: [u8; 1] = hex(flags)?;
        hex::<1>(version)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(SpanRef {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// As a `traceparent` value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }
}

/// The trace id of a run tree: that of the `traceparent` its root run was
/// started with, else the root run's UUID.
pub fn trace_id(root_id: &str, started_in: Option<&str>) -> [u8; 16] {
    if let Some(parent) = started_in.and_then(SpanRef::parse) {
        return parent.trace_id;
    }
    let uuid = root_id.strip_prefix("trn-").unwrap_or(root_id);
    match hex::<16>(uuid) {
        Some(id) if id != [0; 16] => id,
        _ => first_bytes(&Sha256::digest(root_id.as_bytes())),
    }
}

/// A run's span id.
pub fn run_span_id(run_id: &str) -> [u8; 8] {
    first_bytes(&Sha256::digest(run_id.as_bytes()))
}

/// The span id of attempt `number` of a run.
pub fn attempt_span_id(run_id: &str, number: u32) -> [u8; 8] {
    first_bytes(&Sha256::digest(format!("{run_id}/{number}").as_bytes()))
}

fn first_bytes<const N: usize>(digest: &[u8]) -> [u8; N] {
    digest[..N].try_into().expect("a SHA-256 is 32 bytes")
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex, as W3C trace context writes ids.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_is_read_and_written_as_w3c_says() {
        let parent = SpanRef::parse(PARENT).unwrap();
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parent.sampled);
        assert_eq!(parent.traceparent(), PARENT);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanRef::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(
            SpanRef::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
                .is_some()
        );
    }

    #[test]
    fn a_tree_s_ids_come_from_its_runs() {
        let root = "trn-0192f3a4b5c67d8e9f0a1b2c3d4e5f60";
        assert_eq!(
            to_hex(&trace_id(root, None)),
            "0192f3a4b5c67d8e9f0a1b2c3d4e5f60"
        );
        assert_eq!(
            to_hex(&trace_id(root, Some(PARENT))),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "a client's trace is continued"
        );
        assert_ne!(trace_id("not-a-uuid", None), [0; 16]);
        assert_eq!(
            run_span_id(root),
            run_span_id(root),
            "the same on every node"
        );
        assert_ne!(run_span_id(root), attempt_span_id(root, 1));
        assert_ne!(attempt_span_id(root, 1), attempt_span_id(root, 2));
    }
}
