//! `weft dev --prefork`: Python task processes forked from one fork server
//! that imported the SDK once. Each attempt must still be a process of its
//! own, with its own socket, environment, process group and exit, and the
//! runtime's guarantees (timeouts, cancel, dying with the runtime) hold.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Options, Weft, wait_for};
use serde_json::Value;

fn prefork_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/prefork_app.py")
}

fn start(dir: Option<PathBuf>, args: &[&str]) -> Weft {
    let mut all = vec!["--prefork", "--quiet"];
    all.extend_from_slice(args);
    Weft::start_with(Options {
        args: &all,
        app: Some(prefork_app()),
        dir,
        ..Default::default()
    })
}

/// `weft ARGS --url URL`, against this server.
fn cli(weft: &Weft, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .args(["--url", &weft.url])
        .output()
        .unwrap()
}

/// `weft run TASK INPUT --json`: the run as JSON, whether it succeeded or not.
fn run(weft: &Weft, task: &str, input: &str) -> Value {
    let out = cli(weft, &["run", task, input, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "weft run {task} printed no JSON ({e}): {}\n{}\nserver:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            weft.output()
        )
    })
}

/// A completed run's `results` (the Python SDK sends a list as it is and
/// any other value as a list of one).
fn results(run: &Value) -> Value {
    assert_eq!(run["status"], "completed", "{run:#}");
    run["results"].clone()
}

/// The pids of this weft's pre-fork servers (`weft_prefork.py` started
/// by the runtime itself).
fn servers(weft: &Weft) -> Vec<i32> {
    let runtime = weft.pid().unwrap() as i32;
    processes()
        .filter(|(_, ppid, cmdline)| *ppid == runtime && cmdline.contains("weft_prefork.py"))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Children the servers forked that are still alive.
fn forked_children(servers: &[i32]) -> usize {
    processes()
        .filter(|(_, ppid, _)| servers.contains(ppid))
        .count()
}

/// (pid, ppid, cmdline) of every process.
fn processes() -> impl Iterator<Item = (i32, i32, String)> {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start
        // after the last `)`.
        let ppid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some((
            pid,
            ppid,
            String::from_utf8_lossy(&cmdline).replace('\0', " "),
        ))
    })
}

#[test]
fn each_forked_attempt_is_a_process_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "WEFT_TEST_FROM_DOTENV=loaded\n").unwrap();
    let markers = dir.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    let weft = start(Some(dir.path().to_path_buf()), &["--max-concurrent", "3"]);
    let input = serde_json::json!([6, markers]).to_string();
    let children = results(&run(&weft, "fan_whoami", &input));
    let children = children.as_array().unwrap();
    assert_eq!(children.len(), 6);
    let server = servers(&weft);
    assert_eq!(server.len(), 1, "one server");
    let runtime = weft.pid().unwrap() as i64;
    let mut pids = std::collections::BTreeSet::new();
    let mut sockets = std::collections::BTreeSet::new();
    let mut randoms = std::collections::BTreeSet::new();
    for child in children {
        let pid = child["pid"].as_i64().unwrap();
        assert!(pids.insert(pid), "a pid twice: {children:?}");
        assert!(sockets.insert(child["socket"].to_string()), "{children:?}");
        assert!(
            randoms.insert(child["random"].to_string()),
            "random reseeded per child"
        );
        assert_eq!(child["ppid"], server[0], "forked by the server");
        assert_ne!(child["ppid"], runtime);
        assert_eq!(child["pgid"], pid, "a process group of its own");
        assert_eq!(child["imported_in"], pid, "the script ran in the child");
        assert_eq!(child["mode"], "run");
        assert_eq!(child["main"], "__main__");
        assert_eq!(child["argv0"], "prefork_app.py");
        assert_eq!(child["from_dotenv"], "loaded", "the .env reached it");
        assert_eq!(child["api_key"], Value::Null, "the runtime's key did not");
        assert_eq!(child["stdin"], "", "stdin is /dev/null");
    }
    // Each child ran its atexit handler, after its run had reported.
    wait_for(10, "six atexit markers", || {
        (std::fs::read_dir(&markers).unwrap().count() == 6).then_some(())
    });
    // Its output is the run's log, as for any task process.
    let logs = run(&weft, "exit_code", "[3]");
    assert_eq!(logs["status"], "failed", "{logs:#}");
    let error = logs["error"].as_str().unwrap_or_default();
    assert!(error.contains("exit status: 3"), "{error}");
    wait_for(10, "every forked child to exit", || {
        (forked_children(&server) == 0).then_some(())
    });
}

