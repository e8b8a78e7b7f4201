//! Traces: every run tree as an OpenTelemetry trace, exported over OTLP
//! (http/protobuf) when the standard environment names an endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`);
//! off, and free, otherwise.
//!
//! A run is one span, named after its task, from its creation (its wait in
//! the queue included: a `started` event marks its first attempt) to its
//! end; its attempts are spans under it, with the node that ran each; a
//! subtask's span is under its parent run's. The ids come from the runs'
//! own (`weft_protocol::trace`), so the node that records a run's end
//! exports it whole, whichever nodes ran its attempts or its parent, and a
//! parent relaunched after a crash continues the same trace. Spans are
//! built from the stored records rather than timed in process, because a
//! run outlives any one process: that is why they are made as `SpanData`
//! and handed to the SDK's batch processor, not started through a tracer.
//!
//! Sampling follows `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`),
//! decided per trace (a trace id ratio is the same decision for every span
//! of a tree). The resource is the SDK's: `OTEL_SERVICE_NAME` (here
//! `weft` unless set) and `OTEL_RESOURCE_ATTRIBUTES`. Inputs and results
//! are never in spans.

use std::borrow::Cow;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanLinks,
    SpanProcessor,
};
use weft_protocol::trace::{SpanRef, attempt_span_id, run_span_id, trace_id};
use weft_store::{AttemptRecord, PendingRun, RunRecord, RunState};

/// The exporter and what decides which traces it sends.
pub(crate) struct Traces {
    processor: BatchSpanProcessor,
    sampler: Sampler,
    scope: InstrumentationScope,
    /// Input and results in run spans, cut to this many bytes; 0: never.
    payload_bytes: usize,
}

