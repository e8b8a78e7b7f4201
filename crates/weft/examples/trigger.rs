//! Runs a task through the REST API and prints its result: the client side
//! of the other examples.
//!
//! ```text
//! RENDER_USE_LOCAL_DEV=true cargo run -p weft-workflows --example trigger -- add_squares '[3, 4]'
//! ```
//!
//! The client reads `RENDER_USE_LOCAL_DEV`, `RENDER_LOCAL_DEV_URL` and
//! `RENDER_API_KEY` as the official clients do; with none of them set this
//! example uses the local server at http://localhost:8120.

use std::process::ExitCode;

use serde_json::Value;
use weft::client::{Client, ClientConfig, TaskRunDetailsExt};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(task), input) = (args.next(), args.next()) else {
        eprintln!("usage: trigger TASK [JSON-INPUT]");
        return ExitCode::from(2);
    };
    let input: Value = match serde_json::from_str(input.as_deref().unwrap_or("[]")) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("the input is not JSON: {err}");
            return ExitCode::from(2);
        }
    };
    let client = match ClientConfig::from_env() {
        Ok(config) => Client::from_config(config),
        Err(_) => Client::new(weft::client::DEFAULT_LOCAL_DEV_URL),
    }
    .expect("a valid API URL");
    let handle = match client.start_task(&task, input).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("started {}", handle.id());
    match handle.await {
        Ok(details) => {
            let result: Value = details.result().unwrap_or(Value::Null);
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
