//! Server-Sent Events, as `GET /v1/task-runs/events` sends them: `event:`
//! and `data:` lines, a blank line ending each event.

use weft_protocol::api::TaskRunDetails;

use super::Error;

/// Event names that carry a run that ended. Render sends `task.completed`
/// whatever the outcome; the others are accepted for forward compatibility,
/// as the Python client does.
const RUN_ENDED_EVENTS: [&str; 4] = [
    "task.completed",
    "task.failed",
    "task.canceled",
    "task.succeeded",
];

/// One event: its name (`None` when it had no `event:` line) and its data
/// lines, joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into events. Chunks may end anywhere, even inside a
/// UTF-8 character: bytes wait in the buffer until their line is complete.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds one chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let line = &self.buffer[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.buffer.drain(..start);
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            return self.data.take().map(|data| SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None; // a comment, such as a keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {} // `id`, `retry` and unknown fields carry nothing we use
        }
        None
    }
}

/// The run an event carries, when it is an event of a run that ended.
pub(crate) fn run_ended(event: &SseEvent) -> Option<Result<TaskRunDetails, Error>> {
    let name = event.event.as_deref()?;
    if !RUN_ENDED_EVENTS.contains(&name) {
        return None;
    }
    Some(
        serde_json::from_str(&event.data).map_err(|err| Error::Decode {
            operation: "task run events",
            message: format!("{name} event: {err}"),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn details_json(id: &str, status: &str, error: Option<&str>) -> String {
        let mut v = json!({
            "id": id, "taskId": "tsk-1", "status": status, "parentTaskRunId": "",
            "rootTaskRunId": id, "retries": 0, "attempts": [],
            "results": [4], "input": [2],
        });
        if let Some(e) = error {
            v["error"] = json!(e);
        }
        v.to_string()
    }

    fn stream_text() -> String {
        format!(
            ": keep-alive\n\nevent: task.completed\ndata: {}\n\nevent: task.failed\r\ndata: {}\r\n\r\n",
            details_json("trn-é1", "completed", None),
            details_json("trn-2", "failed", Some("boom")),
        )
    }

    fn parse_in_chunks(bytes: &[u8], sizes: impl Fn(usize) -> usize) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let mut at = 0;
        let mut k = 0;
        while at < bytes.len() {
            let end = (at + sizes(k).max(1)).min(bytes.len());
            events.extend(parser.feed(&bytes[at..end]));
            at = end;
            k += 1;
        }
        events
    }

    #[test]
    fn events_survive_any_chunking() {
        let text = stream_text();
        let bytes = text.as_bytes();
        let whole = parse_in_chunks(bytes, |_| bytes.len());
        assert_eq!(whole.len(), 2);
        // One byte at a time splits the two-byte `é` and every `\r\n`.
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(parse_in_chunks(bytes, |_| size), whole, "chunks of {size}");
        }
        assert_eq!(parse_in_chunks(bytes, |k| (k * 13) % 17 + 1), whole);
        let runs: Vec<_> = whole
            .iter()
            .filter_map(run_ended)
            .map(Result::unwrap)
            .collect();
        assert_eq!(runs[0].run.id, "trn-é1");
        assert_eq!(runs[1].error.as_deref(), Some("boom"));
    }

    #[test]
    fn data_lines_join_and_other_events_are_skipped() {
        let mut parser = SseParser::default();
        let events = parser.feed(b"data: a\ndata:b\nid: 7\n\nevent: ping\ndata: {}\n\n");
        assert_eq!(
            events,
            [
                SseEvent {
                    event: None,
                    data: "a\nb".into()
                },
                SseEvent {
                    event: Some("ping".into()),
                    data: "{}".into()
                },
            ]
        );
        assert!(events.iter().all(|e| run_ended(e).is_none()));
        // An event still open at the end of the input yields nothing yet.
        assert!(parser.feed(b"event: task.completed\ndata: {}").is_empty());
    }

    #[test]
    fn bad_data_is_a_decode_error() {
        let event = SseEvent {
            event: Some("task.completed".into()),
            data: "{not json".into(),
        };
        let err = run_ended(&event).unwrap().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("task run events failed: unexpected response: task.completed event:"),
            "{err}"
        );
    }
}
