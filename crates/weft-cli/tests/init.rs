//! `weft init`: each language's project, scaffolded into a new folder, run
//! the way its README says (set-up, `weft dev -- <start>`, the client), and
//! its fan-out checked in the store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Options, Weft, ok};
use weft::client::{Client, ListTaskRunsParams};

fn weft_init(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("init")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("weft runs")
}

/// Scaffolds `language` into a new folder of a temp dir; returns both.
fn scaffold(language: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let printed = ok(
        weft_init(
            &["--language", language, "--dir", "my-workflows"],
            tmp.path(),
        ),
        "weft init",
    );
    assert!(printed.contains("Next steps:"), "{printed}");
    let project = tmp.path().join("my-workflows");
    (tmp, project)
}

/// Serves `project` with `command` (run in the project's folder), runs the
/// client and checks its line and the run tree: one root, one child per
/// value, all completed.
fn serve_and_trigger(
    project: &Path,
    command: &[&Path],
    client: &mut Command,
    root_task: &str,
    child_task: &str,
) {
    let data = tempfile::tempdir().unwrap();
    let weft = Weft::start_with(Options {
        dir: Some(project.to_path_buf()),
        db: Some(data.path().join("weft.db")),
        command,
        ..Default::default()
    });
    let out = client
        .current_dir(project)
        .env("RENDER_LOCAL_DEV_URL", &weft.url)
        .env_remove("RENDER_USE_LOCAL_DEV")
        .env_remove("RENDER_API_KEY")
        .env_remove("WORKFLOW_SLUG")
        .output()
        .expect("the client runs");
    let printed = ok(out, "the client");
    // `[1, 2, 3]` in Python and Rust, `[1,2,3]` in TypeScript.
    let expected = format!("{root_task}([1,2,3])=14");
    assert!(
        printed.replace(' ', "").contains(&expected),
        "{printed}\n--- weft\n{}",
        weft.output()
    );
    assert!(printed.contains("completed"), "{printed}");

    let rt = common::runtime();
    let api = Client::new(&weft.url).unwrap();
    let runs = rt
        .block_on(api.list_all_task_runs(&ListTaskRunsParams::default()))
        .unwrap();
    let count = |task: &str| {
        runs.iter()
            .filter(|r| r.task_id == format!("tsk-{task}") && r.status.as_str() == "completed")
            .count()
    };
    assert_eq!(
        (count(root_task), count(child_task), runs.len()),
        (1, 3, 4),
        "{runs:#?}"
    );
}

#[test]
fn a_python_project_runs_on_the_official_sdk() {
    let (_tmp, project) = scaffold("python");
    for file in [
        "main.py",
        "client.py",
        "test_workflows.py",
        "requirements.txt",
        "README.md",
        ".gitignore",
    ] {
        assert!(project.join(file).is_file(), "{file}");
    }
    let python = common::python();
    let mut client = Command::new(&python);
    client.args(["client.py", "1", "2", "3"]);
    serve_and_trigger(
        &project,
        &[&python, Path::new("main.py")],
        &mut client,
        "sum_squares",
        "square",
    );
}

/// `--template etl`: the tutorial's ETL, its data generated, merged by a
/// fan-out of shards; `--git` makes it a repository.
#[test]
fn the_etl_template_merges_the_data_it_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let printed = ok(
        weft_init(&["--template", "etl", "--git", "--dir", "etl"], tmp.path()),
        "weft init --template etl",
    );
    assert!(
        printed.contains("Created a Python ETL workflows project"),
        "{printed}"
    );
    assert!(
        printed.contains("python generate_data.py && python client.py"),
        "{printed}"
    );
    let project = tmp.path().join("etl");
    for file in [
        "main.py",
        "client.py",
        "generate_data.py",
        "test_workflows.py",
        "requirements.txt",
        "README.md",
        ".gitignore",
    ] {
        assert!(project.join(file).is_file(), "{file}");
    }
    assert!(project.join(".git").is_dir(), "--git: a repository");
    let python = common::python();
    ok(
        Command::new(&python)
            .args(["generate_data.py", "300"])
            .current_dir(&project)
            .output()
            .unwrap(),
        "generate_data.py",
    );
    let data = tempfile::tempdir().unwrap();
    let weft = Weft::start_with(Options {
        dir: Some(project.clone()),
        db: Some(data.path().join("weft.db")),
        command: &[&python, Path::new("main.py")],
        ..Default::default()
    });
    let out = Command::new(&python)
        .args(["client.py", r#"{"num_shards": 3}"#])
        .current_dir(&project)
        .env("RENDER_LOCAL_DEV_URL", &weft.url)
        .env_remove("RENDER_USE_LOCAL_DEV")
        .env_remove("RENDER_API_KEY")
        .env_remove("WORKFLOW_SLUG")
        .output()
        .unwrap();
    let printed = ok(out, "client.py");
    assert!(
        printed.contains("Merged 300 enriched profiles across 3 shards"),
        "{printed}\n--- weft\n{}",
        weft.output()
    );
    for shard in 0..3 {
        let file = project.join(format!("out-python/profiles/shard-{shard:05}.csv"));
        assert!(file.is_file(), "{}", file.display());
    }
}

/// `--install-deps` runs the README's set-up in the project; when a step
/// fails it says which, exits non-zero and leaves the project in place.
#[test]
fn install_deps_runs_the_setup_and_names_a_step_that_fails() {
    let tmp = tempfile::tempdir().unwrap();
    // No package index: `weft-workflows` cannot be found, so pip fails
    // after the venv is made.
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["init", "--install-deps", "--dir", "proj"])
        .current_dir(tmp.path())
        .env("PIP_NO_INDEX", "1")
        .env_remove("PIP_FIND_LINKS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`pip install -r requirements.txt` failed in proj")
            && stderr.contains("the project is in place"),
        "{stderr}"
    );
    let project = tmp.path().join("proj");
    assert!(project.join("main.py").is_file(), "the project stays");
    assert!(
        project.join(".venv/bin/python").exists(),
        "its venv was made"
    );
}

