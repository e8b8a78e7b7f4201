//! The `weft` client commands against a real `weft dev`.

mod common;

use std::process::{Command, Output};

use common::{Weft, wait_for};
use serde_json::Value;

fn weft(server: &Weft, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env("RENDER_LOCAL_DEV_URL", &server.url)
        .env_remove("RENDER_API_KEY")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command failed, and said why.
fn assert_fails_saying(out: &Output, text: &str) {
    assert!(!out.status.success(), "succeeded: {}", stdout(out));
    assert!(stderr(out).contains(text), "{}", stderr(out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_prints_the_result_and_fails_with_the_task() {
    let server = Weft::start();
    let out = weft(&server, &["run", "add_squares", "[3, 4]"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "25");
    assert!(stderr(&out).contains("Run started: trn-"));

    let out = weft(&server, &["run", "greet", r#"{"name": "Ada"}"#, "--json"]);
    let details: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(details["results"], serde_json::json!(["Hello, Ada!"]));
    assert_eq!(details["status"], "completed");

    let out = weft(&server, &["run", "fail", r#"["boom"]"#]);
    assert_fails_saying(&out, "failed: boom");
    // The dev terminal says how each run ended, beside its output.
    let id = |out: &Output| {
        let err = stderr(out);
        err.split("Run started: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    // The echo is written by a thread of its own: it may come a moment later.
    let failed = format!("[fail {}] failed in ", id(&out));
    let terminal = common::wait_for(10, "the run's end on the terminal", || {
        let text = server.output();
        text.contains(&failed).then_some(text)
    });
    assert!(terminal.contains(": boom\n"), "{terminal}");
    assert!(
        terminal.contains("[greet trn-") && terminal.contains("] completed in "),
        "{terminal}"
    );

    let out = weft(&server, &["run", "nope"]);
    assert_fails_saying(&out, "task not found: nope");

    // The input from a file, or from standard input.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.json");
    std::fs::write(&file, "[6, 8]").unwrap();
    let out = weft(
        &server,
        &["run", "add_squares", &format!("@{}", file.display())],
    );
    assert_eq!(stdout(&out).trim(), "100", "{}", stderr(&out));
    let mut piped = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", "add_squares", "-", "--url", &server.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), b"{\"a\": 1, \"b\": 2}").unwrap();
    let out = piped.wait_with_output().unwrap();
    assert_eq!(stdout(&out).trim(), "5");
    let out = weft(&server, &["run", "square", "@/nonexistent/input.json"]);
    assert_fails_saying(&out, "cannot read the input file /nonexistent/input.json");

    let out = weft(&server, &["run", "square", "5"]);
    assert_fails_saying(&out, "must be a JSON array");
}

#[test]
fn runs_list_show_logs_and_cancel() {
    let server = Weft::start();
    let out = weft(&server, &["run", "fan_out", "[3]", "--no-wait"]);
    let root = stdout(&out).trim().to_string();
    assert!(root.starts_with("trn-"), "{}", stderr(&out));
    wait_for(30, "the fan-out to finish", || {
        let out = weft(&server, &["runs", "show", &root, "--json"]);
        let details: Value = serde_json::from_str(&stdout(&out)).ok()?;
        (details["status"] == "completed").then_some(())
    });

    let out = weft(&server, &["runs", "list", "--root", &root, "--json"]);
    let runs: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 4);
    let table = stdout(&weft(&server, &["runs", "list", "--task", "square"]));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().next().unwrap().starts_with("ID "));
    assert!(table.contains(&root), "children show their parent");

    let shown = stdout(&weft(&server, &["runs", "show", &root]));
    assert!(
        shown.contains("Status    completed") && shown.contains("Results   [5]"),
        "{shown}"
    );

    let child = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["taskRun"]["id"] != root.as_str())
        .unwrap();
    let child_id = child["taskRun"]["id"].as_str().unwrap();
    let tree = stdout(&weft(&server, &["runs", "tree", &root]));
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 4, "{tree}");
    assert!(
        lines[0].starts_with(&format!("fan_out {root} completed ")),
        "{tree}"
    );
    assert!(
        lines[1].starts_with("├─ square trn-") && lines[3].starts_with("└─ square trn-"),
        "{tree}"
    );
    let tree = stdout(&weft(&server, &["runs", "tree", child_id]));
    assert_eq!(tree.lines().count(), 1, "a subtree: {tree}");
    let tree: Value =
        serde_json::from_str(&stdout(&weft(&server, &["runs", "tree", &root, "--json"]))).unwrap();
    assert_eq!(
        tree[0]["id"],
        root.as_str(),
        "the run first, then its children"
    );
    assert_eq!(tree.as_array().unwrap().len(), 4);

    // The runs have ended, so their logs are complete.
    let logs = stdout(&weft(&server, &["runs", "logs", child_id]));
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(logs.contains("squaring"), "{logs}");
    let tree = stdout(&weft(&server, &["runs", "logs", &root, "--subtasks"]));
    let squaring = tree
        .lines()
        .filter(|l| l.contains("[square trn-") && l.contains("squaring"))
        .count();
    assert_eq!(squaring, 3, "{tree}");
    assert!(
        !tree.contains(&format!("[fan_out {root}] squaring")),
        "{tree}"
    );

    let out = weft(&server, &["runs", "cancel", &root]);
    assert_fails_saying(&out, "already ended (completed)");

    let out = weft(&server, &["run", "sleep_for", "[60]", "--no-wait"]);
    let sleeper = stdout(&out).trim().to_string();
    let out = weft(&server, &["runs", "cancel", &sleeper]);
    assert!(out.status.success(), "{}", stderr(&out));
    let details: Value = serde_json::from_str(&stdout(&weft(
        &server,
        &["runs", "show", &sleeper, "--json"],
    )))
    .unwrap();
    assert_eq!(details["status"], "canceled");

    let ids = |status: &str| -> Vec<String> {
        let out = weft(&server, &["runs", "list", "--status", status, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let runs: Value = serde_json::from_str(&stdout(&out)).unwrap();
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["taskRun"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("canceled"), [sleeper.as_str()]);
    assert_eq!(ids("completed").len(), 4, "the fan-out and its children");
    assert_eq!(ids("succeeded"), ids("completed"), "one state, two names");
    let out = weft(&server, &["runs", "list", "--status", "done"]);
    assert_fails_saying(&out, "\"done\" is not a status");
}

#[test]
fn runs_logs_pages_through_everything_and_follows_a_run_to_its_end() {
    let server = Weft::start();
    // Two and a half pages of the API's 1,000 lines, stdout and stderr
    // interleaved, printed as fast as Python can.
    let out = weft(&server, &["run", "chatty", "[2500]", "--json"]);
    let run: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = run["id"].as_str().unwrap();
    let chatty = id.to_string();
    let numbered = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    };
    let want: Vec<String> = (0..2500).map(|i| format!("line {i}")).collect();
    let all = stdout(&weft(&server, &["runs", "logs", id]));
    let mut got = numbered(&all);
    // The two streams are read apart, so only each stream keeps its order.
    got.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
    assert_eq!(got, want);
    let some = stdout(&weft(&server, &["runs", "logs", id, "--limit", "1200"]));
    assert_eq!(some.lines().count(), 1200);
    let json: Value =
        serde_json::from_str(&stdout(&weft(&server, &["runs", "logs", id, "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2500);

    // --follow, started before the run has printed much, ends with the run
    // and has every line.
    let out = weft(&server, &["run", "chatty", "[20, 0.05]", "--no-wait"]);
    let id = stdout(&out).trim().to_string();
    let followed = weft(&server, &["runs", "logs", &id, "--follow"]);
    assert!(followed.status.success(), "{}", stderr(&followed));
    let details: Value =
        serde_json::from_str(&stdout(&weft(&server, &["runs", "show", &id, "--json"]))).unwrap();
    assert_eq!(
        details["status"], "completed",
        "--follow returned before the end"
    );
    let mut got = numbered(&stdout(&followed));
    got.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
    assert_eq!(got, want[..20]);

    // Lines a process writes after it has reported (at exit) are there as
    // soon as the run is seen to end.
    let out = weft(&server, &["run", "chatty_at_exit", "[300, 1.0]", "--json"]);
    let run: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let late = stdout(&weft(
        &server,
        &["runs", "logs", run["id"].as_str().unwrap()],
    ));
    assert_eq!(late.lines().count(), 300, "{late}");
    // So are a subtask's, read through its parent.
    let out = weft(
        &server,
        &["run", "parent_of_chatty_at_exit", "[200, 1.0]", "--json"],
    );
    let run: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = run["id"].as_str().unwrap();
    let late = stdout(&weft(&server, &["runs", "logs", id, "--subtasks"]));
    assert_eq!(late.lines().count(), 200, "{late}");

    // Piped into a reader that has gone (`| head`): a quiet end, no panic.
    let mut piped = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["runs", "logs", &chatty, "--url", &server.url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let out = piped.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    let out = weft(&server, &["runs", "logs", "trn-nope"]);
    assert_fails_saying(&out, "task run not found: trn-nope");
}

#[test]
fn tasks_list_and_refresh() {
    let server = Weft::start();
    let list = stdout(&weft(&server, &["tasks", "list"]));
    assert!(
        list.contains("flaky") && list.contains("marker_dir, succeed_on"),
        "{list}"
    );
    let flaky = list.lines().find(|l| l.starts_with("flaky")).unwrap();
    assert!(
        flaky.split_whitespace().nth(1) == Some("2"),
        "retries shown: {flaky}"
    );
    let slow = list.lines().find(|l| l.starts_with("slow")).unwrap();
    assert!(slow.contains("1s"), "timeout shown: {slow}");
    let out = weft(&server, &["tasks", "refresh", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tasks: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 35);
}

#[test]
fn a_server_that_is_not_there_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["runs", "list", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_fails_saying(&out, "127.0.0.1:9");
    assert_fails_saying(&out, "is `weft dev` running");
}

#[test]
fn a_second_weft_dev_on_one_database_is_refused() {
    let server = Weft::start();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["dev", "--port", "0", "--db"])
        .arg(&server.db)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_fails_saying(&out, "is in use by another weft (pid ");
    // The first one goes on serving.
    let out = weft(&server, &["run", "square", "[4]"]);
    assert_eq!(stdout(&out).trim(), "16", "{}", stderr(&out));

    // A hard link is the same file under another name, in another folder:
    // refused too, naming the first one's pid.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("h2.db");
    std::fs::hard_link(&server.db, &link).unwrap();
    let refused = Weft::try_start(common::Options {
        db: Some(link),
        ..Default::default()
    })
    .err()
    .expect("a second weft dev on a hard link to the database was refused");
    let pid = server.pid().unwrap();
    assert!(
        refused.contains(&format!("is in use by another weft (pid {pid})")),
        "{refused}"
    );
    let out = weft(&server, &["run", "square", "[5]"]);
    assert_eq!(stdout(&out).trim(), "25", "{}", stderr(&out));
}

#[test]
fn dev_refuses_a_file_that_is_not_its_database_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.txt");
    std::fs::write(&db, "my notes, not a database\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["dev", "--port", "0", "--db"])
        .arg(&db)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_fails_saying(&out, "notes.txt");
    assert_fails_saying(&out, "not a database");
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "my notes, not a database\n"
    );
}

#[test]
fn runs_rerun_starts_the_same_task_and_input_as_a_new_root_run() {
    let server = Weft::start();
    let out = weft(&server, &["run", "greet", r#"{"name": "Ada"}"#, "--json"]);
    let first: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let first_id = first["id"].as_str().unwrap();

    let out = weft(&server, &["runs", "rerun", first_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = stdout(&out).trim().to_string();
    assert!(again.starts_with("trn-") && again != first_id, "{again}");
    let details = wait_for(30, "the rerun to end", || {
        let out = weft(&server, &["runs", "show", &again, "--json"]);
        let v: Value = serde_json::from_str(&stdout(&out)).ok()?;
        (v["status"] == "completed").then_some(v)
    });
    assert_eq!(details["input"], first["input"]);
    assert_eq!(details["results"], serde_json::json!(["Hello, Ada!"]));
    assert_eq!(details["parentTaskRunId"], "");

    assert_fails_saying(
        &weft(&server, &["runs", "rerun", "trn-nosuchrun"]),
        "task run not found: trn-nosuchrun",
    );
}
