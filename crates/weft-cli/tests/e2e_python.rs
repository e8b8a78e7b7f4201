//! End to end: `weft dev -- python app.py` (an app on the official Render
//! SDK) driven by the official Render client, over real HTTP, real Unix
//! sockets, real processes and a real SQLite file.

mod common;

use std::time::Duration;

use common::{Options, Weft, wait_for};
use serde_json::Value;

#[test]
fn run_task_positional_named_nested_and_metadata() {
    Weft::start().scenario(&["run_task_shapes"]);
}

#[test]
fn subtasks_are_listed_with_parents_and_pages() {
    Weft::start().scenario(&["subtask_metadata_and_listing"]);
}

#[test]
fn start_task_get_task_run_and_events() {
    Weft::start().scenario(&["start_get_events"]);
}

#[test]
fn failures_surface_with_their_messages() {
    Weft::start().scenario(&["failures"]);
}

#[test]
fn retries_follow_the_policy_and_its_backoff() {
    let weft = Weft::start();
    let markers = weft.dir.join("markers");
    weft.scenario(&["retries", markers.to_str().unwrap()]);
}

#[test]
fn timeouts_kill_the_attempt() {
    let weft = Weft::start();
    weft.scenario(&["timeouts"]);
    assert_eq!(weft.task_processes(), 0, "the timed-out process is gone");
}

#[test]
fn cancel_reaches_every_descendant_and_kills_their_processes() {
    let weft = Weft::start_with(Options {
        args: &["--max-concurrent", "4"],
        ..Default::default()
    });
    let marker = weft.dir.join("running");
    let out = std::thread::scope(|s| {
        let handle = s.spawn(|| weft.python(&["cancel", marker.to_str().unwrap()]));
        wait_for(30, "children to run", || marker.exists().then_some(()));
        // While the children sleep their processes exist.
        let running = weft.task_processes();
        std::fs::write(marker.with_extension("go"), "").unwrap();
        let out = handle.join().unwrap();
        assert!(
            running >= 2,
            "children are running as processes ({running})"
        );
        out
    });
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(10, "canceled processes to die", || {
        (weft.task_processes() == 0).then_some(())
    });
}

/// A retry that starts while its failed attempt's process is still
/// exiting (no backoff, an `atexit` that lingers) is still the run's
/// attempt: canceling the run kills its process. (The old attempt, once
/// gone, used to take the new one's place in the node's books with it.)
#[test]
fn a_retry_that_overlaps_its_exiting_predecessor_can_be_canceled() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let pid_file = weft.dir.join("retry.pid");
    let linger = 2.0;
    let run = rt
        .block_on(
            client
                .start_task("fail_then_hang", (pid_file.to_str().unwrap(), linger))
                .send(),
        )
        .unwrap();
    let pid: i32 = wait_for(30, "the retry to run", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    // The first attempt's process exits meanwhile.
    std::thread::sleep(Duration::from_secs_f64(linger + 1.0));
    assert!(common::alive(pid), "the retry hangs until canceled");
    rt.block_on(client.cancel_task_run(run.id())).unwrap();
    wait_for(10, "the canceled retry's process to die", || {
        (!common::alive(pid)).then_some(())
    });
    let details = rt.block_on(client.get_task_run(run.id())).unwrap();
    assert_eq!(
        details.run.status,
        weft_protocol::api::TaskRunStatus::Canceled,
        "{details:?}"
    );
}

#[test]
fn idempotency_keys_name_one_run() {
    Weft::start().scenario(&["idempotency"]);
}

#[test]
fn power_loss_safe_commits_serve_the_same_api() {
    Weft::start_with(Options {
        args: &["--power-loss-safe"],
        ..Default::default()
    })
    .scenario(&["run_task_shapes"]);
}

#[test]
fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    Weft::start_with(Options {
        args: &["--max-payload-bytes", "200000"],
        ..Default::default()
    })
    .scenario(&["bad_input"]);
}

#[test]
fn task_output_is_stored_as_logs() {
    let weft = Weft::start();
    weft.scenario(&["logs"]);
    // Echoed with task name and run id (by a thread of its own: it may
    // come a moment later).
    common::wait_for(10, "the output echoed", || {
        weft.output().contains("[square trn-").then_some(())
    });
}

