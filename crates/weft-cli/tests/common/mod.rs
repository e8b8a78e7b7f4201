//! Starts a real `weft dev` with the example Python app and drives it with
//! the official Python SDK.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The Python with the official SDK: `$WEFT_PYTHON`, else the repo's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the Render SDK: run `.ci/run` once, or `python3 -m venv .venv && .venv/bin/pip install render==1.5.0`, or set WEFT_PYTHON"
    );
    venv
}

pub fn app_py() -> PathBuf {
    repo_root().join("examples/python-app/app.py")
}

/// A `weft dev` process serving the example app.
pub struct Weft {
    child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub db: PathBuf,
    /// Set in weft's environment, so its task processes can be found.
    pub tag: String,
    log: PathBuf,
    /// Removed on drop, unless the test failed (its log is kept to read).
    owns_dir: bool,
    /// How it was started, for [`Weft::start_again`]: extra arguments and
    /// the start command.
    args: Vec<String>,
    command: Vec<PathBuf>,
    /// `weft serve`'s database URL and node id.
    serve: Option<(String, String)>,
}

#[derive(Default)]
pub struct Options<'a> {
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    pub db: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    /// The Python app to serve (default: examples/python-app/app.py).
    pub app: Option<PathBuf>,
    /// The whole start command, instead of Python and `app`.
    pub command: &'a [&'a Path],
    /// `weft serve` on this database as this node, instead of `weft dev`.
    pub serve: Option<Serve<'a>>,
}

/// A `weft serve` node.
#[derive(Clone, Copy)]
pub struct Serve<'a> {
    pub database_url: &'a str,
    pub node_id: &'a str,
}