impl Traces {
    /// Traces as the environment configures them: `None` when no OTLP
    /// endpoint is named (or `OTEL_SDK_DISABLED=true`, or
    /// `OTEL_TRACES_EXPORTER=none`); an error names a setting weft cannot
    /// follow.
    pub(crate) fn from_env(payload_bytes: usize) -> Result<Option<Traces>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let named = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if !named || disabled {
            return Ok(None);
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".into());
        if protocol != "http/protobuf" {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: weft exports traces as http/protobuf only \
                 (a collector's OTLP/HTTP port, 4318 by default)"
            ));
        }
        let sampler = sampler_from_env(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        // Endpoint, headers and timeout: the exporter reads the standard
        // variables itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot export traces over OTLP: {e}"))?;
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("weft");
        }
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource.build());
        Ok(Some(Traces {
            processor,
            sampler,
            scope: InstrumentationScope::builder("weft")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            payload_bytes,
        }))
    }

    /// Whether the trace of `run`'s tree is sampled.
    fn sampled(&self, run: &RunRecord) -> bool {
        self.tree_sampled(&run.root_id, run.trace_parent.as_deref(), &run.task_name)
    }

    /// Whether the trace of the tree under `root_id` (started in
    /// `trace_parent`, if any) is sampled.
    fn tree_sampled(&self, root_id: &str, trace_parent: Option<&str>, task: &str) -> bool {
        let trace = TraceId::from_bytes(trace_id(root_id, trace_parent));
        let parent = trace_parent
            .and_then(SpanRef::parse)
            .map(|p| Context::new().with_remote_span_context(remote(&p)));
        let result =
            self.sampler
                .should_sample(parent.as_ref(), trace, task, &SpanKind::Internal, &[], &[]);
        result.decision == SamplingDecision::RecordAndSample
    }

    /// The `traceparent` an attempt's processes get (`TRACEPARENT`): its
    /// span, so that the task's own spans are under it.
    pub(crate) fn attempt_traceparent(&self, run: &RunRecord, number: u32) -> String {
        self.traceparent(
            &run.root_id,
            run.trace_parent.as_deref(),
            &run.id,
            &run.task_name,
            number,
        )
    }

    /// The `traceparent` of a pending run's next attempt.
    pub(crate) fn pending_traceparent(&self, run: &PendingRun) -> String {
        self.traceparent(
            &run.root_id,
            run.trace_parent.as_deref(),
            &run.id,
            &run.task_name,
            run.attempts + 1,
        )
    }

    /// Attempt `number` of run `run_id` (of `task`, in the tree under
    /// `root_id`) as a `traceparent`.
    fn traceparent(
        &self,
        root_id: &str,
        trace_parent: Option<&str>,
        run_id: &str,
        task: &str,
        number: u32,
    ) -> String {
        SpanRef {
            trace_id: trace_id(root_id, trace_parent),
            span_id: attempt_span_id(run_id, number),
            sampled: self.tree_sampled(root_id, trace_parent, task),
        }
        .traceparent()
    }

    /// Exports a run that ended, with its attempts.
    pub(crate) fn run_ended(&self, run: &RunRecord) {
        if !self.sampled(run) {
            return;
        }
        let trace = TraceId::from_bytes(trace_id(&run.root_id, run.trace_parent.as_deref()));
        let own = SpanId::from_bytes(run_span_id(&run.id));
        let (parent, remote_parent) = match (&run.parent_id, run.trace_parent.as_deref()) {
            (Some(parent), _) => (SpanId::from_bytes(run_span_id(parent)), false),
            (None, Some(client)) => match SpanRef::parse(client) {
                Some(p) => (SpanId::from_bytes(p.span_id), true),
                None => (SpanId::INVALID, false),
            },
            (None, None) => (SpanId::INVALID, false),
        };
        let end = run.completed_at.unwrap_or_else(Utc::now);
        let mut attributes = vec![
            KeyValue::new("weft.run.id", run.id.clone()),
            KeyValue::new("weft.task", run.task_name.clone()),
            KeyValue::new("weft.run.status", run.status.as_str()),
            KeyValue::new(
                "weft.run.retries",
                run.attempts
                    .iter()
                    .filter(|a| !a.interrupted)
                    .count()
                    .saturating_sub(1) as i64,
            ),
            KeyValue::new("weft.run.attempts", run.attempts.len() as i64),
            KeyValue::new("weft.root_run.id", run.root_id.clone()),
        ];
        if let Some(parent) = &run.parent_id {
            attributes.push(KeyValue::new("weft.parent_run.id", parent.clone()));
        }
        if let Some(version) = &run.task_version {
            attributes.push(KeyValue::new("weft.task.version", version.clone()));
        }
        if self.payload_bytes > 0 {
            attributes.push(KeyValue::new(
                "weft.run.input",
                cut(run.input.as_str(), self.payload_bytes),
            ));
            if let Some(output) = &run.output {
                attributes.push(KeyValue::new(
                    "weft.run.results",
                    cut(output.as_str(), self.payload_bytes),
                ));
            }
        }
        let mut events = Vec::new();
        if let Some(started) = run.started_at {
            events.push(Event::new("started", time(started), Vec::new(), 0));
        }
        let status = error_status(run.status, run.error.as_deref(), end, &mut events);
        self.processor.on_end(SpanData {
            start_time: time(run.created_at),
            end_time: time(end),
            attributes,
            events: span_events(events),
            status,
            ..self.span(
                context(trace, own),
                run.task_name.clone(),
                parent,
                remote_parent,
            )
        });
        for attempt in &run.attempts {
            self.attempt_ended(run, trace, own, attempt, end);
        }
    }

    fn attempt_ended(
        &self,
        run: &RunRecord,
        trace: TraceId,
        run_span: SpanId,
        attempt: &AttemptRecord,
        run_end: DateTime<Utc>,
    ) {
        let end = attempt.completed_at.unwrap_or(run_end);
        let mut attributes = vec![
            KeyValue::new("weft.run.id", run.id.clone()),
            KeyValue::new("weft.task", run.task_name.clone()),
            KeyValue::new("weft.attempt", i64::from(attempt.number)),
            KeyValue::new("weft.attempt.status", attempt.status.as_str()),
            KeyValue::new("weft.attempt.interrupted", attempt.interrupted),
        ];
        if let Some(node) = &attempt.node_id {
            attributes.push(KeyValue::new("weft.node.id", node.clone()));
        }
        if let Some(bytes) = attempt.usage.peak_memory_bytes {
            attributes.push(KeyValue::new(
                "weft.attempt.peak_memory_bytes",
                bytes as i64,
            ));
        }
        let mut events = Vec::new();
        let status = error_status(attempt.status, attempt.error.as_deref(), end, &mut events);
        let own = context(
            trace,
            SpanId::from_bytes(attempt_span_id(&run.id, attempt.number)),
        );
        let name = format!("{} attempt {}", run.task_name, attempt.number);
        self.processor.on_end(SpanData {
            start_time: time(attempt.started_at),
            end_time: time(end),
            attributes,
            events: span_events(events),
            status,
            ..self.span(own, name, run_span, false)
        });
    }

    /// A span of this name under `parent`, its times, attributes, events
    /// and status still to be given.
    fn span(&self, own: SpanContext, name: String, parent: SpanId, remote: bool) -> SpanData {
        SpanData {
            span_context: own,
            parent_span_id: parent,
            parent_span_is_remote: remote,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(name),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Sends what is queued, waiting at most the exporter's timeout.
    pub(crate) fn flush(&self) {
        if let Err(e) = self.processor.force_flush() {
            tracing::warn!("could not send the last traces: {e}");
        }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        let _ = self.processor.shutdown();
    }
}

/// The id of the trace `run`'s tree is, as the API and the dashboard show it.
pub(crate) fn trace_id_hex(run: &RunRecord) -> String {
    weft_protocol::trace::to_hex(&trace_id(&run.root_id, run.trace_parent.as_deref()))
}

/// The trace and span ids of a run (or of one of its attempts), as log
/// lines about it carry them.
pub(crate) fn log_ids(run: &RunRecord, attempt: Option<u32>) -> (String, String) {
    let span = match attempt {
        Some(n) => attempt_span_id(&run.id, n),
        None => run_span_id(&run.id),
    };
    (trace_id_hex(run), weft_protocol::trace::to_hex(&span))
}

/// A failed run or attempt: status ERROR, its message as an exception event.
fn error_status(
    state: RunState,
    error: Option<&str>,
    at: DateTime<Utc>,
    events: &mut Vec<Event>,
) -> Status {
    if state != RunState::Failed {
        return Status::Unset;
    }
    let message = error.unwrap_or("failed").to_string();
    events.push(Event::new(
        "exception",
        time(at),
        vec![KeyValue::new("exception.message", message.clone())],
        0,
    ));
    Status::error(message)
}

/// `text` cut to at most `max` bytes on a character boundary, `…` marking
/// the cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn span_events(events: Vec<Event>) -> SpanEvents {
    let mut out = SpanEvents::default();
    out.events = events;
    out
}

