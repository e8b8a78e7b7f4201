//! A task whose own work is a span of the attempt's trace (the SDK's
//! `otel` feature: each task runs in its attempt's trace context, from
//! `TRACEPARENT`), exported over OTLP/HTTP by the OpenTelemetry SDK to the
//! endpoint weft was given (`OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! ```text
//! cargo build -p weft-workflows --example traced --features otel
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 weft dev -- target/debug/examples/traced
//! weft run traced_square '[7]'
//! ```

use opentelemetry::trace::{Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use weft::{TaskContext, TaskResult, Workflows};

async fn traced_square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
    // A span of the task's own, under its attempt's span.
    let tracer = opentelemetry::global::tracer_provider().tracer("traced-example");
    Ok(tracer.in_span("squaring in Rust", |_| x * x))
}

fn main() {
    // Batched on a thread of the SDK's own, sent before the process ends.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .expect("an OTLP exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let mut app = Workflows::new();
    app.task("traced_square", traced_square);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(app.start());
    // Sends the spans still queued before the process ends.
    let _ = provider.shutdown();
    if let Err(err) = outcome {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
