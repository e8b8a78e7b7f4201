//! What a web page in the user's browser, another user of the machine, and
//! clients without the token can do to `weft dev`: each request here is a
//! plain HTTP request with the headers a browser (or an attacker) sends.

mod common;

use std::time::{Duration, Instant};

use common::{Options, Weft};
use reqwest::StatusCode;

fn start_body() -> &'static str {
    r#"{"task": "square", "input": [3]}"#
}

#[test]
fn a_web_page_cannot_start_runs_or_refresh_tasks_across_sites() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/task-runs", weft.url);
    rt.block_on(async {
        // A form post from another site: no preflight in a browser.
        let r = http
            .post(&url)
            .header("Origin", "http://evil.example")
            .header("Content-Type", "text/plain")
            .body(start_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("http://evil.example"),
            "{body}"
        );
        let r = http
            .post(format!("{}/weft/v1/tasks/refresh", weft.url))
            .header("Origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // A body that is not JSON, from anywhere.
        let r = http
            .post(&url)
            .header("Content-Type", "text/plain")
            .body(start_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // The server's own pages, and every SDK, go through.
        let r = http
            .post(&url)
            .header("Origin", weft.url.as_str())
            .header("Content-Type", "application/json")
            .body(start_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = http
            .delete(format!("{}/v1/task-runs/trn-nope", weft.url))
            .header("Origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "cancels too");
    });
}

#[test]
fn a_rebinding_page_reads_nothing() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let http = reqwest::Client::new();
    let port = weft.url.rsplit(':').next().unwrap().to_string();
    rt.block_on(async {
        let r = http
            .get(format!("{}/v1/task-runs", weft.url))
            .header("Host", format!("attacker-rebind.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("attacker-rebind.example"),
            "{body}"
        );
        for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
            let r = http
                .get(format!("{}/v1/task-runs", weft.url))
                .header("Host", host.as_str())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{host}");
        }
    });
}

#[test]
fn a_web_page_cannot_open_the_log_stream() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let ws = format!("{}/v1/logs/subscribe", weft.url.replace("http://", "ws://"));
    rt.block_on(async {
        let mut foreign = ws.as_str().into_client_request().unwrap();
        foreign
            .headers_mut()
            .insert("Origin", "http://evil.example".parse().unwrap());
        let err = tokio_tungstenite::connect_async(foreign).await.unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN)
            }
            other => panic!("expected a refusal, got {other}"),
        }
        let mut own = ws.as_str().into_client_request().unwrap();
        own.headers_mut()
            .insert("Origin", weft.url.parse().unwrap());
        tokio_tungstenite::connect_async(own)
            .await
            .expect("the server's own page may");
    });
}

#[test]
fn tokens_any_case_of_bearer_a_challenge_and_a_slow_logged_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "s3cret-token\n").unwrap();
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--api-key-file", key_file.to_str().unwrap()],
        ..Default::default()
    });
    let rt = common::runtime();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/tasks", weft.url);
    rt.block_on(async {
        let r = http
            .get(&url)
            .header("Authorization", "bearer s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the scheme is case-insensitive");
        let started = Instant::now();
        let r = http
            .get(&url)
            .header("Authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "a refusal waits"
        );
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"weft\"");
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    });
    common::wait_for(10, "the refusal to be logged", || {
        weft.output()
            .contains("refused GET /v1/tasks from 127.0.0.1:")
            .then_some(())
    });
}

#[test]
fn task_processes_do_not_see_the_api_key() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        env: &[("RENDER_API_KEY", "do-not-leak")],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = weft::client::Client::builder(&weft.url)
        .token("do-not-leak")
        .build()
        .unwrap();
    let run = rt
        .block_on(client.run_task("env_value", ["RENDER_API_KEY"]).send())
        .unwrap();
    assert_eq!(run.results, serde_json::json!([null]));
}