fn context(trace: TraceId, span: SpanId) -> SpanContext {
    SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn remote(parent: &SpanRef) -> SpanContext {
    let flags = if parent.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        flags,
        true,
        TraceState::default(),
    )
}

fn time(at: DateTime<Utc>) -> SystemTime {
    at.into()
}

/// `OTEL_TRACES_SAMPLER` and its argument, as the OpenTelemetry
/// specification defines them.
fn sampler_from_env(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
    let ratio = || -> Result<f64, String> {
        match arg {
            None => Ok(1.0),
            Some(a) => a
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG={a}: a ratio from 0 to 1")),
        }
    };
    Ok(
        match name.map(str::trim).unwrap_or("parentbased_always_on") {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
            }
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={other}: weft knows always_on, always_off, traceidratio \
                 and their parentbased_ forms"
                ));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_cut_on_a_character_boundary() {
        assert_eq!(cut("[1, 2]", 10), "[1, 2]");
        assert_eq!(cut("[\"héllo\"]", 4), "[\"h…");
        assert_eq!(cut("[\"é\"]", 3), "[\"…", "é is two bytes: not cut in half");
    }

    #[test]
    fn samplers_are_read_as_the_specification_names_them() {
        assert!(matches!(
            sampler_from_env(None, None),
            Ok(Sampler::ParentBased(_))
        ));
        assert!(matches!(
            sampler_from_env(Some("traceidratio"), Some("0.25")),
            Ok(Sampler::TraceIdRatioBased(r)) if r == 0.25
        ));
        assert!(sampler_from_env(Some("traceidratio"), Some("2")).is_err());
        let err = sampler_from_env(Some("jaeger_remote"), None).unwrap_err();
        assert!(err.contains("OTEL_TRACES_SAMPLER=jaeger_remote"), "{err}");
    }
}
