//! Dispatch latency: `POST /v1/task-runs` to the result, for a no-op Rust
//! task (`square` of `crates/weft/examples/fan_out`) on a warm `weft dev`,
//! over sequential runs; each run is a task process of its own.
//!
//! ```sh
//! cargo build --release -p weft-workflows --examples
//! cargo bench -p weft-workflows-cli --bench dispatch [-- RUNS]    # default 1000
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Options, Weft, example};
use weft::client::Client;

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let app = example("fan_out");
    let rt = common::runtime();
    println!("| spawn | runs | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    // How task processes start: weft's spawner (the default), the launcher
    // (`WEFT_SPAWNER=off`), a fork of the runtime (`WEFT_LAUNCHER=off`).
    for (how, env) in [
        ("spawner", None),
        ("launcher", Some(("WEFT_SPAWNER", "off"))),
        ("fork", Some(("WEFT_LAUNCHER", "off"))),
    ] {
        let weft = Weft::start_with(Options {
            args: &["--quiet"],
            command: &[&app],
            env: env.as_slice(),
            ..Default::default()
        });
        let client = Client::new(&weft.url).unwrap();
        // Warm: the first runs open the database pages and the page cache.
        for i in 0..20 {
            rt.block_on(client.run_task("square", (i,)).send()).unwrap();
        }
        let mut took: Vec<Duration> = Vec::with_capacity(runs);
        for i in 0..runs {
            let t = Instant::now();
            rt.block_on(client.run_task("square", (i,)).send()).unwrap();
            took.push(t.elapsed());
        }
        took.sort();
        let pct = |p: f64| took[((took.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "| {how} | {runs} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0)
        );
    }
}
