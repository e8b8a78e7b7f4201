//! End to end, the customer ETL under a real `weft dev`:
//! - `weft init --template etl`'s `main.py` (the tutorial on the official Python
//!   SDK), triggered by the official Python client, agrees with the Rust
//!   pipeline on the profile count, the per-shard counts and which customers
//!   each shard holds;
//! - the `customer-etl` binary as the task app, triggered by the official
//!   Python client (no input, as the tutorial's trigger sends, and named
//!   arguments) and by `customer-etl trigger`.
//!
//! The `customer-etl` binary is built next to `weft` by `cargo test
//! --workspace` (or `cargo build -p customer-etl`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Options, Weft};

use customer_etl::{Date, Format, LocalOptions, Manifest, run_local_with};
use serde_json::Value;

fn customer_etl_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_weft"))
        .parent()
        .unwrap()
        .join("customer-etl");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p customer-etl` (`cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// `weft dev` serving `command`, with the pipeline's clients.
struct Dev {
    weft: Weft,
}

impl Dev {
    fn start(dir: &Path, command: &[&Path], env: &[(&str, &Path)]) -> Dev {
        let env: Vec<_> = env.iter().map(|(k, v)| (*k, v.to_str().unwrap())).collect();
        let weft = Weft::start_with(Options {
            args: &["--quiet"],
            dir: Some(dir.to_path_buf()),
            command,
            env: &env,
            ..Default::default()
        });
        Dev { weft }
    }

    fn output(&self) -> String {
        self.weft.output()
    }

    /// Runs `program args` pointed at this server; panics unless it succeeds.
    fn client(&self, program: &Path, args: &[&str]) -> Output {
        let out = Command::new(program)
            .args(args)
            .env("RENDER_LOCAL_DEV_URL", &self.weft.url)
            .env_remove("RENDER_USE_LOCAL_DEV")
            .env_remove("RENDER_API_KEY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}):\n{}\n{}\n--- weft\n{}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            common::tail(&self.output(), 40)
        );
        out
    }

    /// The official Python client: the etl template's `client.py [input]`.
    fn python_trigger(&self, input: Option<&Value>) -> (String, Value) {
        let trigger = common::repo_root().join("crates/weft-cli/templates/python-etl/client.py");
        let input = input.map(Value::to_string);
        let mut args = vec![trigger.to_str().unwrap()];
        args.extend(input.as_deref());
        let out = self.client(&common::python(), &args);
        let result = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
            panic!(
                "client.py printed no result ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (last_line(&out), result)
    }
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn assert_merged(line: &str, profiles: u64, shards: u32) {
    let want = format!("Merged {profiles} enriched profiles across {shards} shards in ");
    assert!(line.starts_with(&want) && line.ends_with('s'), "{line}");
}

/// The Rust pipeline in-process on `data`: the reference.
fn rust_reference(data: &Path, shards: u32) -> (tempfile::TempDir, Manifest) {
    let out = tempfile::tempdir().unwrap();
    let as_of = Date::parse("2026-10-01").unwrap();
    run_local_with(
        data,
        out.path(),
        shards,
        as_of,
        Format::Csv,
        &LocalOptions::default(),
    )
    .unwrap();
    let manifest = Manifest::load(out.path()).unwrap();
    (out, manifest)
}

/// Customer ids of each shard's profile file (first column, header skipped).
fn ids_per_shard(out: &Path, shards: u32) -> Vec<Vec<String>> {
    (0..shards)
        .map(|shard| {
            let path = out.join(format!("profiles/shard-{shard:05}.csv"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Customer ids come first on a record's first line and are never quoted.
            text.lines()
                .skip(1)
                .filter_map(|line| line.split(',').next())
                .filter(|id| id.starts_with("cust_") && id.len() == 13)
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn the_python_sdk_example_agrees_with_the_rust_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    customer_etl::generate(&data, 3_000, 11).unwrap();
    let workflow = common::repo_root().join("crates/weft-cli/templates/python-etl/main.py");
    let dev = Dev::start(dir.path(), &[&common::python(), &workflow], &[]);
    let out = dir.path().join("python-out");
    let input = serde_json::json!({
        "data_dir": data,
        "out_dir": out,
        "num_shards": 5,
    });
    let (line, result) = dev.python_trigger(Some(&input));

    let (rust_out, manifest) = rust_reference(&data, 5);
    assert_merged(&line, manifest.profiles_generated, 5);
    assert_eq!(result["profiles_generated"], manifest.profiles_generated);
    assert_eq!(result["shards_processed"], 5);
    let per_shard: Vec<(u64, u64)> = result["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard_id"].as_u64().unwrap(),
                s["profiles"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64)> = manifest
        .shards
        .iter()
        .map(|s| (s.shard_id as u64, s.profiles))
        .collect();
    assert_eq!(per_shard, want);
    // Not only the counts: each shard holds the same customers, in the same order.
    assert_eq!(ids_per_shard(&out, 5), ids_per_shard(rust_out.path(), 5));
}

#[test]
fn customer_etl_under_weft_dev_runs_from_the_python_client_and_customer_etl_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    customer_etl::generate(&data, 1_200, 5).unwrap();
    let bin = customer_etl_bin();
    // The tasks' defaults come from the environment, as in the tutorial.
    let dev = Dev::start(
        dir.path(),
        &[&bin],
        &[("DATA_DIR", &data), ("OUT_DIR", &out)],
    );
    let (_, ten) = rust_reference(&data, 10);

    // The tutorial's trigger: no input at all.
    let (line, result) = dev.python_trigger(None);
    assert_merged(&line, ten.profiles_generated, 10);
    assert_eq!(result["out_dir"], out.to_str().unwrap());
    assert_eq!(Manifest::load(&out).unwrap().shards_processed, 10);

    // Named arguments through the Python client.
    let (line, _) = dev.python_trigger(Some(&serde_json::json!({"num_shards": 3})));
    let (_, three) = rust_reference(&data, 3);
    assert_merged(&line, three.profiles_generated, 3);

    // `customer-etl trigger`, the Rust SDK client.
    let run = dev.client(&bin, &["trigger", "--shards", "4", "--format", "parquet"]);
    let (_, four) = rust_reference(&data, 4);
    assert_merged(&last_line(&run), four.profiles_generated, 4);
    let manifest = Manifest::load(&out).unwrap();
    assert_eq!(manifest.params.format, Format::Parquet);
    assert_eq!(
        manifest
            .shards
            .iter()
            .map(|s| s.profiles)
            .collect::<Vec<_>>(),
        four.shards.iter().map(|s| s.profiles).collect::<Vec<_>>()
    );
    assert!(out.join("profiles/shard-00003.parquet").is_file());
    assert!(!out.join("profiles/shard-00000.csv").exists());
}
