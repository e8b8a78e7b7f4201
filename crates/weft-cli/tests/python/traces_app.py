"""The app of weft's trace tests, on the official SDK: tasks that say
which TRACEPARENT they got, and one instrumented with the OpenTelemetry
SDK, whose own span continues its attempt's trace."""

import asyncio
import os
import time

from render.workflows import Retry, Workflows

app = Workflows()


@app.task
def traceparent(ctx) -> str:
    return os.environ.get("TRACEPARENT", "")


@app.task
async def traceparents(ctx, n: int) -> list:
    return list(await asyncio.gather(*[ctx.run(traceparent) for _ in range(n)]))


@app.task
def nap(ctx, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
async def naps(ctx, n: int, seconds: float) -> int:
    await asyncio.gather(*[ctx.run(nap, seconds) for _ in range(n)])
    return n


@app.task
def env_var(ctx, name: str) -> str:
    return os.environ.get(name, "")


@app.task(retry=Retry(max_retries=1, wait_duration_ms=10))
def fails_once(ctx, marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("the first attempt fails")
    return "second"


@app.task
async def parent_of_flaky(ctx, marker: str) -> str:
    return await ctx.run(fails_once, marker)


@app.task
def instrumented(ctx) -> str:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    # The three lines the docs show: continue the attempt's trace.
    parent = TraceContextTextMapPropagator().extract({"traceparent": os.environ["TRACEPARENT"]})
    with provider.get_tracer("traces_app").start_as_current_span("the task's own work", context=parent):
        pass
    provider.shutdown()
    return "traced"


if __name__ == "__main__":
    app.start()
