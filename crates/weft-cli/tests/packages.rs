//! What a release ships (`scripts/package.sh` builds it into `dist/`),
//! installed the way a user installs it, on a PATH without Rust: the wheel
//! into a fresh venv (`weft init`, `pip install -r requirements.txt`,
//! `weft dev`, the template's client, the `weft_dev` pytest fixture), and
//! the npm package into a fresh prefix (`npx weft`, `startDev`, and the
//! TypeScript template when the TypeScript SDK is at hand).
//!
//! Building the packages is a release build with zig as the linker (about
//! ten minutes on two cores), too long for every run of the suite: these
//! tests are ignored there, and `scripts/test-packages.sh` builds `dist/`
//! and runs them. Run by hand, they fail (never pass) without `dist/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::ok;

/// `dist/` as scripts/package.sh left it (or `WEFT_DIST`).
fn dist() -> PathBuf {
    let dist = std::env::var_os("WEFT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("dist"));
    assert!(
        dist.join("SIZES.md").is_file(),
        "{} holds no packages: run scripts/package.sh first (scripts/test-packages.sh does both)",
        dist.display()
    );
    dist
}

/// The one file in `dir` whose name starts with `prefix` and ends with `suffix`.
fn artifact(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{suffix} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// A PATH with the given folder first and then only the system's: no
/// cargo, no rustc (they live in ~/.cargo/bin), no weft built here.
fn path_without_rust(first: &Path) -> String {
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", first.display());
    for tool in ["cargo", "rustc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            !found.status.success(),
            "{tool} is on the user's PATH ({path}): {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }
    path
}

/// A command as the user runs it: their PATH, none of this build's
/// environment (cargo's variables, the suite's settings).
fn user_command(program: impl AsRef<std::ffi::OsStr>, path: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var_os("HOME").unwrap())
        .env("LANG", "C.UTF-8")
        .current_dir(cwd);
    // pip's and npm's caches and proxies, so installing from the
    // registries works as it does for the user on this machine.
    for (k, v) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("PIP_")
            || k_str.starts_with("npm_config_")
            || k_str.to_ascii_lowercase().ends_with("_proxy")
        {
            cmd.env(k, v);
        }
    }
    cmd
}

/// A `weft dev` started from the installed package; killed when dropped.
struct Dev {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Dev {
    fn start(mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("weft dev starts");
        let url = common::banner_url(&log);
        Dev { child, log, url }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs dist/ from scripts/package.sh (maturin and zig from PyPI, a 10-minute release build): scripts/test-packages.sh builds it and runs this"]
fn the_wheel_installs_weft_and_its_pytest_fixture_without_rust() {
    let dist = dist();
    let wheel = artifact(&dist, "weft_workflows-", ".whl");
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    ok(
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .unwrap(),
        "python3 -m venv",
    );
    let bin = venv.join("bin");
    let path = path_without_rust(&bin);
    let home = tmp.path();
    let pip_install = |args: &[&str], cwd: &Path| {
        let mut cmd = user_command(bin.join("pip"), &path, cwd);
        cmd.args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--find-links", dist.to_str().unwrap()])
            .args(args);
        ok(cmd.output().unwrap(), &format!("pip install {args:?}"));
    };
    pip_install(&[wheel.to_str().unwrap()], home);

    // The command is on the venv's PATH; `python -m weft_workflows` is the
    // same binary under a name no other package takes.
    let version = ok(
        user_command("weft", &path, home)
            .arg("--version")
            .output()
            .unwrap(),
        "weft --version",
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let again = ok(
        user_command("python", &path, home)
            .args(["-m", "weft_workflows", "--version"])
            .output()
            .unwrap(),
        "python -m weft_workflows",
    );
    assert_eq!(
        again, version,
        "python -m weft_workflows runs the same binary"
    );

    // The README's path: init, install the requirements (the weft package
    // among them, found in dist/ as it would be on PyPI), serve, trigger.
    ok(
        user_command("weft", &path, home)
            .args(["init", "--language", "python", "--dir", "proj"])
            .output()
            .unwrap(),
        "weft init",
    );
    let project = home.join("proj");
    let requirements = std::fs::read_to_string(project.join("requirements.txt")).unwrap();
    assert!(requirements.contains("weft-workflows"), "{requirements}");
    pip_install(&["-r", "requirements.txt"], &project);

    let mut serve = user_command("weft", &path, &project);
    serve
        .args(["dev", "--port", "0", "--db"])
        .arg(home.join("dev.db"))
        .args(["--", "python", "main.py"]);
    let dev = Dev::start(serve, home.join("dev.log"));
    let printed = ok(
        user_command("python", &path, &project)
            .args(["client.py", "1", "2", "3"])
            .env("RENDER_LOCAL_DEV_URL", &dev.url)
            .output()
            .unwrap(),
        "the template's client",
    );
    assert!(
        printed.replace(' ', "").contains("sum_squares([1,2,3])=14"),
        "{printed}\n--- weft dev\n{}",
        dev.output()
    );
    drop(dev);

    // The template's own test, on the `weft_dev` fixture.
    let pytest = user_command("python", &path, &project)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .unwrap();
    let out = ok(pytest, "pytest on the template");
    assert!(out.contains("1 passed"), "{out}");

    // A failing test shows the server's output; the server is gone after.
    std::fs::write(
        project.join("test_failing.py"),
        "from render import Render\n\n\
         def test_a_task_that_is_not_there(weft_dev):\n    \
         assert weft_dev.url.startswith('http://127.0.0.1:')\n    \
         Render().workflows.run_task('no_such_task', [])\n",
    )
    .unwrap();
    let pytest = user_command("python", &path, &project)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_failing.py",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&pytest.stdout);
    assert_eq!(pytest.status.code(), Some(1), "{out}");
    assert!(out.contains("weft dev output"), "{out}");
    assert!(
        out.contains("no_such_task"),
        "the server's line about it: {out}"
    );
    assert_eq!(
        processes_in(&project),
        Vec::<u32>::new(),
        "no process of the fixture's server outlives the session"
    );

    // `--template etl --install-deps`: a venv of the project's own with its
    // requirements (weft's wheel found as on PyPI), then its test.
    let out = ok(
        user_command("weft", &path, home)
            .args([
                "init",
                "--template",
                "etl",
                "--install-deps",
                "--dir",
                "etl",
            ])
            .env("PIP_FIND_LINKS", &dist)
            .output()
            .unwrap(),
        "weft init --template etl --install-deps",
    );
    assert!(out.contains("  . .venv/bin/activate"), "{out}");
    let etl = home.join("etl");
    let pytest = user_command(etl.join(".venv/bin/python"), &path, &etl)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .unwrap();
    let out = ok(pytest, "pytest on the etl template");
    assert!(out.contains("1 passed"), "{out}");
}

/// The processes whose working folder is `dir` (the server and the app's
/// task processes run there).
fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

/// Installs the npm packages of dist/ into a fresh prefix; returns it.
fn npm_install(dist: &Path, prefix: &Path, path: &str) {
    let platform = artifact(dist, "weft-workflows-linux-x64-", ".tgz");
    let main = artifact(dist, "weft-workflows-0", ".tgz");
    std::fs::create_dir_all(prefix).unwrap();
    std::fs::write(prefix.join("package.json"), "{\"private\": true}\n").unwrap();
    ok(
        user_command("npm", path, prefix)
            .args(["install", "--no-audit", "--no-fund", "--save-dev"])
            .arg(&platform)
            .arg(&main)
            .output()
            .unwrap(),
        "npm install",
    );
}

#[test]
#[ignore = "needs dist/ from scripts/package.sh (maturin and zig from PyPI, a 10-minute release build): scripts/test-packages.sh builds it and runs this"]
fn the_npm_package_runs_weft_and_starts_a_dev_server_for_tests() {
    let dist = dist();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("app");
    let path = path_without_rust(Path::new("/nonexistent"));
    npm_install(&dist, &prefix, &path);
    let version = ok(
        user_command("npx", &path, &prefix)
            .args(["--no-install", "weft", "--version"])
            .output()
            .unwrap(),
        "npx weft --version",
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // startDev from a test's code, serving the Python example app (the
    // TypeScript one needs @renderinc/sdk 1.x: the test below).
    let script = r#"
const { startDev } = require("weft-workflows");
(async () => {
  const dev = await startDev({ app: process.argv.slice(2) });
  const res = await fetch(`${dev.url}/v1/tasks`);
  const tasks = (await res.json()).map((t) => t.name ?? t.task?.name);
  await dev.stop();
  console.log(JSON.stringify({ url: dev.url, tasks, env: dev.env }));
})().catch((e) => { console.error(e.message); process.exit(1); });
"#;
    std::fs::write(prefix.join("start.js"), script).unwrap();
    let python = common::python();
    let printed = ok(
        user_command("node", &path, &prefix)
            .arg("start.js")
            .arg(&python)
            .arg(common::app_py())
            .output()
            .unwrap(),
        "startDev",
    );
    let seen: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert!(
        seen["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "fan_out"),
        "{seen}"
    );
    assert_eq!(seen["env"]["RENDER_LOCAL_DEV_URL"], seen["url"], "{seen}");
}

#[test]
#[ignore = "needs dist/ from scripts/package.sh and WEFT_TS_SDK_DIR (@renderinc/sdk 1.x built from render-oss/sdk): scripts/test-packages.sh runs it when both are there"]
fn the_typescript_template_runs_on_npx_weft() {
    let dist = dist();
    let sdk = common::ts_sdk_dir();
    let tmp = tempfile::tempdir().unwrap();
    let path = path_without_rust(Path::new("/nonexistent"));
    // `weft init` from the npm package, then the template's own steps with
    // the SDK from its folder and weft from dist/.
    let scratch = tmp.path().join("scratch");
    npm_install(&dist, &scratch, &path);
    ok(
        user_command("npx", &path, &scratch)
            .args([
                "--no-install",
                "weft",
                "init",
                "--language",
                "typescript",
                "--dir",
            ])
            .arg(tmp.path().join("proj"))
            .output()
            .unwrap(),
        "npx weft init",
    );
    let project = tmp.path().join("proj");
    let package = project.join("package.json");
    let text = std::fs::read_to_string(&package).unwrap();
    let main = artifact(&dist, "weft-workflows-0", ".tgz");
    let platform = artifact(&dist, "weft-workflows-linux-x64-", ".tgz");
    let text = text
        .replace(
            "\"@renderinc/sdk\": \"^1.0.0\"",
            &format!("\"@renderinc/sdk\": \"file:{}\"", sdk.display()),
        )
        .replace(
            "\"weft-workflows\": \"^0.1.0\"",
            &format!(
                "\"weft-workflows\": \"file:{}\",\n    \"weft-workflows-linux-x64\": \"file:{}\"",
                main.display(),
                platform.display()
            ),
        );
    std::fs::write(&package, text).unwrap();
    for args in [
        &["install", "--no-audit", "--no-fund"][..],
        &["run", "build"],
    ] {
        ok(
            user_command("npm", &path, &project)
                .args(args)
                .output()
                .unwrap(),
            &format!("npm {args:?}"),
        );
    }
    let mut serve = user_command("npx", &path, &project);
    serve
        .args(["--no-install", "weft", "dev", "--port", "0", "--db"])
        .arg(tmp.path().join("dev.db"))
        .args(["--", "node", "dist/main.js"]);
    let dev = Dev::start(serve, tmp.path().join("dev.log"));
    let printed = ok(
        user_command("node", &path, &project)
            .args(["dist/client.js", "1", "2", "3"])
            .env("RENDER_LOCAL_DEV_URL", &dev.url)
            .output()
            .unwrap(),
        "the template's client",
    );
    assert!(
        printed.replace(' ', "").contains("sumSquares([1,2,3])=14"),
        "{printed}\n--- weft dev\n{}",
        dev.output()
    );
}