/// `weft serve` takes its database URL, password and all, from
/// `WEFT_DATABASE_URL`: no task process sees it, nor any other of weft's
/// own settings, whether it is started by the spawner or pre-forked.
#[test]
fn task_processes_do_not_see_the_database_url_or_weft_s_settings() {
    let db = common::PgSchema::new();
    let url = db.url.clone();
    for extra in [&[][..], &["--prefork"][..]] {
        let mut args = vec!["--quiet"];
        args.extend_from_slice(extra);
        let weft = Weft::start_with(Options {
            args: &args,
            env: &[
                ("WEFT_DATABASE_URL", url.as_str()),
                ("WEFT_LOG", "weft_runtime=info"),
            ],
            serve: Some(common::Serve {
                database_url: &url,
                node_id: "n",
            }),
            ..Default::default()
        });
        let rt = common::runtime();
        let client = weft::client::Client::new(&weft.url).unwrap();
        for name in ["WEFT_DATABASE_URL", "WEFT_LOG"] {
            let run = rt
                .block_on(client.run_task("env_value", [name]).send())
                .unwrap();
            assert_eq!(
                run.results,
                serde_json::json!([null]),
                "{name} with {extra:?}"
            );
        }
        // What the user's own environment gives is still there.
        let run = rt
            .block_on(client.run_task("env_value", ["WEFT_TEST_TAG"]).send())
            .unwrap();
        assert_eq!(run.results, serde_json::json!([weft.tag]));
    }
}

/// `weft dev` on the example app with its stdout on a pipe nobody reads,
/// and its stderr (the banner) in a file: (child, url, log file, pipe).
fn dev_on_an_unread_pipe(
    dir: &std::path::Path,
) -> (
    std::process::Child,
    String,
    std::path::PathBuf,
    std::process::ChildStdout,
) {
    use std::process::{Command, Stdio};
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["dev", "--port", "0", "--db"])
        .arg(dir.join("weft.db"))
        .arg("--")
        .arg(common::python())
        .arg(common::app_py())
        .env_remove("RENDER_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = common::banner_url(&log);
    (child, url, log, stdout)
}