impl Weft {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options<'_>) -> Self {
        Self::try_start(opts).unwrap_or_else(|log| panic!("weft dev did not start:\n{log}"))
    }

    /// Starts weft; on failure returns its output.
    pub fn try_start(opts: Options<'_>) -> Result<Self, String> {
        let owns_dir = opts.dir.is_none();
        let dir = opts.dir.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!("weft-e2e-{}", uuid()));
            std::fs::create_dir_all(&d).unwrap();
            d
        });
        let db = opts.db.unwrap_or_else(|| dir.join("weft.db"));
        let tag = uuid();
        let log = dir.join(format!("weft-{}.log", uuid()));
        let start_command: Vec<PathBuf> = if opts.command.is_empty() {
            vec![python(), opts.app.unwrap_or_else(app_py)]
        } else {
            opts.command.iter().map(|p| p.to_path_buf()).collect()
        };
        let args: Vec<String> = opts.args.iter().map(|a| a.to_string()).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        match opts.serve {
            None => {
                cmd.arg("dev").arg("--port").arg("0").arg("--db").arg(&db);
            }
            Some(serve) => {
                cmd.args(["serve", "--port", "0", "--database-url", serve.database_url]);
                cmd.args(["--node-id", serve.node_id]);
            }
        }
        cmd.args(&args);
        cmd.arg("--");
        cmd.args(&start_command);
        let out = std::fs::File::create(&log).unwrap();
        cmd.current_dir(&dir)
            .env("WEFT_TEST_TAG", &tag)
            .env_remove("RENDER_API_KEY")
            .envs(opts.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut child = cmd.spawn().expect("weft binary runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Only whole lines: the banner may be half written.
            let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if let Some(url) = whole.lines().find_map(|l| {
                l.split("serving the Render Workflows API on ")
                    .nth(1)
                    .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            }) {
                return Ok(Self {
                    child: Some(child),
                    url,
                    dir,
                    db,
                    tag,
                    log,
                    owns_dir,
                    args,
                    command: start_command,
                    serve: opts
                        .serve
                        .map(|s| (s.database_url.to_string(), s.node_id.to_string())),
                });
            }
            let failed = if let Ok(Some(status)) = child.try_wait() {
                Some(format!("exited with {status}:\n{text}"))
            } else if Instant::now() > deadline {
                let _ = child.kill();
                Some(format!("no banner within 60 s:\n{text}"))
            } else {
                None
            };
            if let Some(failed) = failed {
                if owns_dir {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(failed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything weft printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a scenario of `tests/python/scenarios.py` against this server.
    pub fn python(&self, args: &[&str]) -> Output {
        self.python_env(args, &[])
    }

    pub fn python_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/scenarios.py"))
            .args(args)
            .env("RENDER_LOCAL_DEV_URL", &self.url)
            .env_remove("RENDER_USE_LOCAL_DEV")
            .env_remove("RENDER_API_KEY")
            .envs(env.iter().copied())
            .output()
            .expect("python runs")
    }

    /// Runs a scenario that must print `ok`.
    pub fn scenario(&self, args: &[&str]) {
        self.scenario_env(args, &[]);
    }

    pub fn scenario_env(&self, args: &[&str], env: &[(&str, &str)]) {
        assert_printed_ok(
            &self.python_env(args, env),
            &format!("scenario {args:?}"),
            &self.output(),
        );
    }

    /// Runs a scenario and parses its JSON output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.python(args);
        assert!(
            out.status.success(),
            "scenario {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// A new server on the same database, folder and start command, once
    /// this one is gone (killed with SIGKILL here if it was still running),
    /// quiet.
    pub fn start_again(mut self) -> Weft {
        self.kill9();
        let owns_dir = std::mem::take(&mut self.owns_dir);
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if !args.contains(&"--quiet") {
            args.push("--quiet");
        }
        let command: Vec<&Path> = self.command.iter().map(PathBuf::as_path).collect();
        let serve = self.serve.clone();
        let mut again = Weft::start_with(Options {
            db: Some(self.db.clone()),
            dir: Some(self.dir.clone()),
            args: &args,
            command: &command,
            serve: serve.as_ref().map(|(database_url, node_id)| Serve {
                database_url,
                node_id,
            }),
            ..Default::default()
        });
        again.owns_dir = owns_dir;
        again
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on a child this harness started and has not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// Waits (at most `secs`) for the server to exit by itself.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server as a user would (SIGTERM, so it cleans up after
    /// itself), with SIGKILL if it has not exited after 10 s.
    pub fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: kill(2) on a child this harness started and has not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill9();
    }

    /// Kills weft with SIGKILL: no clean-up of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Task processes of this weft still alive (by the tag in their environment).
    pub fn task_processes(&self) -> usize {
        task_processes_tagged(&self.tag)
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        self.stop();
        if self.owns_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn task_processes_tagged(tag: &str) -> usize {
    task_pids_tagged(tag).len()
}

/// The pids of a test server's task processes (run mode), found by the tag
/// in their environment.
pub fn task_pids_tagged(tag: &str) -> Vec<u32> {
    let needle = format!("WEFT_TEST_TAG={tag}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            let vars: Vec<_> = env
                .split(|b| *b == 0)
                .map(String::from_utf8_lossy)
                .collect();
            vars.iter().any(|v| *v == needle) && vars.iter().any(|v| v == "RENDER_SDK_MODE=run")
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// A process's parent, from `/proc/PID/stat` (`None` once it is gone).
/// Whether a process is alive (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields after
    // its closing parenthesis are state, then the parent's pid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A process's command line, its arguments joined by spaces.
pub fn cmdline_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Every run of `root`'s tree as the database file holds it, read with the
/// store itself while no server runs: (id, status).
pub fn stored_runs(db: &Path, root: &str) -> Vec<(String, String)> {
    use weft_store::{RunFilter, SqliteStore, Store};
    let store = SqliteStore::open(db).unwrap();
    let filter = RunFilter {
        root_ids: vec![root.to_string()],
        limit: 10_000,
        ..Default::default()
    };
    let runs = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.list_runs(&filter))
        .unwrap();
    runs.into_iter()
        .map(|r| (r.id, r.status.to_string()))
        .collect()
}

/// Every run the database file holds, with its attempts, read with the
/// store itself while no server runs.
pub fn stored_run_records(db: &Path) -> Vec<weft_store::RunRecord> {
    use weft_store::{RunFilter, SqliteStore, Store};
    let store = SqliteStore::open(db).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut all = Vec::new();
    let mut before_seq = None;
    loop {
        let page = rt
            .block_on(store.list_runs(&RunFilter {
                before_seq,
                limit: 1000,
                ..Default::default()
            }))
            .unwrap();
        let Some(last) = page.last() else { break };
        before_seq = Some(last.seq);
        all.extend(page);
    }
    all
}

/// `target/<profile>`, where the `weft` binary and the examples are built.
pub fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_weft"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A Rust example app of the SDK (`crates/weft/examples`), built by
/// `cargo test --workspace`.
pub fn example(name: &str) -> PathBuf {
    let app = profile_dir().join("examples").join(name);
    assert!(
        app.is_file(),
        "{} is not built: run `cargo build -p weft-workflows --examples` (`cargo test --workspace` builds it)",
        app.display()
    );
    app
}

/// Runs a script of tests/python with the server's URL, expecting `ok`.
pub fn python_script_ok(script: &str, args: &[&str], url: &str) {
    let out = Command::new(python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .args(args)
        .env("RENDER_USE_LOCAL_DEV", "true")
        .env("RENDER_LOCAL_DEV_URL", url)
        .env_remove("RENDER_API_KEY")
        .output()
        .expect("python runs");
    assert_printed_ok(&out, &format!("{script} {args:?}"), "");
}

/// A build of `@renderinc/sdk` 1.x (render-oss/sdk's `typescript/` folder,
/// built as its README says) named by `WEFT_TS_SDK_DIR`: that SDK is not
/// on the npm registry this machine reaches, so the tests that need it are
/// ignored unless asked for, and fail here, saying why, without it.
pub fn ts_sdk_dir() -> PathBuf {
    let sdk = std::env::var_os("WEFT_TS_SDK_DIR")
        .map(PathBuf::from)
        .expect("set WEFT_TS_SDK_DIR to a built @renderinc/sdk 1.x (render-oss/sdk, folder typescript/)");
    assert!(
        sdk.join("dist/index.js").is_file(),
        "WEFT_TS_SDK_DIR={} has no dist/index.js: build it first",
        sdk.display()
    );
    sdk
}

/// A command succeeded; what it printed. Fails with both its streams.
pub fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A script succeeded and its last line was `ok`.
pub fn assert_printed_ok(out: &Output, what: &str, server_output: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- weft\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(server_output, 80)
    );
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `f` until it returns `Some`, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A schema of its own in the test database (`postgres://127.0.0.1:5432/test`,
/// or `$WEFT_TEST_DATABASE_URL`), dropped afterwards; `url` points there.
pub struct PgSchema {
    pub url: String,
    name: String,
}

fn test_database_url() -> String {
    std::env::var("WEFT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn psql(sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&test_database_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {}: {e} (`.ci/run` starts it)",
                    test_database_url()
                )
            });
        sqlx::query("SET lock_timeout = '10s'")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    });
}

impl PgSchema {
    pub fn new() -> Self {
        let name = format!("weft_e2e_{}", uuid().replace('-', "_"));
        psql(&format!("CREATE SCHEMA {name}"));
        let base = test_database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        PgSchema {
            url: format!("{base}{sep}options=-c%20search_path%3D{name}"),
            name,
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let name = self.name.clone();
            // On a thread of its own: the caller may be inside a runtime.
            let _ = std::thread::spawn(move || psql(&format!("DROP SCHEMA {name} CASCADE"))).join();
        }
    }
}

/// A small filesystem of its own (tmpfs), unmounted when dropped: a disk
/// that can really fill up. Needs root (CI runs the suite as root); fails,
/// saying so, where this user may not mount one.
pub struct SmallDisk {
    pub dir: std::path::PathBuf,
}

impl SmallDisk {
    pub fn mount(bytes: u64) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("weft-small-disk-{}", uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output();
        match out {
            Ok(out) if out.status.success() => SmallDisk { dir },
            other => {
                let _ = std::fs::remove_dir(&dir);
                panic!(
                    "a full disk needs a small filesystem of its own, and `mount -t tmpfs` failed here ({other:?}); run the suite as root (CI does)"
                );
            }
        }
    }

    /// Fills what is left with one file; returns its path.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Small writes take the last partial block.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A runtime for a test's clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (at most 30 s) until the run `id` is running.
pub fn wait_running(rt: &tokio::runtime::Runtime, client: &weft::client::Client, id: &str) {
    wait_for(30, &format!("{id} to run"), || {
        let run = rt.block_on(client.get_task_run(id)).unwrap();
        (run.run.status == weft::protocol::api::TaskRunStatus::Running).then_some(())
    });
}

/// The API's URL, once weft's banner is in the file its stderr goes to.
pub fn banner_url(log: &Path) -> String {
    wait_for(60, "the banner", || {
        let text = std::fs::read_to_string(log).ok()?;
        text.lines().find_map(|l| {
            l.split("serving the Render Workflows API on ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        })
    })
}

/// A `weft serve` node of the cluster on `db`.
pub fn serve_node(db: &PgSchema, id: &str, args: &[&str], command: &[&Path]) -> Weft {
    Weft::start_with(Options {
        args,
        command,
        serve: Some(Serve {
            database_url: &db.url,
            node_id: id,
        }),
        ..Default::default()
    })
}

pub mod proxy;

/// A PostgreSQL server of the test's own (`initdb` and `pg_ctl` of the
/// installed server, in a temporary folder, on a free port): one that a
/// test may stop, restart or break, never the machine's shared one. As
/// root, the server runs as the `postgres` user (PostgreSQL refuses root).
pub struct OwnPostgres {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

impl OwnPostgres {
    /// `None`, with the reason, where no PostgreSQL server is installed.
    pub fn installed() -> Option<PathBuf> {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        bin.join("pg_ctl").is_file().then_some(bin)
    }

    pub fn start() -> Self {
        let bin = Self::installed().expect("a PostgreSQL server (pg_config --bindir)");
        let dir = std::env::temp_dir().join(format!("weft-own-pg-{}", uuid()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown {}", dir.display());
        }
        let pg = OwnPostgres { dir, port, bin };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// One of the server's programs, to run as `postgres` when root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        // SAFETY: geteuid has no preconditions.
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Runs one of the server's programs, which must succeed.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server: `fast` (connections closed, as a restart does)
    /// or `immediate`.
    pub fn stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
    }

    /// Its URL (database `postgres`, trust).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The address of the test database's server (`$WEFT_TEST_DATABASE_URL`
/// or 127.0.0.1:5432).
pub fn test_database_addr() -> std::net::SocketAddr {
    let url = test_database_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host_port = rest.split('/').next().unwrap();
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{port}").parse().unwrap()
}
