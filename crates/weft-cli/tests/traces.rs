//! Traces: run trees exported over OTLP/HTTP to a real receiver on loopback
//! (`tests/python/otlp_receiver.py`, which decodes what arrives with the
//! official protobuf definitions), tasks of the official Python SDK, and
//! one of them instrumented with the OpenTelemetry SDK.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Options, Weft};
use serde_json::{Value, json};
use weft::client::Client;

/// The receiver, and the spans it wrote.
struct Receiver {
    child: Child,
    out: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.jsonl");
        let mut child = Command::new(common::python())
            .arg(python_dir().join("otlp_receiver.py"))
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let url = format!("http://127.0.0.1:{}", port.trim());
        Receiver {
            child,
            out,
            url,
            _dir: dir,
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of `trace`, once there are at least `n` of them.
    fn trace(&self, trace: &str, n: usize) -> Vec<Value> {
        common::wait_for(20, &format!("{n} spans of trace {trace}"), || {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect();
            (spans.len() >= n).then_some(spans)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// `weft dev` exporting to `receiver` (sent every 100 ms, not 5 s).
fn serve(receiver: &Receiver, app: Option<PathBuf>, args: &[&str]) -> Weft {
    let args: Vec<&str> = ["--quiet"].iter().chain(args).copied().collect();
    Weft::start_with(Options {
        args: &args,
        app,
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=secret-of-the-backend",
            ),
        ],
        ..Default::default()
    })
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// The trace id the API gives a run.
fn trace_of(client: &Client, rt: &tokio::runtime::Runtime, id: &str) -> String {
    let run = rt.block_on(client.get_task_run(id)).unwrap().run;
    run.trace_id.expect("runs say their trace")
}

#[test]
fn a_run_tree_is_one_trace_of_runs_and_their_attempts() {
    let receiver = Receiver::start();
    let weft = serve(&receiver, None, &[]);
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();

    // A fan-out of 5: six run spans, each with its attempt under it.
    let root = rt.block_on(client.run_task("fan_out", [5]).send()).unwrap();
    let trace = trace_of(&client, &rt, &root.run.id);
    assert_eq!(
        trace,
        root.run.id.trim_start_matches("trn-"),
        "a tree's trace id is its root run's UUID"
    );
    let spans = receiver.trace(&trace, 12);
    assert_eq!(spans.len(), 12, "6 runs, 6 attempts: {spans:#?}");
    let top = by_name(&spans, "fan_out");
    assert_eq!(top.len(), 1);
    let top = top[0];
    assert_eq!(
        top["parent_span_id"], "",
        "the root run's span is the trace's root"
    );
    assert_eq!(top["service"], "weft");
    assert_eq!(top["attributes"]["weft.run.id"], root.run.id.as_str());
    assert_eq!(top["attributes"]["weft.run.status"], "completed");
    assert!(
        top["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "started"),
        "the wait in the queue is visible: {top}"
    );
    let squares = by_name(&spans, "square");
    assert_eq!(squares.len(), 5);
    for square in &squares {
        assert_eq!(square["parent_span_id"], top["span_id"], "{square}");
    }
    for run in squares.iter().chain([&top]) {
        let name = format!("{} attempt 1", run["name"].as_str().unwrap());
        let attempt = by_name(&spans, &name)
            .into_iter()
            .find(|a| a["parent_span_id"] == run["span_id"])
            .unwrap_or_else(|| panic!("{name} under {run}"));
        assert_eq!(attempt["attributes"]["weft.attempt"], 1);
        assert!(
            attempt["attributes"]["weft.node.id"].is_string(),
            "{attempt}"
        );
        assert!(attempt["start"].as_u64() >= run["start"].as_u64());
        assert!(attempt["end"].as_u64() <= run["end"].as_u64());
    }

    // A retried run: two attempts, the first an error.
    let marker = tempfile::tempdir().unwrap();
    let flaky = rt
        .block_on(
            client
                .run_task("flaky", json!([marker.path().join("m"), 2]))
                .send(),
        )
        .unwrap();
    let spans = receiver.trace(&trace_of(&client, &rt, &flaky.run.id), 3);
    let run = by_name(&spans, "flaky")[0];
    assert_eq!(run["attributes"]["weft.run.retries"], 1);
    let first = by_name(&spans, "flaky attempt 1")[0];
    let second = by_name(&spans, "flaky attempt 2")[0];
    assert_eq!(first["status"], 2, "ERROR: {first}");
    assert!(
        first["status_message"]
            .as_str()
            .unwrap()
            .contains("attempt 1 failed on purpose")
    );
    assert_eq!(second["status"], 0);
    assert_eq!(run["status"], 0, "the run succeeded");

    // A failed run: status ERROR, the message as an exception event.
    let failed = rt
        .block_on(client.run_task("fail", ["boom"]).send())
        .unwrap_err();
    let id = match failed {
        weft::client::Error::TaskRunFailed { details, .. } => details.run.id,
        other => panic!("{other}"),
    };
    let spans = receiver.trace(&trace_of(&client, &rt, &id), 2);
    let run = by_name(&spans, "fail")[0];
    assert_eq!(run["status"], 2);
    let exception = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "exception")
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        exception["attributes"]["exception.message"]
            .as_str()
            .unwrap()
            .contains("boom")
    );

    // `weft runs show` prints the trace id.
    let shown = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["runs", "show", &root.run.id, "--url", &weft.url])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&format!("Trace     {trace}")),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
}

#[test]
fn task_processes_continue_their_attempt_s_trace() {
    let receiver = Receiver::start();
    // One at a time: the waiting children's processes start ahead of
    // their attempts (standbys), each for its own attempt.
    let weft = serve(
        &receiver,
        Some(python_dir().join("traces_app.py")),
        &["--max-concurrent", "1"],
    );
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();

    // Each child process gets TRACEPARENT: the trace's id, its attempt's span.
    let run = rt
        .block_on(client.run_task("traceparents", [4]).send())
        .unwrap();
    let trace = trace_of(&client, &rt, &run.run.id);
    let spans = receiver.trace(&trace, 10);
    let children = rt
        .block_on(client.list_task_runs(&weft::client::ListTaskRunsParams {
            root_task_run_id: Some(run.run.id.clone()),
            ..Default::default()
        }))
        .unwrap();
    let children: Vec<_> = children
        .iter()
        .map(|r| &r.task_run)
        .filter(|r| r.id != run.run.id)
        .collect();
    assert_eq!(children.len(), 4);
    for child in children {
        let details = rt.block_on(client.get_task_run(&child.id)).unwrap();
        let parent = details.results.to_value()[0].clone();
        let parts: Vec<&str> = parent.as_str().unwrap().split('-').collect();
        assert_eq!(parts.len(), 4, "{parent}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", trace.as_str(), "01"));
        let attempt = spans
            .iter()
            .find(|s| {
                s["name"] == "traceparent attempt 1"
                    && s["attributes"]["weft.run.id"] == child.id.as_str()
            })
            .unwrap_or_else(|| panic!("no attempt span of {} in {spans:#?}", child.id));
        assert_eq!(
            attempt["span_id"], parts[2],
            "{}'s process has its own attempt's span",
            child.id
        );
    }
    let metrics = rt.block_on(async {
        reqwest::get(format!("{}/metrics", weft.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let standby = metrics
        .lines()
        .find(|l| l.starts_with("weft_standby_attempts_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(
        standby > 0,
        "some attempts ran on processes started ahead: {metrics}"
    );
    // The exporter's endpoint reaches task processes (their own SDK sends
    // there); its headers, which hold the backend's key, do not.
    let var = |name: &str| {
        rt.block_on(client.run_task("env_var", [name]).send())
            .unwrap()
            .results
            .to_value()[0]
            .clone()
    };
    assert_eq!(var("OTEL_EXPORTER_OTLP_ENDPOINT"), receiver.url.as_str());
    assert_eq!(var("OTEL_EXPORTER_OTLP_HEADERS"), "");

    // The task's own span, exported by the OpenTelemetry SDK in the task
    // process, is under its attempt's span.
    let traced = rt
        .block_on(client.run_task("instrumented", json!([])).send())
        .unwrap();
    let trace = trace_of(&client, &rt, &traced.run.id);
    let spans = receiver.trace(&trace, 3);
    let own = by_name(&spans, "the task's own work");
    assert_eq!(own.len(), 1, "{spans:#?}");
    let attempt = by_name(&spans, "instrumented attempt 1")[0];
    assert_eq!(own[0]["parent_span_id"], attempt["span_id"]);
    assert_ne!(
        own[0]["service"], "weft",
        "the task's spans are its own service's"
    );
}

#[test]
fn a_run_started_with_a_traceparent_joins_the_caller_s_trace() {
    let receiver = Receiver::start();
    let weft = serve(&receiver, None, &["--trace-payloads", "4"]);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let rt = common::runtime();
    let started: Value = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/task-runs", weft.url))
            .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
            .json(&json!({"task": "add_squares", "input": [1, 2]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(started["traceId"], caller_trace, "{started}");
    let spans = receiver.trace(caller_trace, 6);
    let root = by_name(&spans, "add_squares")[0];
    assert_eq!(
        root["parent_span_id"], caller_span,
        "under the caller's span"
    );
    assert_eq!(
        by_name(&spans, "square").len(),
        2,
        "its subtasks in the same trace"
    );
}

/// A parent on one `weft serve` node, its children on both: one trace,
/// each attempt's span naming the node that ran it.
#[test]
fn a_tree_across_two_nodes_is_one_trace() {
    let receiver = Receiver::start();
    let db = common::PgSchema::new();
    let (python, app) = (common::python(), python_dir().join("traces_app.py"));
    let node = |id: &'static str| {
        Weft::start_with(Options {
            // One at a time each: the naps cannot all run on one node.
            args: &["--quiet", "--max-concurrent", "1"],
            command: &[&python, &app],
            env: &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
            serve: Some(common::Serve {
                database_url: &db.url,
                node_id: id,
            }),
            ..Default::default()
        })
    };
    let (a, _b) = (node("node-a"), node("node-b"));
    let rt = common::runtime();
    let client = Client::new(&a.url).unwrap();
    let root = rt
        .block_on(client.run_task("naps", json!([6, 0.3])).send())
        .unwrap();
    let trace = trace_of(&client, &rt, &root.run.id);
    let spans = receiver.trace(&trace, 14);
    let top = by_name(&spans, "naps")[0];
    let naps = by_name(&spans, "nap");
    assert_eq!(naps.len(), 6);
    assert!(naps.iter().all(|n| n["parent_span_id"] == top["span_id"]));
    let nodes: std::collections::BTreeSet<&str> = by_name(&spans, "nap attempt 1")
        .iter()
        .map(|a| a["attributes"]["weft.node.id"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        ["node-a", "node-b"].into(),
        "children on both nodes, in one trace"
    );
}

/// The Rust SDK's `otel` feature runs each task in its attempt's trace:
/// a span the task starts through OpenTelemetry's API is under it.
#[test]
fn the_rust_sdk_runs_a_task_in_its_attempt_s_trace() {
    let receiver = Receiver::start();
    let app = common::example("traced");
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        command: &[&app],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.run_task("traced_square", [7]).send())
        .unwrap();
    assert_eq!(run.results.to_value(), json!([49]));
    let spans = receiver.trace(&trace_of(&client, &rt, &run.run.id), 3);
    let own = by_name(&spans, "squaring in Rust");
    assert_eq!(own.len(), 1, "{spans:#?}");
    let attempt = by_name(&spans, "traced_square attempt 1")[0];
    assert_eq!(own[0]["parent_span_id"], attempt["span_id"]);
}

/// `--log-format json`: the runtime's lines as JSON objects, those about a
/// run with its trace and span ids.
#[test]
fn json_logs_carry_a_run_s_trace_and_span() {
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--log-format", "json"],
        env: &[("WEFT_LOG", "weft_runtime=debug")],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let run = rt.block_on(client.run_task("square", [4]).send()).unwrap();
    let trace = trace_of(&client, &rt, &run.run.id);
    let line = common::wait_for(10, "the line about the run's end", || {
        weft.output()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .find(|l| l["message"] == "task run ended" && l["run"] == run.run.id.as_str())
    });
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    assert_eq!(line["status"], "completed");
    assert_eq!(line["level"], "DEBUG");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
}

#[test]
fn without_an_endpoint_nothing_is_traced_and_processes_start_ahead() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        app: Some(python_dir().join("traces_app.py")),
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.run_task("traceparents", [2]).send())
        .unwrap();
    assert_eq!(run.results.to_value(), json!(["", ""]), "no TRACEPARENT");
    assert!(!weft.output().contains("exporting each run tree"));
}