/// A terminal nobody reads does not stall the server: lines it cannot
/// take are counted and dropped from the echo (and stored all the same).
#[test]
fn a_terminal_nobody_reads_does_not_stall_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, _log, _unread) = dev_on_an_unread_pipe(dir.path());
    let rt = common::runtime();
    let client = weft::client::Client::new(&url).unwrap();
    let run = rt
        .block_on(client.start_task("chatty", [20_000]).send())
        .unwrap()
        .id()
        .to_string();
    let done = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(120), client.wait_for_task_run(&run)).await
        })
        .expect("the run ends though nobody reads the terminal")
        .unwrap();
    assert_eq!(done.results, serde_json::json!([20_000]));
    let health = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                reqwest::get(format!("{url}/healthz")),
            )
            .await
        })
        .expect("/healthz answers")
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let stored = rt
        .block_on(client.logs(&weft::client::LogsQuery {
            task_run_ids: vec![run],
            limit: Some(1000),
            start_time: None,
            ..Default::default()
        }))
        .unwrap();
    assert!(
        !stored.logs.is_empty() && stored.has_more,
        "the lines are stored"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Task output and task names cannot drive the terminal: control
/// characters are shown escaped there, and kept as they are in the store.
#[test]
fn task_output_cannot_drive_the_terminal() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let dir = tempfile::tempdir().unwrap();
    // A pseudo-terminal for weft's stdout, as when a person runs it.
    let (mut leader, mut follower) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the integers given.
    let opened = unsafe {
        libc::openpty(
            &mut leader,
            &mut follower,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    let log = dir.path().join("stderr.log");
    // SAFETY: the follower descriptor is ours, handed over to the child.
    let tty = unsafe { std::process::Stdio::from_raw_fd(follower) };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["dev", "--port", "0", "--db"])
        .arg(dir.path().join("weft.db"))
        .arg("--")
        .arg(common::python())
        .arg(common::app_py())
        .env_remove("RENDER_API_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(tty)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // SAFETY: the leader descriptor is ours.
    let mut screen = unsafe { std::fs::File::from_raw_fd(leader) };
    let url = common::banner_url(&log);
    let rt = common::runtime();
    let client = weft::client::Client::new(&url).unwrap();
    let evil = "\x1b]0;pwned\x07\x1b]52;c;Y2xpcA==\x07\rweft dev: fake line";
    let run = rt.block_on(client.run_task("say", [evil]).send()).unwrap();
    let stored = rt
        .block_on(client.logs(&weft::client::LogsQuery {
            task_run_ids: vec![run.run.id.clone()],
            ..Default::default()
        }))
        .unwrap()
        .logs[0]
        .message
        .clone();
    // What reached the terminal.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match screen.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains("fake line") {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let seen = reader.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("\\x1b]0;pwned\\x07"), "{seen:?}");
    assert!(seen.contains("\\x0dweft dev: fake line"), "{seen:?}");
    assert!(
        !seen.contains('\x07') && !seen.contains("\x1b]"),
        "raw escapes reached the terminal: {seen:?}"
    );
    // Kept as written in the store (read before the server was stopped).
    assert_eq!(stored, evil);
}

/// A line with no end, and an error of many megabytes, cost bounded memory.
#[test]
fn endless_lines_and_huge_errors_are_bounded() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.run_task("long_line", [300]).send())
        .unwrap();
    assert_eq!(run.results, serde_json::json!([300]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", weft.pid().unwrap())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("peak memory after a 300 MB line: {} MB", peak_kb / 1024);
    assert!(
        peak_kb < 150 * 1024,
        "a 300 MB line raised weft to {} MB",
        peak_kb / 1024
    );
    let logs = rt
        .block_on(client.logs(&weft::client::LogsQuery {
            task_run_ids: vec![run.run.id.clone()],
            ..Default::default()
        }))
        .unwrap();
    let line = &logs.logs[0].message;
    assert!(
        line.len() < 20_000 && line.ends_with("bytes of this line cut]"),
        "{}",
        &line[line.len() - 60..]
    );

    let err = rt
        .block_on(client.run_task("big_error", [10_000_000]).send())
        .unwrap_err();
    let weft::client::Error::TaskRunFailed { message, .. } = err else {
        panic!("{err}")
    };
    assert!(
        message.len() <= 4 * 1024 * 1024 + 200,
        "{} bytes",
        message.len()
    );
    assert!(
        message.ends_with("over the limit of 4194304 bytes]"),
        "{}",
        &message[message.len() - 80..]
    );
}

/// Nesting is bounded, with the chain of task names in the error.
#[test]
fn runaway_nesting_stops_at_the_depth_limit() {
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--max-depth", "5"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let ok = rt.block_on(client.run_task("nested", [4]).send()).unwrap();
    assert_eq!(
        ok.results,
        serde_json::json!([4]),
        "five levels are allowed"
    );
    let err = rt
        .block_on(client.run_task("nested", [10]).send())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("nested 6 deep, past the limit of 5 (--max-depth)"),
        "{text}"
    );
    assert!(text.contains("nested → nested"), "{text}");
}

#[test]
fn small_ones_each_get_a_clear_answer() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    // A task may read its own children's results only.
    let other = rt.block_on(client.run_task("square", [2]).send()).unwrap();
    let peek = rt
        .block_on(
            client
                .run_task("foreign_result", [other.run.id.as_str()])
                .send(),
        )
        .unwrap();
    assert_eq!(peek.results, serde_json::json!([404]));
    // An id that is not text gets JSON.
    let r = rt
        .block_on(reqwest::get(format!("{}/v1/task-runs/%FF%FE", weft.url)))
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = rt.block_on(r.json()).expect("a JSON body");
    assert!(body["message"].is_string(), "{body}");
    // A socket directory too long for Unix sockets is named at start.
    let long = std::env::temp_dir().join("d".repeat(90));
    std::fs::create_dir_all(&long).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["dev", "--port", "0", "--db"])
        .arg(long.join("weft.db"))
        .args(["--", "true"])
        .env("TMPDIR", &long)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&long.display().to_string())
            && err.contains("set TMPDIR to a shorter directory"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&long);
}