#[test]
fn live_task_output_streams_over_the_logs_websocket() {
    use futures::StreamExt as _;
    let weft = Weft::start();
    let url = format!(
        "{}/v1/logs/subscribe?text=squaring",
        weft.url.replace("http://", "ws://")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut socket, _) = rt
        .block_on(tokio_tungstenite::connect_async(url))
        .expect("websocket upgrade");
    weft.scenario(&["wide", "3"]);
    let mut lines = Vec::new();
    rt.block_on(async {
        while lines.len() < 3 {
            let msg = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("a line within 20 s")
                .expect("the stream is open")
                .unwrap();
            let log: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            let labels: Vec<_> = log["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| (l["name"].clone(), l["value"].clone()))
                .collect();
            assert!(labels.contains(&("task".into(), "square".into())), "{log}");
            lines.push(log["message"].as_str().unwrap().to_string());
        }
    });
    lines.sort();
    assert_eq!(lines, ["squaring 0", "squaring 1", "squaring 2"]);
}

#[test]
fn a_wide_fan_out_on_few_slots_neither_fails_nor_deadlocks() {
    // Parents waiting on children do not hold slots, so even two slots and
    // nested fan-outs make progress.
    Weft::start_with(Options {
        args: &["--max-concurrent", "2", "--quiet"],
        ..Default::default()
    })
    .scenario(&["wide", "150"]);
}

#[test]
fn dotenv_file_reaches_task_processes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "WEFT_TEST_FROM_DOTENV=loaded\n").unwrap();
    Weft::start_with(Options {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .scenario(&["env_from_dotenv"]);
}

#[test]
fn env_file_flag_names_a_missing_file_clearly() {
    let err = Weft::try_start(Options {
        args: &["--env-file", "/nonexistent/env"],
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("/nonexistent/env"), "{err}");
}

#[test]
fn a_bearer_token_is_required_when_set() {
    let weft = Weft::start_with(Options {
        args: &["--api-key", "s3cret"],
        ..Default::default()
    });
    weft.scenario_env(&["with_token"], &[("RENDER_API_KEY", "s3cret")]);
}

/// Many Render users have RENDER_API_KEY in their shell for the cloud: on
/// loopback it does not lock their clients out.
#[test]
fn an_exported_render_api_key_does_not_lock_out_loopback_clients() {
    let weft = Weft::start_with(Options {
        env: &[("RENDER_API_KEY", "rnd_cloud_key")],
        ..Default::default()
    });
    weft.scenario(&["run_task_shapes"]);
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    let err = Weft::try_start(Options {
        args: &["--host", "0.0.0.0"],
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("without a bearer token"), "{err}");
}

#[test]
fn a_host_name_is_resolved_and_localhost_needs_no_token() {
    let weft = Weft::start_with(Options {
        args: &["--host", "localhost"],
        ..Default::default()
    });
    assert!(weft.url.starts_with("http://127.0.0.1:"), "{}", weft.url);
    weft.scenario(&["run_task_shapes"]);
}

#[test]
fn a_broken_start_command_fails_registration_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["dev", "--port", "0", "--db"])
        .arg(dir.path().join("weft.db"))
        .args(["--", "sh", "-c", "echo cannot import app >&2; exit 4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("without registering any task"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cannot import app"),
        "the app's own output is shown"
    );
}

#[test]
fn apps_and_clients_on_the_older_render_sdk_run_unchanged() {
    // `render_sdk` 0.8.0: tasks take no context; calling a task starts a subtask.
    let weft = Weft::start_with(Options {
        app: Some(common::repo_root().join("examples/python-app-legacy/app.py")),
        ..Default::default()
    });
    common::python_script_ok("legacy_client.py", &[], &weft.url);
}

fn children(tree: &Value, root: &str) -> Vec<Value> {
    tree.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] != root)
        .cloned()
        .collect()
}

#[test]
fn sigkill_mid_fan_out_loses_nothing_and_repeats_nothing() {
    let mut weft = Weft::start_with(Options {
        args: &["--max-concurrent", "2", "--quiet"],
        ..Default::default()
    });
    let out = weft.python(&["start_only", "sleepy_parent", "[8, 1.0]"]);
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        root.starts_with("trn-"),
        "{root} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Crash once some children have finished and others are running.
    wait_for(60, "a half-done fan-out", || {
        let tree = weft.json(&["tree", &root]);
        let kids = children(&tree, &root);
        let done = kids.iter().filter(|k| k["status"] == "completed").count();
        let running = kids.iter().filter(|k| k["status"] == "running").count();
        (done >= 2 && running >= 1).then_some(())
    });
    let tag = weft.tag.clone();
    weft.kill9();
    // Task processes die with the runtime.
    wait_for(10, "orphaned task processes to die", || {
        (common::task_processes_tagged(&tag) == 0).then_some(())
    });
    // What the crash left on disk (the snapshot above may be a moment stale:
    // a child can finish between it and the kill).
    let before = common::stored_runs(&weft.db, &root);
    assert!(
        before.iter().any(|(id, s)| id != &root && s == "completed"),
        "{before:?}"
    );
    let weft = weft.start_again();
    let out = weft.python(&["await_run", &root]);
    let done: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["results"], serde_json::Value::from(vec![1.0; 8]));

    let tree = weft.json(&["tree", &root]);
    let kids = children(&tree, &root);
    assert_eq!(
        kids.len(),
        8,
        "the relaunched parent adopted its children instead of starting new ones"
    );
    let parent = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == root.as_str())
        .unwrap();
    let attempts = parent["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{parent}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{parent}"
    );
    assert_eq!(attempts[1]["status"], "completed");
    // Children finished before the crash kept their one attempt.
    for (id, status) in before.iter().filter(|(id, _)| id != &root) {
        let now = kids.iter().find(|k| k["id"] == id.as_str()).unwrap();
        let attempts = now["attempts"].as_array().unwrap();
        match status.as_str() {
            "completed" => assert_eq!(attempts.len(), 1, "{now}"),
            // Running at the crash: relaunched, the interruption recorded.
            "running" => {
                assert_eq!(attempts.len(), 2, "{now}");
                let error = attempts[0]["error"].as_str().unwrap_or_default();
                assert!(error.contains("interrupted"), "{now}");
            }
            _ => assert_eq!(attempts.len(), 1, "a pending child ran once: {now}"),
        }
    }
}

