//! How fast a `weft serve` node cut off from PostgreSQL fences itself, and
//! how long after that the others take its work over; and what the
//! heartbeat's own connection costs.
//!
//! ```sh
//! scripts/bench-fence.sh            # builds what it needs, then runs this
//! ```
//!
//! Each round: two release nodes (default timeouts: 10 s, the fence a third
//! earlier), each through a proxy on loopback; a task runs on n2; n2's
//! proxy freezes at a random moment of its heartbeat period. Measured from
//! the freeze: when n2's task process dies (the fence's kill), when n2's
//! `/healthz` says it is fenced, and when n1 has taken the attempt over
//! (its record closed as interrupted, read from the database).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy};
use common::{Options, PgSchema, Serve, Weft};
use weft::client::Client;

const ROUNDS: usize = 10;

fn main() {
    let rt = common::runtime();
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fence_app.py");
    let py = common::python();
    println!("## A node cut off from PostgreSQL: the fence, then the takeover ({ROUNDS} rounds)\n");
    println!(
        "--node-timeout 10s, fence margin 3.33 s (the defaults): the lease lasts 6.67 s after each heartbeat sent, every 2 s.\n"
    );
    println!(
        "| round | task process killed | fenced (`/healthz` 503) | taken over by n1 | fence before takeover |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut kills = Vec::new();
    let mut fences = Vec::new();
    let mut takeovers = Vec::new();
    for round in 1..=ROUNDS {
        let db = PgSchema::new();
        let log = tempfile::tempdir().unwrap();
        let node = |id: &str| {
            let proxy = FaultProxy::start(common::test_database_addr());
            let url = proxy.url_for(&db.url);
            let weft = Weft::start_with(Options {
                args: &["--quiet"],
                command: &[&py, &app],
                serve: Some(Serve {
                    database_url: &url,
                    node_id: id,
                }),
                ..Default::default()
            });
            (weft, proxy)
        };
        let (n2, p2) = node("n2");
        let client = Client::new(&n2.url).unwrap();
        let run = rt
            .block_on(client.start_task("guarded", (log.path(), 120.0)).send())
            .unwrap()
            .id()
            .to_string();
        let pid: u32 = common::wait_for(30, "the task to start", || {
            let text = std::fs::read_to_string(log.path().join("effects.log")).ok()?;
            text.lines().next()?.split(' ').nth(2)?.parse().ok()
        });
        let (_n1, _p1) = node("n1");
        // A random moment of n2's 2 s heartbeat period.
        std::thread::sleep(Duration::from_millis(2000 + fastrand::u64(0..2000)));
        let cut = Instant::now();
        p2.set(Fault::Freeze);
        let (mut killed, mut fenced, mut taken) = (None, None, None);
        let deadline = cut + Duration::from_secs(40);
        let mut conn: sqlx::PgConnection = rt.block_on(sqlx::Connection::connect(&db.url)).unwrap();
        while (killed.is_none() || fenced.is_none() || taken.is_none()) && Instant::now() < deadline
        {
            if killed.is_none() && !common::alive(pid as i32) {
                killed = Some(cut.elapsed());
            }
            if fenced.is_none() && health(&n2.url) == 503 {
                fenced = Some(cut.elapsed());
            }
            if taken.is_none() {
                let n: i64 = rt
                    .block_on(
                        sqlx::query_scalar(
                            "SELECT count(*) FROM attempts WHERE run_id = $1 AND node_id = 'n2' AND interrupted",
                        )
                        .bind(&run)
                        .fetch_one(&mut conn),
                    )
                    .unwrap();
                if n > 0 {
                    taken = Some(cut.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        p2.set(Fault::None);
        let s = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        let ahead = match (fenced, taken) {
            (Some(f), Some(t)) => format!("{:.2} s", t.as_secs_f64() - f.as_secs_f64()),
            _ => "-".into(),
        };
        println!(
            "| {round} | {} | {} | {} | {ahead} |",
            s(killed),
            s(fenced),
            s(taken)
        );
        kills.extend(killed);
        fences.extend(fenced);
        takeovers.extend(taken);
        let _ = rt.block_on(client.cancel_task_run(&run));
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        if v.is_empty() {
            return "-".to_string();
        }
        format!(
            "min {:.2} s, median {:.2} s, max {:.2} s",
            v[0].as_secs_f64(),
            v[v.len() / 2].as_secs_f64(),
            v[v.len() - 1].as_secs_f64()
        )
    };
    println!();
    println!("- task process killed: {}", stats(&mut kills));
    println!("- fenced: {}", stats(&mut fences));
    println!("- taken over: {}", stats(&mut takeovers));

    heartbeat_cost(&rt);
}

fn health(url: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}"])
        .arg(format!("{url}/healthz"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// What the heartbeat's own connection costs: one more server process per
/// node (its memory, read from /proc), against what one heartbeat costs
/// each way (a statement on the kept connection, or a transaction on a
/// pooled one, as before).
fn heartbeat_cost(rt: &tokio::runtime::Runtime) {
    const BEATS: usize = 1000;
    let db = PgSchema::new();
    let py = common::python();
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fence_app.py");
    let _node = Weft::start_with(Options {
        args: &["--quiet"],
        command: &[&py, &app],
        serve: Some(Serve {
            database_url: &db.url,
            node_id: "n1",
        }),
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(3));
    rt.block_on(async {
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&db.url).await.unwrap();
        let backends: Vec<(String, i32)> = sqlx::query_as(
            "SELECT application_name, pid FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' ORDER BY application_name",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let pss = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Pss:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                })
        };
        println!("\n## The heartbeat's own connection\n");
        let beats: Vec<_> = backends.iter().filter(|(a, _)| a == "weft heartbeat").collect();
        println!(
            "- server processes of one idle node on this database: {} (of them the heartbeat's: {})",
            backends.len(),
            beats.len()
        );
        if let Some((_, pid)) = beats.first() {
            match pss(*pid) {
                Some(kb) => println!("- the heartbeat's server process: {:.1} MB PSS", kb as f64 / 1024.0),
                None => println!("- the heartbeat's server process: memory not readable here"),
            }
        }
        sqlx::query("CREATE TEMP TABLE beat (id text PRIMARY KEY, incarnation text, heartbeat_at timestamptz, gone_at timestamptz)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO beat VALUES ('n', 'i', now(), NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        let statement = "UPDATE beat SET heartbeat_at = now() WHERE id = $1 AND incarnation = $2 AND gone_at IS NULL";
        let mut kept = Vec::with_capacity(BEATS);
        for _ in 0..BEATS {
            let t = Instant::now();
            sqlx::query(statement).bind("n").bind("i").execute(&mut conn).await.unwrap();
            kept.push(t.elapsed());
        }
        let mut pooled = Vec::with_capacity(BEATS);
        for _ in 0..BEATS {
            let t = Instant::now();
            let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
            sqlx::query(statement).bind("n").bind("i").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
            pooled.push(t.elapsed());
        }
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1000.0
        };
        println!(
            "- one heartbeat, a statement on its kept connection: p50 {:.3} ms, p99 {:.3} ms ({BEATS} beats)",
            pct(&mut kept, 50),
            pct(&mut kept, 99)
        );
        println!(
            "- one heartbeat as before, BEGIN/UPDATE/COMMIT: p50 {:.3} ms, p99 {:.3} ms",
            pct(&mut pooled, 50),
            pct(&mut pooled, 99)
        );
    });
}