/// Clients that send half a request and wait: each is cut off after the
/// header timeout, past the connection limit new ones are closed at once,
/// and neither takes the file descriptors a running fan-out needs.
#[test]
fn slow_clients_cannot_starve_the_server_or_its_tasks() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args([
        "dev",
        "--quiet",
        "--port",
        "0",
        "--header-read-timeout",
        "2s",
        "--db",
    ])
    .arg(dir.path().join("weft.db"))
    .arg("--")
    .arg(common::python())
    .arg(common::app_py())
    .env_remove("RENDER_API_KEY")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let url = common::banner_url(&log);
    let addr = url.trim_start_matches("http://").to_string();
    let rt = common::runtime();
    let client = weft::client::Client::new(&url).unwrap();
    let fan_out = rt
        .block_on(client.start_task("fan_out", [30]).send())
        .unwrap()
        .id()
        .to_string();
    // 400 connections, each with half a request head.
    let mut slow = Vec::new();
    for _ in 0..400 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        slow.push(s);
    }
    // Every one is closed by the server: past the limit at once, the rest
    // after the header timeout.
    let started = Instant::now();
    for (i, s) in slow.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                // An answer before closing (408, say) is fine.
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("connection {i} is still open after 10 s")
                }
                Err(_) => break, // reset: closed
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server let them hang"
    );
    let done = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(120), client.wait_for_task_run(&fan_out)).await
        })
        .expect("the fan-out ends")
        .unwrap();
    assert_eq!(
        done.results,
        serde_json::json!([(0..30).map(|i| i * i).sum::<i64>()]),
        "{:?}",
        done.error
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("Too many open files"), "{text}");
    assert!(
        text.contains("refused") && text.contains("connections so far"),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A process a task started in a session of its own (setsid) dies with
/// the attempt's timeout: every attempt has a cgroup (v2, or one group per
/// v1 controller), and the cgroup is killed.
#[test]
fn descendants_that_leave_the_process_group_die_with_the_attempt() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let pid_file = weft.dir.join("escapee.pid");
    let err = rt
        .block_on(
            client
                .run_task("escapee", [pid_file.to_str().unwrap()])
                .send(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::wait_for(10, "the escaped grandchild to die", || {
        (!common::alive(pid)).then_some(())
    });
    assert!(
        !weft.output().contains("no cgroup per attempt"),
        "{}",
        weft.output()
    );
}

/// Where a secret could leak on the way in: `--help` (from the
/// environment), an error about a URL that does not parse, `ps` (a
/// password typed on the command line: said, with the ways around it),
/// and key or URL files other users can read (said).
#[test]
fn secrets_stay_out_of_help_and_errors_and_files_open_to_others_are_named() {
    let weft = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RENDER_API_KEY")
            .output()
            .unwrap()
    };
    let secret_url = "postgres://weft:SECRET@127.0.0.1:9/nowhere";
    for command in ["dev", "serve"] {
        let out = weft(&[command, "--help"], &[("WEFT_DATABASE_URL", secret_url)]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--database-url-file"), "{help}");
        assert!(
            !help.contains("SECRET"),
            "{command} --help shows the password:\n{help}"
        );
    }
    for url in [
        "postgres://127.0.0.1:99999/db?user=u&password=SECRET",
        "postgres://u:SECRET@127.0.0.1:99999/db",
        secret_url,
    ] {
        let out = weft(
            &["serve", "--port", "0", "--database-url", url, "--", "true"],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            !err.contains("SECRET"),
            "the password is in the error: {err}"
        );
        assert!(err.contains("127.0.0.1"), "the database is named: {err}");
    }

    // A password on the command line works, and is said to be visible.
    let db = common::PgSchema::new();
    let with_password = db.url.replacen("postgres@", "postgres:pw@", 1);
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("db-url");
    let key_file = dir.path().join("key");
    std::fs::write(&url_file, format!("{with_password}\n")).unwrap();
    std::fs::write(&key_file, "a-long-enough-key-for-this\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for file in [&url_file, &key_file] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let node = Weft::start_with(Options {
        args: &["--quiet", "--database-url", &with_password],
        serve: None,
        ..Default::default()
    });
    let said = node.output();
    assert!(
        said.contains("the password in --database-url is visible to every user of this machine"),
        "{said}"
    );
    assert!(!said.contains("pw@"), "{said}");
    drop(node);
    // From a file: no word about `ps`, one about the file's mode.
    let url_file_arg = url_file.to_string_lossy().into_owned();
    let key_file_arg = key_file.to_string_lossy().into_owned();
    let node = Weft::start_with(Options {
        args: &[
            "--quiet",
            "--database-url-file",
            &url_file_arg,
            "--api-key-file",
            &key_file_arg,
        ],
        ..Default::default()
    });
    let said = node.output();
    assert!(!said.contains("visible to every user"), "{said}");
    for file in [&url_file, &key_file] {
        assert!(
            said.contains(&format!(
                "{} can be read by other users of this machine (mode 644)",
                file.display()
            )),
            "{said}"
        );
    }
    let rt = common::runtime();
    let client = weft::client::Client::builder(&node.url)
        .token("a-long-enough-key-for-this")
        .build()
        .unwrap();
    let run = rt.block_on(client.run_task("square", [7]).send()).unwrap();
    assert_eq!(run.results, serde_json::json!([49]));
}

/// A task process can signal its parent, weft's spawner (or the
/// `--prefork` fork server): it runs as the same user. Signals that can be
/// ignored are; SIGSTOP, which cannot, is undone at once (and said), so
/// later runs start and end as ever, and the stopped parent's children
/// are reaped again.
#[test]
fn a_task_cannot_freeze_or_end_the_process_that_starts_the_others() {
    for extra in [&[][..], &["--prefork"][..]] {
        let mut args = vec!["--quiet", "--no-standby"];
        args.extend_from_slice(extra);
        let weft = Weft::start_with(Options {
            args: &args,
            ..Default::default()
        });
        let rt = common::runtime();
        let client = weft::client::Client::new(&weft.url).unwrap();
        let run = |task: &str, input: serde_json::Value| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), client.run_task(task, input).send())
                    .await
            })
            .unwrap_or_else(|_| panic!("{task} did not end within 20 s ({extra:?})"))
            .unwrap()
        };
        // What the parent ignores, its children do not (Python ignores
        // SIGPIPE and SIGXFSZ itself, as it always does).
        let ignored = run("ignored_signals", serde_json::json!([]));
        assert_eq!(
            ignored.results,
            serde_json::json!(["SIGPIPE", "SIGXFSZ"]),
            "{extra:?}"
        );
        let mut parents = Vec::new();
        for signal in [
            "SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGTSTP", "SIGSTOP",
        ] {
            let sent = run("signal_parent", serde_json::json!([signal]));
            parents.push(sent.results.to_value()[0].as_i64().unwrap());
            // Every later run starts and ends, one after the other.
            for x in 0..3 {
                let done = run("square", serde_json::json!([x]));
                assert_eq!(done.results, serde_json::json!([x * x]), "after {signal}");
            }
        }
        parents.dedup();
        assert_eq!(
            parents.len(),
            1,
            "the same parent lived through every signal: {parents:?}"
        );
        assert!(
            weft.output().contains("was stopped by a signal"),
            "{}",
            weft.output()
        );
        // Its children's ends are heard again: nothing is left running.
        common::wait_for(10, "no task process left", || {
            (weft.task_processes() == 0).then_some(())
        });
    }
}