/// An unknown template is refused with the names of those there are.
#[test]
fn an_unknown_template_is_refused_with_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let out = weft_init(&["--language", "rust", "--template", "etl"], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no template \"etl\" for Rust: weft ships fan-out"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_rust_project_builds_on_the_workspace_sdk_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = common::repo_root().join("crates/weft");
    ok(
        weft_init(
            &[
                "--language",
                "rust",
                "--dir",
                "my-workflows",
                "--weft-sdk",
                sdk.to_str().unwrap(),
            ],
            tmp.path(),
        ),
        "weft init",
    );
    let project = tmp.path().join("my-workflows");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!(
            "weft-workflows = {{ path = \"{}\" }}",
            sdk.canonicalize().unwrap().display()
        )),
        "{manifest}"
    );
    assert!(manifest.contains("name = \"my-workflows\""), "{manifest}");
    // The workspace's lock file pins the versions it was tested with, and a
    // target folder kept between runs (outside the scaffold) keeps the
    // build of the SDK's dependencies for the next run.
    std::fs::copy(
        common::repo_root().join("Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weft-init-rust");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ok(
        Command::new(cargo)
            .args(["build", "--quiet"])
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap(),
        "cargo build of the scaffold",
    );
    let mut client = Command::new(target.join("debug/client"));
    client.args(["1", "2", "3"]);
    serve_and_trigger(
        &project,
        &[&target.join("debug/tasks")],
        &mut client,
        "sum_squares",
        "square",
    );
}

/// Needs `@renderinc/sdk` 1.x built from render-oss/sdk's `typescript/`
/// folder as its README says, named by `WEFT_TS_SDK_DIR`: it is not on the
/// npm registry this machine reaches. TypeScript itself comes from there.
#[test]
#[ignore = "needs WEFT_TS_SDK_DIR: @renderinc/sdk 1.x built from render-oss/sdk's typescript/ folder (it is not on the npm registry); run with --ignored"]
fn a_typescript_project_runs_on_the_sdk_built_from_source() {
    let sdk = common::ts_sdk_dir();
    let (_tmp, project) = scaffold("typescript");
    let package = project.join("package.json");
    let text = std::fs::read_to_string(&package).unwrap();
    assert!(text.contains("\"@renderinc/sdk\": \"^1.0.0\""), "{text}");
    assert!(text.contains("\"weft-workflows\": \"^0.1.0\""), "{text}");
    // weft is the one under test, not a package from the registry.
    let text = text.replace("    \"weft-workflows\": \"^0.1.0\",\n", "");
    // What `npm link` would do: the SDK from its folder instead of the registry.
    let local = format!("\"@renderinc/sdk\": \"file:{}\"", sdk.display());
    std::fs::write(
        &package,
        text.replace("\"@renderinc/sdk\": \"^1.0.0\"", &local),
    )
    .unwrap();
    for args in [
        &["install", "--no-audit", "--no-fund"][..],
        &["run", "build"],
    ] {
        ok(
            Command::new("npm")
                .args(args)
                .current_dir(&project)
                .output()
                .unwrap(),
            &format!("npm {args:?}"),
        );
    }
    let mut client = Command::new("node");
    client.args(["dist/client.js", "1", "2", "3"]);
    serve_and_trigger(
        &project,
        &[Path::new("node"), Path::new("dist/main.js")],
        &mut client,
        "sumSquares",
        "square",
    );
}

#[test]
fn a_folder_that_is_not_empty_is_refused_and_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("main.py"), "my own work\n").unwrap();
    let out = weft_init(&["--dir", "mine"], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("directory mine already exists and is not empty"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("main.py")).unwrap(),
        "my own work\n"
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["mine"], "nothing else is left behind");

    // An empty folder is taken; an unknown language is a usage error.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(
        weft_init(&["-l", "ts", "--dir", "empty"], tmp.path()),
        "init into an empty folder",
    );
    assert!(empty.join("src/main.ts").is_file());
    let out = weft_init(&["--language", "cobol"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'cobol'"));
    assert!(!tmp.path().join("workflows-demo").exists());
}

/// The new folder's mode follows the user's umask (a private `umask 077`
/// makes a private project), and an existing empty folder keeps its own.
#[test]
fn the_project_folder_keeps_the_users_umask_and_an_existing_folders_mode() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && exec {} init --language python --dir private",
            env!("CARGO_BIN_EXE_weft")
        ))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    ok(out, "weft init under umask 077");
    assert_eq!(mode(&tmp.path().join("private")), 0o700);
    assert_eq!(
        mode(&tmp.path().join("private/main.py")) & 0o077,
        0,
        "its files too"
    );
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o710)).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022 && exec {} init --language python --dir existing",
            env!("CARGO_BIN_EXE_weft")
        ))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    ok(out, "weft init into an existing empty folder");
    assert_eq!(mode(&existing), 0o710, "kept as it was");
}
