//! Starts `sum_squares` and waits for its result: `cargo run -q --bin client -- 1 2 3`
//!
//! Against `weft dev` (or `render workflows dev`) on this machine by default:
//! the client reads RENDER_LOCAL_DEV_URL (default http://localhost:8120). To
//! call the tasks deployed on Render instead, set WORKFLOW_SLUG to your
//! workflow's slug and RENDER_API_KEY to an API key.

use std::process::ExitCode;

use weft::client::{Client, ClientConfig, TaskRunDetailsExt};

#[tokio::main]
async fn main() -> ExitCode {
    let slug = std::env::var("WORKFLOW_SLUG").ok().filter(|s| !s.is_empty());
    let task = match &slug {
        Some(slug) => format!("{slug}/sum_squares"),
        None => "sum_squares".to_string(),
    };
    let mut values = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.parse::<i64>() {
            Ok(v) => values.push(v),
            Err(_) => {
                eprintln!("not a whole number: {arg}");
                return ExitCode::from(2);
            }
        }
    }
    if values.is_empty() {
        values = vec![1, 2, 3, 4];
    }
    let local = slug.is_none();
    let config = ClientConfig::from_lookup(|name| match std::env::var(name) {
        Err(_) if local && name == "RENDER_USE_LOCAL_DEV" => Some("true".into()),
        value => value.ok(),
    });
    let client = match config.and_then(Client::from_config) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    // A one-element tuple: the list is the task's one argument.
    match client.run_task(&task, (values.clone(),)).await {
        Ok(details) => {
            let total: i64 = details.result().unwrap_or_default();
            let run = &details.run;
            println!("{task}({values:?}) = {total}  [run {}, {}]", run.id, run.status.as_str());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