/// Runs, inputs, results and logs stay out of caches: every API answer
/// and page says `no-store` (the static assets only ask to be revalidated).
#[test]
fn answers_and_pages_are_never_cached() {
    let weft = Weft::start();
    let rt = common::runtime();
    let cache_control = |path: &str, accept: &str| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("{}{path}", weft.url))
                .header("Accept", accept)
                .send()
                .await
                .unwrap();
            r.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_string())
        })
    };
    for path in [
        "/v1/tasks",
        "/v1/task-runs",
        "/weft/v1/nodes",
        "/metrics",
        "/nowhere",
    ] {
        assert_eq!(
            cache_control(path, "application/json").as_deref(),
            Some("no-store"),
            "{path}"
        );
    }
    for page in ["/", "/tasks", "/runs/trn-none"] {
        assert_eq!(
            cache_control(page, "text/html").as_deref(),
            Some("no-store"),
            "{page}"
        );
    }
    assert_eq!(
        cache_control("/assets/app.js", "*/*").as_deref(),
        Some("no-cache")
    );
}

/// Guessing the key: an address that tried ten keys without a right one
/// has its keys refused, unseen, for a minute (however many it sends at
/// once), every wrong one is logged with the address, and a short key is
/// said to be short.
#[test]
fn key_guesses_are_counted_logged_and_locked_out() {
    let key = "x";
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--host", "0.0.0.0", "--api-key", key],
        ..Default::default()
    });
    assert!(
        weft.output()
            .contains("the API key has 1 characters: a short key can be guessed"),
        "{}",
        weft.output()
    );
    let port = weft.url.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let rt = common::runtime();
    let http = reqwest::Client::new();
    let guesses: Vec<_> = (0..100)
        .map(|i| sign_in(&http, &url, &format!("guess-{i}")))
        .collect();
    let statuses: Vec<StatusCode> = rt.block_on(async {
        futures::future::join_all(guesses)
            .await
            .into_iter()
            .map(|r| r.unwrap().status())
            .collect()
    });
    let looked_at = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((looked_at, refused), (10, 90), "{statuses:?}");
    // Now even the right key is not looked at from this address, by
    // sign-in or as a bearer token, and the answer says when to try again.
    let right = rt.block_on(sign_in(&http, &url, key)).unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = right.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let bearer = rt
        .block_on(http.get(format!("{url}/v1/tasks")).bearer_auth(key).send())
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::TOO_MANY_REQUESTS);
    let said = weft.output();
    assert!(
        said.contains("refused a sign-in to the dashboard from 127.0.0.1:"),
        "{said}"
    );
    assert!(
        said.contains("(try 10 in a row from this address)"),
        "{said}"
    );
    assert!(
        said.contains(
            "127.0.0.1 tried 10 API keys without a right one: its keys are refused for 60 s"
        ),
        "{said}"
    );
}