/// Starts `hold(60)` without waiting; returns its run id.
fn start_hold(weft: &Weft) -> String {
    let out = cli(weft, &["run", "hold", "[60]", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The run once it has ended.
fn ended(weft: &Weft, id: &str) -> Value {
    wait_for(30, "the run to end", || {
        let out = cli(weft, &["runs", "show", id, "--json"]);
        let run: Value = serde_json::from_slice(&out.stdout).ok()?;
        (run["status"] != "running" && run["status"] != "pending").then_some(run)
    })
}

#[test]
fn forked_attempts_join_their_threads_and_die_when_canceled() {
    let weft = start(None, &[]);
    let marker = weft.dir.join("thread-done");
    let input = serde_json::json!([marker]).to_string();
    assert_eq!(results(&run(&weft, "threads_joined", &input))[0], "started");
    // The child waited for its non-daemon thread before it exited.
    wait_for(10, "the thread's marker", || marker.exists().then_some(()));

    let id = start_hold(&weft);
    let server = servers(&weft);
    wait_for(30, "the held child", || {
        (forked_children(&server) == 1).then_some(())
    });
    let out = cli(&weft, &["runs", "cancel", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ended(&weft, &id)["status"], "canceled");
    wait_for(10, "the canceled child to die", || {
        (forked_children(&server) == 0).then_some(())
    });
}

#[test]
fn the_sdk_scenarios_pass_on_forked_processes() {
    let weft = Weft::start_with(Options {
        args: &["--prefork", "--quiet", "--max-concurrent", "4"],
        ..Default::default()
    });
    for scenario in [
        "run_task_shapes",
        "failures",
        "timeouts",
        "logs",
        "idempotency",
    ] {
        weft.scenario(&[scenario]);
    }
    let markers = weft.dir.join("markers");
    weft.scenario(&["retries", markers.to_str().unwrap()]);
    let server = servers(&weft);
    wait_for(10, "no forked child left", || {
        (forked_children(&server) == 0).then_some(())
    });
}

#[test]
fn a_killed_fork_server_fails_its_attempts_and_the_next_one_starts_anew() {
    let weft = start(None, &[]);
    let first = results(&run(&weft, "whoami", "[]"))[0].clone();
    let old = servers(&weft);
    assert_eq!(old.len(), 1);
    let id = start_hold(&weft);
    wait_for(30, "the held child", || {
        (forked_children(&old) == 1).then_some(())
    });
    // SAFETY: plain syscall on a pid this test found.
    unsafe { libc::kill(old[0], libc::SIGKILL) };
    let ended = ended(&weft, &id);
    assert_eq!(ended["status"], "failed", "{ended:#}");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(error.contains("pre-fork server exited"), "{error}");
    // Its child died with it; the next attempt gets a new server.
    wait_for(10, "the held child to die", || {
        (forked_children(&old) == 0).then_some(())
    });
    let second = results(&run(&weft, "whoami", "[]"))[0].clone();
    assert_ne!(second["ppid"], first["ppid"], "a new server");
    assert_eq!(servers(&weft).len(), 1);
}

#[test]
fn forked_processes_die_with_a_sigkilled_runtime() {
    let mut weft = start(None, &[]);
    for _ in 0..2 {
        start_hold(&weft);
    }
    let server = servers(&weft);
    wait_for(30, "two held children", || {
        (forked_children(&server) == 2).then_some(())
    });
    weft.kill9();
    wait_for(10, "the server and its children to die", || {
        let alive = processes().any(|(pid, _, _)| pid == server[0]);
        (!alive && forked_children(&server) == 0).then_some(())
    });
}

#[test]
fn prefork_refuses_what_it_cannot_fork_and_names_it() {
    let err = Weft::try_start(Options {
        args: &["--prefork"],
        command: &[Path::new("/bin/sh"), Path::new("-c"), Path::new("true")],
        ..Default::default()
    })
    .err()
    .expect("--prefork with a shell start command is refused");
    assert!(
        err.contains("--prefork runs Python start commands"),
        "{err}"
    );
    assert!(err.contains("`/bin/sh -c true` is not one"), "{err}");

    // A preload that does not import: the server cannot start, and says why.
    let err = Weft::try_start(Options {
        args: &["--prefork", "--preload", "weft_no_such_module"],
        app: Some(prefork_app()),
        ..Default::default()
    })
    .err()
    .expect("registration fails");
    assert!(
        err.contains("No module named 'weft_no_such_module'"),
        "{err}"
    );
    assert!(
        err.contains("pre-fork server exited before it was ready"),
        "{err}"
    );
}
