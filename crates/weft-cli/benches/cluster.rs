//! `weft serve` nodes on PostgreSQL next to `weft dev` on SQLite, on this
//! machine: no-op Rust fan-out throughput with 1, 2 and 3 nodes, claim
//! latency (pending to started), how soon a parent hears of a child that
//! ended on another node, and the 100,000-customer ETL on 1 and 3 nodes.
//!
//! ```sh
//! scripts/bench-cluster.sh          # builds what it needs, then runs this
//! ```
//!
//! Every node shares this machine's cores, so more nodes add no CPU: the
//! point is that nothing serialises on one node.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Options, PgSchema, Weft, example, serve_node as node};
use weft::client::Client;
use weft_store::{NodeId, PgStore, RunFilter, RunRecord, SqliteStore, Store};

const WIDTH: u64 = 1000;
const ROUNDS: usize = 3;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fan_out = example("fan_out");
    println!(
        "## Fan-out of {WIDTH} no-op Rust children, --max-concurrent 2 per node ({ROUNDS} rounds)\n"
    );
    println!(
        "| store | nodes | runs/s (median) | claim latency p50, idle | p99, idle | queue wait in the fan-out, p50 | parent hears of a child on another node (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    // SQLite, one `weft dev`.
    {
        let mut weft = Weft::start_with(Options {
            args: &["--quiet", "--max-concurrent", "2"],
            command: &[&fan_out],
            ..Default::default()
        });
        let (rate, roots) = fan_outs(&rt, &[weft.url.clone()]);
        let singles = one_at_a_time(&rt, &[weft.url.clone()]);
        // Read once the server has let go of the file (its folder goes
        // with the harness).
        weft.stop();
        let runs = rt.block_on(async {
            let store = SqliteStore::open(&weft.db).unwrap();
            all_runs(&store).await
        });
        drop(weft);
        report("SQLite (`weft dev`)", 1, rate, &runs, &roots, &singles);
    }
    for nodes in 1..=3 {
        let db = PgSchema::new();
        let weft: Vec<Weft> = (0..nodes)
            .map(|i| {
                node(
                    &db,
                    &format!("n{i}"),
                    &["--quiet", "--max-concurrent", "2"],
                    &[&fan_out],
                )
            })
            .collect();
        let urls: Vec<String> = weft.iter().map(|w| w.url.clone()).collect();
        let (rate, roots) = fan_outs(&rt, &urls);
        let singles = one_at_a_time(&rt, &urls);
        drop(weft);
        let runs = rt.block_on(async {
            let store = PgStore::connect(&db.url, NodeId::new("bench"))
                .await
                .unwrap();
            all_runs(&store).await
        });
        report(
            "PostgreSQL (`weft serve`)",
            nodes,
            rate,
            &runs,
            &roots,
            &singles,
        );
    }

    println!(
        "\n## Customer ETL, 100,000 customers, 30 shards (release `customer-etl` as the task app)\n"
    );
    println!("| nodes | --max-concurrent per node | wall time |");
    println!("|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    customer_etl::generate(&data, 100_000, 17).unwrap();
    let etl = common::profile_dir().join("customer-etl");
    for nodes in [1usize, 3] {
        let db = PgSchema::new();
        let weft: Vec<Weft> = (0..nodes)
            .map(|i| {
                node(
                    &db,
                    &format!("n{i}"),
                    &["--quiet", "--max-concurrent", "2"],
                    &[&etl],
                )
            })
            .collect();
        let client = Client::new(&weft[0].url).unwrap();
        let out = dir.path().join(format!("out-{nodes}"));
        let input = serde_json::json!({"data_dir": data, "out_dir": out, "num_shards": 30});
        let took = rt.block_on(async {
            let t = Instant::now();
            let run = client
                .run_task("merge_customer_data", input)
                .send()
                .await
                .unwrap();
            assert_eq!(run.run.status.as_str(), "completed");
            t.elapsed()
        });
        println!("| {nodes} | 2 | {:.2} s |", took.as_secs_f64());
    }
}

/// Runs the fan-out `ROUNDS` times, started on the nodes in turn; returns
/// the median rate (runs a second, the parent and its children) and the
/// roots.
fn fan_outs(rt: &tokio::runtime::Runtime, urls: &[String]) -> (f64, Vec<String>) {
    let mut rates = Vec::new();
    let mut roots = Vec::new();
    for round in 0..ROUNDS {
        let client = Client::new(&urls[round % urls.len()]).unwrap();
        let t = Instant::now();
        let run = rt
            .block_on(client.run_task("fan_out", [WIDTH]).send())
            .unwrap();
        rates.push((WIDTH + 1) as f64 / t.elapsed().as_secs_f64());
        roots.push(run.run.id);
    }
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], roots)
}

/// Runs of a no-op task started one after another on an otherwise idle
/// cluster, so that pending-to-started is the claim itself; their ids.
fn one_at_a_time(rt: &tokio::runtime::Runtime, urls: &[String]) -> Vec<String> {
    (0..200)
        .map(|i| {
            let client = Client::new(&urls[i % urls.len()]).unwrap();
            rt.block_on(client.run_task("square", [i as u64]).send())
                .unwrap()
                .run
                .id
        })
        .collect()
}

async fn all_runs(store: &dyn Store) -> Vec<RunRecord> {
    let mut all = Vec::new();
    let mut before_seq = None;
    loop {
        let page = store
            .list_runs(&RunFilter {
                before_seq,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before_seq = Some(last.seq);
        all.extend(page);
    }
    all
}

fn report(
    store: &str,
    nodes: usize,
    rate: f64,
    runs: &[RunRecord],
    roots: &[String],
    singles: &[String],
) {
    let waits = |filter: &dyn Fn(&RunRecord) -> bool| {
        let mut waits: Vec<Duration> = runs
            .iter()
            .filter(|r| filter(r))
            .filter_map(|r| {
                (r.attempts.first()?.started_at - r.created_at)
                    .to_std()
                    .ok()
            })
            .collect();
        waits.sort();
        waits
    };
    let pct = |w: &[Duration], p: f64| w[((w.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let idle = waits(&|r| singles.contains(&r.id));
    let queued = waits(&|r| r.parent_id.as_ref().is_some_and(|p| roots.contains(p)));
    let mut hears = Vec::new();
    for root in roots {
        let parent = runs.iter().find(|r| &r.id == root).unwrap();
        let last_child = runs
            .iter()
            .filter(|r| r.parent_id.as_deref() == Some(root.as_str()))
            .max_by_key(|r| r.completed_at)
            .unwrap();
        let (pa, ca) = (
            parent.attempts.last().unwrap(),
            last_child.attempts.last().unwrap(),
        );
        if pa.node_id != ca.node_id {
            hears.push(
                (parent.completed_at.unwrap() - last_child.completed_at.unwrap())
                    .to_std()
                    .unwrap_or_default(),
            );
        }
    }
    hears.sort();
    let hear = hears
        .get(hears.len() / 2)
        .map_or("(same node)".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        });
    println!(
        "| {store} | {nodes} | {rate:.0} | {:.2} ms | {:.2} ms | {:.0} ms | {hear} |",
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        pct(&queued, 0.5),
    );
}