/// A sign-in to the dashboard with `token`.
fn sign_in(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    http.post(format!("{url}/weft/v1/session"))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({ "token": token }).to_string())
        .send()
}

/// Dashboard sessions: each sign-in gets a random id of its own (not the
/// key, not a digest of it), kept by the server, so that a sign-out ends
/// that session (and no other), a restart keeps the others, and a server
/// started with another key knows none of them.
#[test]
fn dashboard_sessions_are_random_revocable_and_belong_to_their_key() {
    let key = "a-dashboard-key-long-enough-1";
    let dir = tempfile::tempdir().unwrap();
    let start = |key: &str| {
        Weft::start_with(Options {
            args: &["--quiet", "--host", "0.0.0.0", "--api-key", key],
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
    };
    let rt = common::runtime();
    let http = reqwest::Client::new();
    let local = |weft: &Weft| format!("http://127.0.0.1:{}", weft.url.rsplit(':').next().unwrap());
    let status_with = |url: &str, cookie: &str| {
        rt.block_on(
            http.get(format!("{url}/v1/tasks"))
                .header("Cookie", format!("weft_session={cookie}"))
                .send(),
        )
        .unwrap()
        .status()
    };
    let mut weft = start(key);
    let url = local(&weft);
    let cookie = || {
        let answer = rt.block_on(sign_in(&http, &url, key)).unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let set = answer.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';')
            .next()
            .unwrap()
            .strip_prefix("weft_session=")
            .unwrap()
            .to_string()
    };
    let (first, second) = (cookie(), cookie());
    assert_ne!(first, second, "each sign-in its own session");
    for c in [&first, &second] {
        assert!(c.len() >= 32 && !c.contains(key), "{c}");
        assert_eq!(status_with(&url, c), StatusCode::OK);
    }
    assert_eq!(
        status_with(&url, "0123456789abcdef"),
        StatusCode::UNAUTHORIZED
    );
    // Signing out (as the dashboard's page does) ends that session only.
    let out = rt
        .block_on(
            http.delete(format!("{url}/weft/v1/session"))
                .header("Cookie", format!("weft_session={first}"))
                .header("Origin", &url)
                .header("X-Weft-Csrf", "1")
                .send(),
        )
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_with(&url, &first),
        StatusCode::UNAUTHORIZED,
        "signed out"
    );
    assert_eq!(status_with(&url, &second), StatusCode::OK);
    // A restart keeps the session; another key ends it.
    weft.stop();
    drop(weft);
    weft = start(key);
    assert_eq!(
        status_with(&local(&weft), &second),
        StatusCode::OK,
        "kept across a restart"
    );
    weft.stop();
    drop(weft);
    let weft = start("another-dashboard-key-long-2");
    assert_eq!(
        status_with(&local(&weft), &second),
        StatusCode::UNAUTHORIZED,
        "another key"
    );
}

