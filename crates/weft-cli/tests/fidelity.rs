//! What users of Render's SDKs and of `render workflows dev` expect of the
//! local server, each point as a client or a habit meets it.

mod common;

use std::path::Path;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::{Options, Weft};
use weft::client::Client;

/// Reads SSE from a raw connection: (id, event, data) of each message, and
/// whether a `retry:` advice came, until `want` messages or `wait` passes.
fn read_events(
    stream: &mut BufReader<std::net::TcpStream>,
    want: usize,
    wait: Duration,
) -> (Vec<(String, String, String)>, bool) {
    stream.get_ref().set_read_timeout(Some(wait)).unwrap();
    let (mut events, mut advised) = (Vec::new(), false);
    let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
    let mut line = String::new();
    while events.len() < want {
        line.clear();
        match stream.read_line(&mut line) {
            Ok(0) => panic!("the server ended the stream"),
            Ok(_) => {}
            Err(_) => break, // the wait is over
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = line.strip_prefix("retry:") {
            advised = !v.trim().is_empty();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().into();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().into();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim().into();
        } else if line.is_empty() && !data.is_empty() {
            events.push((
                std::mem::take(&mut id),
                std::mem::take(&mut event),
                std::mem::take(&mut data),
            ));
        }
    }
    (events, advised)
}

/// Opens `GET /v1/task-runs/events` as an EventSource would, resuming after
/// `last` when given; returns the stream past the response head.
fn open_events(url: &str, ids: &[&str], last: Option<&str>) -> BufReader<std::net::TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        conn,
        "GET /v1/task-runs/events?taskRunIds={} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n",
        ids.join(",")
    )
    .unwrap();
    let mut stream = BufReader::new(conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// The event stream stays open once every run has ended, advises a retry,
/// numbers its events, and a reconnect with `Last-Event-ID` (as
/// EventSource does) repeats nothing; unknown ids are skipped.
#[test]
fn the_event_stream_stays_open_and_a_reconnect_repeats_nothing() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let a = rt
        .block_on(client.run_task("square", [2]).send())
        .unwrap()
        .run
        .id;
    let b = rt
        .block_on(client.start_task("sleep_for", [1.0]).send())
        .unwrap()
        .id()
        .to_string();
    let mut stream = open_events(&weft.url, &[&a, "trn-unknown", &b], None);
    let (events, advised) = read_events(&mut stream, 2, Duration::from_secs(20));
    assert!(advised, "a retry: advice comes first");
    assert_eq!(events.len(), 2, "{events:?}");
    let ids: Vec<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    assert!(events.iter().all(|(_, e, _)| e == "task.completed"));
    let runs: Vec<String> = events
        .iter()
        .map(|(_, _, data)| {
            serde_json::from_str::<serde_json::Value>(data).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(runs, [a.clone(), b.clone()], "in the order they ended");
    // Still open: nothing more, and no end of stream, for a while.
    let (more, _) = read_events(&mut stream, 1, Duration::from_millis(1500));
    assert!(more.is_empty(), "{more:?}");
    drop(stream);
    // EventSource reconnects with the last id it saw: nothing comes twice.
    let mut again = open_events(&weft.url, &[&a, "trn-unknown", &b], Some(ids[1]));
    let (repeated, _) = read_events(&mut again, 1, Duration::from_millis(1500));
    assert!(
        repeated.is_empty(),
        "sent again after a reconnect: {repeated:?}"
    );
    let mut from_first = open_events(&weft.url, &[&a, &b], Some(ids[0]));
    let (rest, _) = read_events(&mut from_first, 2, Duration::from_millis(1500));
    assert_eq!(rest.len(), 1, "only what came after the first: {rest:?}");
}

/// Every error body is `{"id", "code", "message"}`.
#[test]
fn error_bodies_have_an_id_a_code_and_a_message() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let http = reqwest::Client::new();
    let cases: [(reqwest::Method, &str, Option<&str>, u16, &str); 4] = [
        (
            reqwest::Method::POST,
            "/v1/task-runs",
            Some(r#"{"task": "noSuchTask", "input": []}"#),
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/v1/task-runs",
            Some(r#"{"task": "square", "input": 7}"#),
            400,
            "invalid_input",
        ),
        (
            reqwest::Method::GET,
            "/v1/task-runs/trn-nope",
            None,
            404,
            "not_found",
        ),
        (
            reqwest::Method::PUT,
            "/v1/tasks",
            None,
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let mut req = http.request(method.clone(), format!("{}{path}", weft.url));
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let r = rt.block_on(req.send()).unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let body: serde_json::Value = rt.block_on(r.json()).unwrap();
        assert!(
            body["id"].as_str().is_some_and(|id| id.starts_with("err-")),
            "{body}"
        );
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let r = rt
        .block_on(
            http.post(format!("{}/v1/task-runs", weft.url))
                .header("Content-Type", "application/json")
                .body(r#"{"task": "noSuchTask", "input": []}"#)
                .send(),
        )
        .unwrap();
    let body: serde_json::Value = rt.block_on(r.json()).unwrap();
    assert_eq!(body["message"], "task not found: noSuchTask");
}

/// A task process whose callback is malformed hears why (400), and its
/// attempt fails with the reason.
#[test]
fn a_malformed_callback_is_refused_with_a_reason() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let status_file = weft.dir.join("callback-status");
    let err = rt
        .block_on(
            client
                .run_task("garbled_callback", [status_file.to_str().unwrap()])
                .send(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("could not be decoded"), "{err}");
    // Written by the task after it is answered: a moment after the run ended.
    let heard = common::wait_for(10, "the task's note of its answer", || {
        std::fs::read_to_string(&status_file)
            .ok()
            .filter(|t| !t.is_empty())
    });
    assert!(
        heard.starts_with("400 ") && heard.contains("could not be decoded"),
        "{heard}"
    );
}

/// `--env-file` repeats, later files win, and what they set wins over the
/// shell, as Render documents.
#[test]
fn env_files_repeat_and_win_over_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.env"), dir.path().join("two.env"));
    std::fs::write(&one, "WEFT_A=from-one\nWEFT_B=from-one\nWEFT_C=from-one\n").unwrap();
    std::fs::write(&two, "WEFT_B=from-two\n").unwrap();
    let weft = Weft::start_with(Options {
        args: &[
            "--quiet",
            "--env-file",
            one.to_str().unwrap(),
            "--env-file",
            two.to_str().unwrap(),
        ],
        env: &[("WEFT_C", "from-shell"), ("WEFT_D", "from-shell")],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let value = |name: &str| {
        rt.block_on(client.run_task("env_value", [name]).send())
            .unwrap()
            .results
    };
    assert_eq!(value("WEFT_A"), serde_json::json!(["from-one"]));
    assert_eq!(
        value("WEFT_B"),
        serde_json::json!(["from-two"]),
        "later files win"
    );
    assert_eq!(
        value("WEFT_C"),
        serde_json::json!(["from-one"]),
        "files win over the shell"
    );
    assert_eq!(value("WEFT_D"), serde_json::json!(["from-shell"]));
}

/// The start command as Render's docs write it, one quoted string.
#[test]
fn the_start_command_may_be_one_quoted_string() {
    let command = format!(
        "{} {}",
        common::python().display(),
        common::app_py().display()
    );
    let one = std::path::PathBuf::from(&command);
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        command: &[&one],
        ..Default::default()
    });
    assert_eq!(square(&weft, 7), serde_json::json!([49]));
}

/// `npx NAME` of a package the project has installed runs its
/// `node_modules/.bin/NAME` directly (npx would look it up for every task
/// process), with that folder first on `PATH`, as npx runs it.
#[test]
fn npx_of_an_installed_package_is_found_once() {
    use std::os::unix::fs::PermissionsExt;
    let project = tempfile::tempdir().unwrap();
    let bin = project.path().join("node_modules/.bin");
    std::fs::create_dir_all(&bin).unwrap();
    // The "package": a script that runs the Python app, and says which
    // PATH it got.
    let app = bin.join("weft-test-app");
    std::fs::write(
        &app,
        format!(
            "#!/bin/sh\necho \"PATH=$PATH\" >> {}\nexec {} {}\n",
            project.path().join("paths.txt").display(),
            common::python().display(),
            common::app_py().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (npx, name) = (Path::new("npx"), Path::new("weft-test-app"));
    let weft = Weft::start_with(Options {
        dir: Some(project.path().to_path_buf()),
        command: &[npx, name],
        ..Default::default()
    });
    assert_eq!(square(&weft, 8), serde_json::json!([64]));
    let output = weft.output();
    assert!(
        output.contains("`npx weft-test-app` runs")
            && output.contains("node_modules/.bin/weft-test-app"),
        "{output}"
    );
    let paths = std::fs::read_to_string(project.path().join("paths.txt")).unwrap();
    let first = format!("PATH={}:", bin.display());
    assert!(
        paths.lines().all(|l| l.starts_with(&first)),
        "the bin folder first on PATH, as npx has it: {paths}"
    );
}

/// The results of `square(x)` on `weft`.
fn square(weft: &Weft, x: i64) -> serde_json::Value {
    let run = common::runtime()
        .block_on(
            Client::new(&weft.url)
                .unwrap()
                .run_task("square", [x])
                .send(),
        )
        .unwrap();
    run.results.to_value()
}

/// Commands copied from Render's docs (`--local`, `--port`) run.
#[test]
fn render_cli_spellings_are_accepted() {
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--debug"],
        ..Default::default()
    });
    let port = weft.url.rsplit(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input_file = dir.path().join("input.json");
    std::fs::write(&input_file, "[5]").unwrap();
    let input_file = input_file.to_str().unwrap();
    let weft_cli = |args: &[&str]| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .env_remove("RENDER_LOCAL_DEV_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let local = ["--local", "--port", port];
    for args in [["tasks", "list"].as_slice(), &["runs", "list"]] {
        weft_cli(&[args, &local].concat());
    }
    // `render workflows tasks runs start TASK --input JSON` and its
    // shortcut `render workflows start --task TASK --input-file PATH`:
    // "Created task run trn-... for TASK", as Render's CLI says it.
    let created = |out: &str, task: &str| -> String {
        let id = out
            .strip_prefix("Created task run ")
            .and_then(|rest| rest.strip_suffix(&format!(" for {task}\n")))
            .unwrap_or_else(|| panic!("{out:?}"));
        id.to_string()
    };
    let first = created(
        &weft_cli(
            &[
                &["tasks", "runs", "start", "square", "--input", "[3]"],
                local.as_slice(),
            ]
            .concat(),
        ),
        "square",
    );
    let second = created(
        &weft_cli(
            &[
                &[
                    "workflows",
                    "start",
                    "--task",
                    "my-workflow/square",
                    "--input-file",
                    input_file,
                ],
                local.as_slice(),
            ]
            .concat(),
        ),
        "my-workflow/square",
    );
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    for id in [&first, &second] {
        common::wait_for(30, "the run to end", || {
            let run = rt.block_on(client.get_task_run(id)).unwrap();
            run.run.status.is_terminal().then_some(())
        });
    }
    let shown = weft_cli(
        &[
            &["workflows", "tasks", "runs", "show", &second],
            local.as_slice(),
        ]
        .concat(),
    );
    assert!(
        shown.contains("Input     [5]") && shown.contains("Results   [25]"),
        "{shown}"
    );
    let listed = weft_cli(
        &[
            &["tasks", "runs", "list", "square", "--json"],
            local.as_slice(),
        ]
        .concat(),
    );
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );
    // `--wait` waits and prints the result, as `weft run` does.
    let waited = weft_cli(
        &[
            &["runs", "start", "square", "--input", "[4]", "--wait"],
            local.as_slice(),
        ]
        .concat(),
    );
    assert_eq!(waited.trim(), "16");
    // `render workflows cancel ID`: a run that ended cannot be canceled,
    // and says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([&["workflows", "cancel", &first], local.as_slice()].concat())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The input must be JSON, and one of the two ways, not both.
    for (args, says) in [
        (
            vec!["runs", "start", "square", "--input", "nope"],
            "input is not JSON",
        ),
        (
            vec![
                "runs",
                "start",
                "square",
                "--input",
                "[1]",
                "--input-file",
                input_file,
            ],
            "cannot be used with",
        ),
        (vec!["runs", "start", "--input", "[1]"], "TASK"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([args.as_slice(), local.as_slice()].concat())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Options Render's cloud would refuse are registered with a warning that
/// names the task and the range.
#[test]
fn task_options_outside_the_clouds_ranges_are_warned_about() {
    let weft = Weft::start();
    let output = weft.output();
    assert!(
        output.contains(
            r#"task "slow" has timeout_seconds 1: Render's cloud takes 30 to 86400 seconds"#
        ),
        "{output}"
    );
}

/// The list filters as the official clients send them, versioned slugs,
/// and the fields of a run's attempts.
#[test]
fn list_filters_slugs_and_attempt_fields_as_clients_send_them() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let sq = rt
        .block_on(client.run_task("my-workflow/square:v3", [3]).send())
        .unwrap();
    assert_eq!(
        sq.results,
        serde_json::json!([9]),
        "a versioned slug runs the task"
    );
    let greet = rt
        .block_on(client.run_task("greet", ["Ada"]).send())
        .unwrap();
    let sums = rt
        .block_on(client.run_task("add_squares", (1, 2)).send())
        .unwrap();
    let get = |query: &str| -> Vec<serde_json::Value> {
        rt.block_on(async {
            reqwest::get(format!("{}/v1/task-runs?{query}", weft.url))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let ids = |rows: Vec<serde_json::Value>| -> std::collections::BTreeSet<String> {
        rows.iter()
            .map(|r| r["taskRun"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let both = ids(get("taskSlug=square&taskSlug=greet"));
    assert!(
        both.contains(&sq.run.id) && both.contains(&greet.run.id),
        "{both:?}"
    );
    assert!(!both.contains(&sums.run.id));
    assert_eq!(
        ids(get("taskSlug=square,greet")).len(),
        both.len(),
        "commas too"
    );
    let roots = ids(get(&format!("rootTaskRunId={},{}", sq.run.id, sums.run.id)));
    assert_eq!(
        roots.len(),
        1 + 3,
        "square alone, add_squares with its two children: {roots:?}"
    );
    // Attempts say when they were queued; children say which attempt of
    // their parent started them.
    let kids = get(&format!("rootTaskRunId={}", sums.run.id));
    let kid = kids
        .iter()
        .find(|r| r["taskRun"]["id"] != sums.run.id.as_str())
        .unwrap();
    assert_eq!(kid["taskRun"]["parentTaskAttempt"], 1, "{kid}");
    let details = rt.block_on(client.get_task_run(&sums.run.id)).unwrap();
    let attempt = &details.run.attempts[0];
    assert!(
        attempt.enqueued_at.is_some_and(|q| q <= attempt.started_at),
        "{attempt:?}"
    );
    assert!(details.run.parent_task_attempt.is_none());
}

/// Render's public API client from the official `render` package
/// (`render.public_api`): every list filter of `GET /v1/task-runs`,
/// pinned slugs recorded on runs and their subtasks, and the task-run
/// metrics in Render's time-series shape.
#[test]
fn renders_public_api_client_lists_pins_and_counts() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    common::python_script_ok("public_api_client.py", &[], &weft.url);
}

/// A task added to the app after `weft dev` started is picked up when it
/// is first asked for, with no `weft tasks refresh`.
#[test]
fn a_new_task_is_picked_up_without_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.py");
    let head = "from render.workflows import Workflows\napp = Workflows()\n\n@app.task\ndef one(ctx) -> int:\n    return 1\n";
    std::fs::write(
        &app,
        format!("{head}\nif __name__ == '__main__':\n    app.start()\n"),
    )
    .unwrap();
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        app: Some(app.clone()),
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    assert_eq!(
        rt.block_on(client.run_task("one", ()).send())
            .unwrap()
            .results,
        serde_json::json!([1])
    );
    std::fs::write(
        &app,
        format!("{head}\n@app.task\ndef two(ctx) -> int:\n    return 2\n\nif __name__ == '__main__':\n    app.start()\n"),
    )
    .unwrap();
    // Past the few seconds in which a registration is not repeated.
    std::thread::sleep(Duration::from_millis(2200));
    let two = rt.block_on(client.run_task("two", ()).send()).unwrap();
    assert_eq!(two.results, serde_json::json!([2]));
    // A name no version of the app has is still 404, at once.
    let err = rt
        .block_on(client.run_task("three", ()).send())
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

/// `GET /v1/logs` with `direction`, `task`, `level` and `type`, and the log
/// stream replaying from `startTime` and following subtasks.
#[test]
fn log_filters_and_a_stream_that_replays_and_follows_subtasks() {
    use futures::StreamExt;
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let chatty = rt
        .block_on(client.run_task("chatty", [10]).send())
        .unwrap()
        .run
        .id;
    let parent = rt
        .block_on(client.run_task("add_squares", (2, 3)).send())
        .unwrap()
        .run
        .id;
    let logs = |query: &str| -> Vec<String> {
        let body: serde_json::Value = rt.block_on(async {
            reqwest::get(format!("{}/v1/logs?{query}", weft.url))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        body["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_string())
            .collect()
    };
    // (stdout and stderr are read apart, so only each stream keeps its order)
    let forward = logs(&format!("taskRunId={chatty}&type=stdout&limit=3"));
    assert_eq!(forward, ["line 0", "line 2", "line 4"]);
    let backward = logs(&format!(
        "taskRunId={chatty}&type=stdout&limit=3&direction=backward"
    ));
    assert_eq!(backward, ["line 8", "line 6", "line 4"], "newest first");
    let errors = logs(&format!("taskRunId={chatty}&level=error&limit=100"));
    assert_eq!(
        errors,
        ["line 1", "line 3", "line 5", "line 7", "line 9"],
        "stderr is error"
    );
    let out = logs(&format!("taskRunId={chatty}&type=stdout&limit=100"));
    assert_eq!(out.len(), 5);
    let squares = logs("task=square&limit=100");
    assert!(
        squares.len() >= 2 && squares.iter().all(|m| m.starts_with("squaring ")),
        "{squares:?}"
    );
    let r = rt
        .block_on(reqwest::get(format!(
            "{}/v1/logs?direction=sideways",
            weft.url
        )))
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The stream from a time in the past: the parent's subtasks' lines
    // (they printed before the stream opened) come first.
    let since = "2000-01-01T00:00:00Z";
    let url = format!(
        "{}/v1/logs/subscribe?taskRunId={parent}&includeSubtasks=true&startTime={since}",
        weft.url.replace("http://", "ws://")
    );
    let (mut socket, _) = rt
        .block_on(tokio_tungstenite::connect_async(url))
        .expect("upgrade");
    let replayed: Vec<String> = rt.block_on(async {
        let mut lines = Vec::new();
        while lines.len() < 2 {
            let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("replayed lines within 10 s")
                .unwrap()
                .unwrap();
            let log: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            lines.push(log["message"].as_str().unwrap().to_string());
        }
        lines
    });
    let mut sorted = replayed.clone();
    sorted.sort();
    assert_eq!(sorted, ["squaring 2", "squaring 3"], "{replayed:?}");
}

/// Inputs and results keep the key order and number formatting the client
/// and the task wrote, in the API and the CLI, on both stores.
#[test]
fn payloads_keep_their_key_order_and_numbers_on_both_stores() {
    let db = common::PgSchema::new();
    for database in [None, Some(db.url.as_str())] {
        let args: Vec<&str> = match database {
            None => vec!["--quiet"],
            Some(url) => vec!["--quiet", "--database-url", url],
        };
        let weft = Weft::start_with(Options {
            args: &args,
            ..Default::default()
        });
        let rt = common::runtime();
        let raw = |method: reqwest::Method, path: &str, body: Option<&str>| -> String {
            rt.block_on(async {
                let mut req = reqwest::Client::new().request(method, format!("{}{path}", weft.url));
                if let Some(body) = body {
                    req = req
                        .header("Content-Type", "application/json")
                        .body(body.to_string());
                }
                req.send().await.unwrap().text().await.unwrap()
            })
        };
        let started = raw(
            reqwest::Method::POST,
            "/v1/task-runs",
            Some(
                r#"{"task": "echo", "input": {"zeta": 1, "alpha": 2.50, "big": 98765432109876543210987}}"#,
            ),
        );
        let id = serde_json::from_str::<serde_json::Value>(&started).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let client = Client::new(&weft.url).unwrap();
        rt.block_on(client.wait_for_task_run(&id)).unwrap();
        let details = raw(reqwest::Method::GET, &format!("/v1/task-runs/{id}"), None);
        assert!(
            details
                .contains(r#""input":{"zeta": 1, "alpha": 2.50, "big": 98765432109876543210987}"#),
            "the input as the client wrote it ({database:?}): {details}"
        );
        let ordered = rt
            .block_on(client.start_task("ordered", ()).send())
            .unwrap()
            .id()
            .to_string();
        rt.block_on(client.wait_for_task_run(&ordered)).unwrap();
        let details = raw(
            reqwest::Method::GET,
            &format!("/v1/task-runs/{ordered}"),
            None,
        );
        let results = details.split(r#""results":"#).nth(1).unwrap();
        assert!(
            // (Python's json writes é as \u00e9: the bytes the SDK sent.)
            results.starts_with(
                r#"[{"unicode": "\u00e9", "nested": {"z": 1, "a": 2}, "big": 12345678901234567890123}]"#
            ),
            "the result as the task wrote it ({database:?}): {details}"
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["runs", "show", &ordered, "--url", &weft.url])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        let (u, n, b) = (
            shown.find("unicode").unwrap(),
            shown.find("nested").unwrap(),
            shown.find("big").unwrap(),
        );
        assert!(u < n && n < b, "the CLI keeps the order: {shown}");
        assert!(shown.contains("12345678901234567890123"), "{shown}");
    }
}
