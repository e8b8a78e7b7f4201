//! The pipeline on object storage, against a real S3-compatible server on
//! this machine: moto in server mode (from the test venv, started and
//! stopped here), with boto3 as an independent client to upload the inputs
//! and read back what the pipeline wrote. The real `customer-etl` binary
//! runs with the standard AWS variables, and its outputs are compared with
//! the in-process local run's, byte for byte.

mod common;

use customer_etl::Format;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_customer-etl");

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let python = common::venv_python();
        let server = python.with_file_name("moto_server");
        assert!(
            server.exists(),
            "no moto_server next to {}: run scripts/test.sh (it installs moto[server] into the venv)",
            python.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Parts of 1 MiB (S3 wants 5), so a test-sized file is a real
            // multipart upload.
            .env("S3_UPLOAD_PART_MIN_SIZE", (1 << 20).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs the boto3 helper (`tests/s3_client.py`) and returns its stdout.
    fn client(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py");
        let out = Command::new(common::venv_python())
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3_client {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn upload(&self, dir: &Path, bucket: &str, prefix: &str) {
        self.client(&["put", dir.to_str().unwrap(), bucket, prefix]);
    }

    /// The objects under `prefix/`, by key relative to it, with their sizes.
    fn list(&self, bucket: &str, prefix: &str) -> BTreeMap<String, u64> {
        let found: BTreeMap<String, u64> =
            serde_json::from_str(&self.client(&["list", bucket, prefix])).unwrap();
        found
            .into_iter()
            .map(|(key, size)| (key[prefix.len() + 1..].to_string(), size))
            .collect()
    }

    fn download(&self, bucket: &str, prefix: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        self.client(&["get", bucket, prefix, dir.path().to_str().unwrap()]);
        dir
    }

    /// A server with `customers` generated customers uploaded to `s3://etl/in`.
    fn with_inputs(customers: u64) -> (Moto, tempfile::TempDir) {
        let moto = Moto::start();
        let data = generated(customers);
        moto.upload(data.path(), "etl", "in");
        (moto, data)
    }

    /// `customer-etl run` from `s3://etl/in` to `s3://etl/out`, then `extra`.
    fn run_in_to_out(&self, extra: &[&str]) -> Command {
        let mut command = self.etl(&["run", "--data-dir", "s3://etl/in", "--out", "s3://etl/out"]);
        command.args(extra);
        command
    }

    /// `customer-etl` with the standard AWS variables pointing at this server.
    fn etl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env_remove(customer_etl::workflow::FAULT_CRASH_SHARD_ENV);
        command
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "customer-etl failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The error a failing run printed, checked to have failed.
fn failed(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn generated(customers: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    customer_etl::generate(dir.path(), customers, 11).unwrap();
    dir
}

/// The objects a successful run leaves under its output prefix: profiles,
/// rejects and the manifest, and nothing of its work prefix.
fn assert_only_outputs(moto: &Moto, bucket: &str, prefix: &str, shards: u32, ext: &str) {
    let mut want: Vec<String> = vec!["manifest.json".into(), "rejects/unroutable.csv".into()];
    for shard in 0..shards {
        want.push(format!("profiles/shard-{shard:05}.{ext}"));
        want.push(format!("rejects/shard-{shard:05}.csv"));
    }
    want.sort();
    let got: Vec<String> = moto.list(bucket, prefix).into_keys().collect();
    assert_eq!(got, want, "objects under s3://{bucket}/{prefix}");
}

#[test]
fn dirty_data_read_from_and_written_to_s3_is_byte_identical_to_the_local_run() {
    let moto = Moto::start();
    let edge = common::data_dir(&common::EDGE_CASE_FILES);
    let dirty = generated(3_000);
    moto.upload(edge.path(), "etl", "edge");
    moto.upload(dirty.path(), "etl", "dirty/in");

    // The edge cases (BOM, CRLF, quoted newlines, ...), in one process.
    succeeded(
        moto.etl(&[
            "local",
            "--data-dir",
            "s3://etl/edge",
            "--out",
            "s3://etl/edge-out",
            "--shards",
            "3",
        ])
        .output()
        .unwrap(),
    );
    let got = moto.download("etl", "edge-out");
    common::assert_same_outputs(
        got.path(),
        common::local_reference(edge.path(), 3, Format::Csv).path(),
    );
    assert_only_outputs(&moto, "etl", "edge-out", 3, "csv");

    // The generated dirty set through the workflow (every task its own
    // process), CSV and Parquet, in chunks small enough that the partition
    // step reads each input by several ranges.
    for (format, ext) in [(Format::Csv, "csv"), (Format::Parquet, "parquet")] {
        let state = tempfile::tempdir().unwrap();
        let out = format!("s3://etl/dirty/out-{ext}");
        let run = succeeded(
            moto.etl(&[
                "run",
                "--data-dir",
                "s3://etl/dirty/in",
                "--out",
                &out,
                "--shards",
                "4",
                "--format",
                ext,
                "--chunk-mib",
                "1",
                "--state-dir",
                state.path().to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(stdout.contains("across 4 shards"), "{stdout}");
        let prefix = format!("dirty/out-{ext}");
        let got = moto.download("etl", &prefix);
        common::assert_same_outputs(
            got.path(),
            common::local_reference(dirty.path(), 4, format).path(),
        );
        assert_only_outputs(&moto, "etl", &prefix, 4, ext);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(got.path().join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["params"]["out_dir"], out.as_str());
        assert_eq!(
            manifest["files"]["crm"]["path"],
            "s3://etl/dirty/in/crm.csv"
        );
        let rows_read: u64 = ["crm", "billing", "product", "support"]
            .iter()
            .map(|f| manifest["files"][f]["rows_read"].as_u64().unwrap())
            .sum();
        assert_eq!(manifest["rows_read"].as_u64(), Some(rows_read));
        assert!(manifest["rows_rejected"].as_u64().unwrap() > 0);
    }

    // A file:// URL reads the local directory.
    let url = format!("file://{}", dirty.path().display());
    let local_out = tempfile::tempdir().unwrap();
    succeeded(
        moto.etl(&[
            "local",
            "--data-dir",
            &url,
            "--out",
            local_out.path().to_str().unwrap(),
            "--shards",
            "4",
        ])
        .output()
        .unwrap(),
    );
    common::assert_same_outputs(
        local_out.path(),
        common::local_reference(dirty.path(), 4, Format::Csv).path(),
    );
}

#[test]
fn a_shard_killed_mid_upload_and_retried_leaves_exactly_one_complete_object() {
    // 30,000 customers in 2 shards: each profile file is about 1.5 MB, so
    // with 1 MiB parts the crashing attempt (after 14,000 profiles) has
    // uploaded a part and the retry uploads two.
    let (moto, data) = Moto::with_inputs(30_000);
    let state = tempfile::tempdir().unwrap();
    let run = succeeded(
        moto.run_in_to_out(&[
            "--shards",
            "2",
            "--state-dir",
            state.path().to_str().unwrap(),
        ])
        .env(customer_etl::workflow::FAULT_CRASH_SHARD_ENV, "1")
        .env(customer_etl::workflow::FAULT_CRASH_AFTER_ENV, "14000")
        .env(customer_etl::storage::UPLOAD_PART_MIB_ENV, "1")
        .output()
        .unwrap(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("process_shard (1) took 2 attempts"),
        "{stderr}"
    );
    // The killed attempt's upload is still open, with its parts: it died
    // mid-upload, and nothing of it became an object.
    let uploads: Vec<(String, u64)> =
        serde_json::from_str(&moto.client(&["uploads", "etl", "out"])).unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].0, "out/profiles/shard-00001.csv");
    assert!(uploads[0].1 >= 1, "{uploads:?}");
    // Exactly one object under the shard's name, whole and right.
    assert_only_outputs(&moto, "etl", "out", 2, "csv");
    let got = moto.download("etl", "out");
    let want = common::local_reference(data.path(), 2, Format::Csv);
    assert!(
        std::fs::metadata(want.path().join("profiles/shard-00001.csv"))
            .unwrap()
            .len()
            > 1 << 20,
        "the profile file must span several parts"
    );
    common::assert_same_outputs(got.path(), want.path());
}

/// One bad-input case: what is wrong, the arguments and environment that
/// make it so, and what the error must say.
struct BadCase<'a> {
    case: &'a str,
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    unset: &'a [&'a str],
    message: &'a str,
}

#[test]
fn bad_object_locations_are_named_fail_the_run_and_leave_no_output() {
    let (moto, data) = Moto::with_inputs(200);
    moto.upload(data.path(), "etl", "partial");
    moto.client(&["delete", "etl", "partial/support.csv"]);
    // An earlier, complete run's outputs, which no failing run may touch.
    succeeded(
        moto.etl(&[
            "local",
            "--data-dir",
            "s3://etl/in",
            "--out",
            "s3://etl/out",
        ])
        .output()
        .unwrap(),
    );
    let before = moto.list("etl", "out");
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_endpoint = format!("http://127.0.0.1:{closed_port}");

    let cases = [
        BadCase {
            case: "an input bucket that does not exist",
            args: &[
                "--data-dir",
                "s3://no-such-bucket/in",
                "--out",
                "s3://etl/out",
            ],
            env: &[],
            unset: &[],
            message: "the bucket s3://no-such-bucket does not exist",
        },
        BadCase {
            case: "an output bucket that does not exist",
            args: &[
                "--data-dir",
                "s3://etl/in",
                "--out",
                "s3://no-such-bucket/out",
            ],
            env: &[],
            unset: &[],
            message: "the bucket s3://no-such-bucket does not exist",
        },
        BadCase {
            case: "a missing input object",
            args: &["--data-dir", "s3://etl/partial", "--out", "s3://etl/out"],
            env: &[],
            unset: &[],
            message: "input file s3://etl/partial/support.csv is missing",
        },
        BadCase {
            case: "missing credentials",
            args: &["--data-dir", "s3://etl/in", "--out", "s3://etl/out"],
            env: &[],
            unset: &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
            message: "no credentials for s3://etl/in: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        },
        BadCase {
            case: "an unreachable endpoint",
            args: &["--data-dir", "s3://etl/in", "--out", "s3://etl/out"],
            env: &[("AWS_ENDPOINT_URL", dead_endpoint.as_str())],
            unset: &[],
            message: "cannot reach the object store at",
        },
    ];
    for BadCase {
        case,
        args,
        env,
        unset,
        message,
    } in &cases
    {
        for command in ["local", "run"] {
            let state = tempfile::tempdir().unwrap();
            let mut etl = moto.etl(&[command]);
            etl.args(*args).envs(env.iter().copied());
            if command == "run" {
                etl.args(["--state-dir", state.path().to_str().unwrap()]);
            }
            for name in *unset {
                etl.env_remove(name);
            }
            let stderr = failed(etl.output().unwrap());
            assert!(stderr.contains(*message), "{command} with {case}: {stderr}");
            if case.contains("unreachable") {
                assert!(stderr.contains(&dead_endpoint), "{stderr}");
            }
            assert_eq!(
                moto.list("etl", "out"),
                before,
                "{command} with {case} changed the earlier outputs"
            );
        }
    }
    assert!(
        moto.list("etl", "out")
            .keys()
            .all(|k| !k.starts_with(".work")),
        "no work objects are left"
    );
}

/// Where a run keeps its state when the output is a bucket: a
/// `.customer-etl` folder in the working directory, never a path named
/// after the URL, and never `weft dev`'s `.weft` folder, which stays as it was.
#[test]
fn run_keeps_its_state_locally_when_the_output_is_a_bucket() {
    let (moto, _data) = Moto::with_inputs(100);
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join(".weft")).unwrap();
    std::fs::write(cwd.path().join(".weft/weft.db"), b"weft dev's").unwrap();
    succeeded(
        moto.run_in_to_out(&[])
            .current_dir(cwd.path())
            .output()
            .unwrap(),
    );
    let mut entries: Vec<PathBuf> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![cwd.path().join(".customer-etl"), cwd.path().join(".weft")]
    );
    assert!(cwd.path().join(".customer-etl/runs.json").is_file());
    assert_eq!(
        std::fs::read(cwd.path().join(".weft/weft.db")).unwrap(),
        b"weft dev's"
    );
    assert_only_outputs(&moto, "etl", "out", 10, "csv");

    // A state folder the user names keeps what else it holds.
    let named = cwd.path().join("state");
    std::fs::create_dir(&named).unwrap();
    std::fs::write(named.join("notes.txt"), b"mine").unwrap();
    for _ in 0..2 {
        succeeded(
            moto.run_in_to_out(&["--state-dir", named.to_str().unwrap()])
                .output()
                .unwrap(),
        );
    }
    assert_eq!(std::fs::read(named.join("notes.txt")).unwrap(), b"mine");
    assert!(named.join("runs.json").is_file());
}