/// Another user of the machine reaches the loopback port too: it is
/// refused (it would list every run and start runs that execute as the
/// owner), unless it presents the key; the owner needs none, as Render's
/// clients expect of a local dev server.
#[test]
fn other_users_of_the_machine_are_refused_on_loopback_without_the_key() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs a client as another user (nobody), which needs root (CI runs as root)"
    );
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                "curl",
                "-s",
                "-m",
                "10",
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().to_string(), body.to_string())
    };
    for key in [None, Some("a-key-for-the-other-user-test")] {
        let mut args = vec!["--quiet"];
        if let Some(key) = key {
            args.extend(["--api-key", key]);
        }
        let weft = Weft::start_with(Options {
            args: &args,
            ..Default::default()
        });
        let (code, body) = as_nobody(&[&format!("{}/v1/task-runs", weft.url)]);
        assert_eq!(code, "403", "{body}");
        assert!(
            body.contains("belongs to another user of this machine"),
            "{body}"
        );
        let (code, _) = as_nobody(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"task":"square","input":[3]}"#,
            &format!("{}/v1/task-runs", weft.url),
        ]);
        assert_eq!(code, "403");
        let rt = common::runtime();
        let owner = match key {
            Some(key) => weft::client::Client::builder(&weft.url).token(key).build(),
            None => weft::client::Client::builder(&weft.url).build(),
        }
        .unwrap();
        let runs = rt
            .block_on(owner.list_task_runs(&Default::default()))
            .unwrap();
        assert!(runs.is_empty(), "the other user started nothing");
        // The owner's own clients need no set-up.
        if key.is_none() {
            let done = rt.block_on(owner.run_task("square", [4]).send()).unwrap();
            assert_eq!(done.results, serde_json::json!([16]));
            weft.scenario(&["run_task_shapes"]);
        }
        // With the key, another user may use it.
        if let Some(key) = key {
            let (code, body) = as_nobody(&[
                "-H",
                &format!("Authorization: Bearer {key}"),
                &format!("{}/v1/tasks", weft.url),
            ]);
            assert_eq!(code, "200", "{body}");
        }
        assert!(
            weft.output().contains("from uid 65534 on this machine"),
            "{}",
            weft.output()
        );
    }
}

/// Runs `weft ARGS` with its stdout and stderr on a pseudo-terminal, as a
/// person runs it; what the terminal got.
fn weft_on_a_terminal(args: &[&str]) -> String {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut leader, mut follower) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the integers given.
    let opened = unsafe {
        libc::openpty(
            &mut leader,
            &mut follower,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    // SAFETY: both descriptors are ours; each Stdio owns a copy.
    let (out, err) = unsafe {
        (
            std::process::Stdio::from_raw_fd(libc::dup(follower)),
            std::process::Stdio::from_raw_fd(follower),
        )
    };
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap();
    assert!(status.success(), "weft {args:?}: {status}");
    // SAFETY: the leader descriptor is ours.
    let mut screen = unsafe { std::fs::File::from_raw_fd(leader) };
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The child is gone: read what is buffered until the terminal is empty.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(leader, libc::F_SETFL, libc::O_NONBLOCK) };
    while let Ok(n) = screen.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A task's name is the app's to choose: escape sequences in it are shown
/// escaped in the banner and in `weft runs show` and `weft runs tree` on a
/// terminal, as in every other listing.
#[test]
fn task_names_cannot_drive_the_terminal_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.py");
    std::fs::write(
        &app,
        "from render.workflows import Workflows\n\
         app = Workflows()\n\
         @app.task(name='evil\\x1b]0;pwned\\x07')\n\
         def evil(ctx):\n    return 1\n\
         if __name__ == '__main__':\n    app.start()\n",
    )
    .unwrap();
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        app: Some(app),
        ..Default::default()
    });
    let said = weft.output();
    let banner = said
        .lines()
        .find(|l| l.contains("serving the Render Workflows API"))
        .unwrap();
    assert!(banner.contains("evil\\x1b]0;pwned\\x07"), "{banner:?}");
    assert!(
        !said.contains('\x07') && !said.contains("\x1b]"),
        "{said:?}"
    );
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(
            client
                .run_task("evil\x1b]0;pwned\x07", serde_json::json!([]))
                .send(),
        )
        .unwrap();
    for args in [["runs", "show"], ["runs", "tree"]] {
        let seen = weft_on_a_terminal(&[args[0], args[1], &run.run.id, "--url", &weft.url]);
        assert!(
            seen.contains("evil\\x1b]0;pwned\\x07"),
            "{args:?}: {seen:?}"
        );
        assert!(
            !seen.contains('\x07') && !seen.contains("\x1b]"),
            "{args:?}: {seen:?}"
        );
    }
}

