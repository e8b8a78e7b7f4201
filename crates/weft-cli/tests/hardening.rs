//! What a web page in the user's browser, another user of the machine, and
//! clients without the token can do to `weft dev`: each request here is a
//! plain HTTP request with the headers a browser (or an attacker) sends.

mod common;

use std::time::{Duration, Instant};

use common::{Options, Weft};
use reqwest::StatusCode;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start_body() -> &'static str {
    r#"{"task": "square", "input": [3]}"#
}

#[test]
fn a_web_page_cannot_start_runs_or_refresh_tasks_across_sites() {
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let rt = runtime();
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
    let rt = runtime();
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
    let rt = runtime();
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
    let rt = runtime();
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
    let rt = runtime();
    let client = weft::client::Client::builder(&weft.url)
        .token("do-not-leak")
        .build()
        .unwrap();
    let run = rt
        .block_on(client.run_task("env_value", ["RENDER_API_KEY"]).send())
        .unwrap();
    assert_eq!(run.results, serde_json::json!([null]));
}