#[test]
fn every_start_acknowledged_before_a_sigkill_is_run_after_the_restart() {
    use std::sync::{Arc, Mutex};
    use weft::client::Client;

    let mut weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Runs whose start the server acknowledged: (id, x of square(x)).
    let accepted = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    // Four clients start runs back to back until the server is gone, so
    // the kill lands while starts are in flight.
    let clients: Vec<_> = (0..4_i64)
        .map(|c| {
            let (url, accepted) = (weft.url.clone(), accepted.clone());
            rt.spawn(async move {
                let client = Client::new(&url).unwrap();
                for n in 0.. {
                    let x = c * 1_000_000 + n;
                    match client.start_task("square", [x]).await {
                        Ok(run) => accepted.lock().unwrap().push((run.id().to_string(), x)),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    wait_for(60, "acknowledged starts", || {
        (accepted.lock().unwrap().len() >= 40).then_some(())
    });
    weft.kill9();
    for client in clients {
        rt.block_on(client).unwrap();
    }
    let weft = weft.start_again();
    let client = Client::new(&weft.url).unwrap();
    let accepted = accepted.lock().unwrap().clone();
    eprintln!("{} starts acknowledged before the kill", accepted.len());
    for (id, x) in &accepted {
        let wait = client.wait_for_task_run(id);
        let run = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), wait).await })
            .unwrap_or_else(|_| panic!("acknowledged run {id} (square {x}) never ended"))
            .unwrap_or_else(|e| panic!("acknowledged run {id} (square {x}): {e}"));
        assert_eq!(run.run.status.as_str(), "completed", "{id}");
        assert_eq!(run.results, serde_json::json!([x * x]), "{id}");
    }
}

/// Task processes die with a SIGKILLed runtime every way they can be
/// started: by the spawner (the default, see weft-runtime's `spawner`),
/// spawned through the launcher (`WEFT_SPAWNER=off`), and forked
/// (`WEFT_LAUNCHER=off`, and any binary that embeds the runtime without
/// being a launcher).
#[test]
fn task_processes_die_with_a_sigkilled_runtime_however_started() {
    for (how, env) in [
        ("spawner", None),
        ("launcher", Some(("WEFT_SPAWNER", "off"))),
        ("fork", Some(("WEFT_LAUNCHER", "off"))),
    ] {
        let (mut weft, _, pids) = sleepy_parent_running(env.as_slice());
        let tag = weft.tag.clone();
        let runtime = weft.pid().unwrap();
        for pid in pids {
            let parent = common::parent_of(pid).unwrap();
            let by_spawner = common::cmdline_of(parent).contains("__weft-spawner");
            assert_eq!(
                by_spawner,
                how == "spawner",
                "{how}: pid {pid}'s parent is {parent}"
            );
            if by_spawner {
                assert_eq!(
                    common::parent_of(parent),
                    Some(runtime),
                    "the spawner is the runtime's"
                );
            } else {
                assert_eq!(parent, runtime, "{how}");
            }
        }
        weft.kill9();
        wait_for(10, &format!("task processes to die ({how})"), || {
            (common::task_processes_tagged(&tag) == 0).then_some(())
        });
    }
}

/// A server with this environment running `sleepy_parent(2, 30)`: its
/// root's id and the pids of the parent and its two children, each a
/// process of its own.
fn sleepy_parent_running(env: &[(&str, &str)]) -> (Weft, String, Vec<u32>) {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        env,
        ..Default::default()
    });
    let out = weft.python(&["start_only", "sleepy_parent", "[2, 30]"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pids = wait_for(60, "three task processes", || {
        let pids = common::task_pids_tagged(&weft.tag);
        (pids.len() == 3).then_some(pids)
    });
    (weft, root, pids)
}

/// A spawner killed under running attempts takes their processes with it
/// (they must not run on unwatched), their runs end saying so, and the next
/// attempt starts a new spawner.
#[test]
fn a_killed_spawner_ends_its_attempts_and_the_next_run_gets_a_new_one() {
    let (weft, root, pids) = sleepy_parent_running(&[]);
    let spawner = common::parent_of(pids[0]).unwrap();
    assert!(common::cmdline_of(spawner).contains("__weft-spawner"));
    // SAFETY: a plain kill of a process this test's server started.
    assert_eq!(unsafe { libc::kill(spawner as i32, libc::SIGKILL) }, 0);
    wait_for(10, "the spawner's task processes to die", || {
        (weft.task_processes() == 0).then_some(())
    });
    let out = weft.python(&["await_run", &root]);
    let ended: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(ended["status"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ended before reporting a result: weft's spawner exited"),
        "{error}"
    );
    let out = weft.python(&["start_only", "square", "[7]"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = weft.python(&["await_run", &id]);
    let ended: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["results"], serde_json::json!([49]));
}