/// A NUL byte in an id, a filter or an idempotency key is refused with a
/// 400 naming where it was, on SQLite and on PostgreSQL alike (PostgreSQL
/// text cannot hold one: it was a 500 there), and nothing else changes.
#[test]
fn nul_bytes_are_refused_by_name_on_both_stores() {
    on_both_stores(|weft, on_postgres| {
        let rt = common::runtime();
        let http = reqwest::Client::new();
        let ask = |method: reqwest::Method, path: &str, body: Option<&str>| {
            rt.block_on(async {
                let mut req = http.request(method, format!("{}{path}", weft.url));
                if let Some(body) = body {
                    req = req
                        .header("Content-Type", "application/json")
                        .body(body.to_string());
                }
                let r = req.send().await.unwrap();
                (r.status(), r.text().await.unwrap())
            })
        };
        for (method, path, body, names) in [
            (reqwest::Method::GET, "/v1/task-runs/trn-%00x", None, "id"),
            (reqwest::Method::DELETE, "/v1/task-runs/%00", None, "id"),
            (
                reqwest::Method::GET,
                "/v1/task-runs?rootTaskRunId=a%00b",
                None,
                "rootTaskRunId",
            ),
            (
                reqwest::Method::GET,
                "/v1/task-runs?taskSlug=%00",
                None,
                "taskSlug",
            ),
            (
                reqwest::Method::GET,
                "/v1/logs?taskRunId=x%00",
                None,
                "taskRunId",
            ),
            (reqwest::Method::GET, "/weft/v1/runs?task=%00", None, "task"),
            (
                reqwest::Method::POST,
                "/v1/task-runs",
                Some(r#"{"task":"square","input":[2],"idempotencyKey":"k\u0000"}"#),
                "idempotencyKey",
            ),
            (
                reqwest::Method::POST,
                "/v1/task-runs",
                Some(r#"{"task":"squ\u0000are","input":[2]}"#),
                "task",
            ),
        ] {
            let (status, text) = ask(method.clone(), path, body);
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} (postgres: {on_postgres}): {text}"
            );
            assert!(
                text.contains("NUL") && text.contains(names),
                "{method} {path}: {text}"
            );
        }
        let client = weft::client::Client::new(&weft.url).unwrap();
        let done = rt.block_on(client.run_task("square", [9]).send()).unwrap();
        assert_eq!(done.results, serde_json::json!([81]));
        let runs = rt
            .block_on(client.list_task_runs(&Default::default()))
            .unwrap();
        assert_eq!(runs.len(), 1, "nothing else was started");
    });
}

/// Runs `check` on a `weft dev` on SQLite, then on one on PostgreSQL (a
/// schema of its own): `(server, on PostgreSQL)`.
fn on_both_stores(mut check: impl FnMut(&Weft, bool)) {
    let db = common::PgSchema::new();
    for on_postgres in [false, true] {
        let mut args = vec!["--quiet"];
        if on_postgres {
            args.extend(["--database-url", db.url.as_str()]);
        }
        let weft = Weft::start_with(Options {
            args: &args,
            ..Default::default()
        });
        check(&weft, on_postgres);
    }
}

/// Inputs are bounded per run, not in sum: what the store takes is said in
/// `/metrics` and on the dashboard's runs page (by what it serves), on
/// SQLite and PostgreSQL, and grows with what runs carry.
#[test]
fn what_the_store_takes_is_said() {
    on_both_stores(|weft, on_postgres| {
        let rt = common::runtime();
        let stored = || -> (u64, u64) {
            rt.block_on(async {
                let metrics = reqwest::get(format!("{}/metrics", weft.url))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let from_metrics = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("weft_store_bytes "))
                    .unwrap_or_else(|| panic!("no weft_store_bytes in {metrics}"))
                    .parse()
                    .unwrap();
                let page: serde_json::Value = reqwest::get(format!("{}/weft/v1/runs", weft.url))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (from_metrics, page["storedBytes"].as_u64().unwrap())
            })
        };
        let (before, _) = stored();
        let client = weft::client::Client::new(&weft.url).unwrap();
        // Random letters: a database that compresses (PostgreSQL's TOAST
        // does) cannot make them small.
        let big: String = (0..1024 * 1024).map(|_| fastrand::alphanumeric()).collect();
        for _ in 0..4 {
            rt.block_on(client.run_task("echo", [&big]).send()).unwrap();
        }
        let (after, on_page) = stored();
        assert!(
            after >= before + 4 * 1024 * 1024,
            "4 MiB of inputs (and as much of results) stored: {before} -> {after} (postgres: {on_postgres})"
        );
        assert!(on_page >= after / 2, "the dashboard says it too: {on_page}");
    });
}
