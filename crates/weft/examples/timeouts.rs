//! Time: a task that sleeps, one with a timeout, and a parent of sleepers.
//!
//! - `sleep(s)` sleeps `s` seconds and returns them.
//! - `bounded_sleep(s)` sleeps too, under `timeout_seconds = 1` and one
//!   retry: anything over a second is killed and fails after two attempts.
//! - `sleepers(n, s)` runs `n` children of `sleep(s)` at once and sums
//!   them: a tree to cancel, or to drain.
//!
//! ```text
//! cargo build -p weft-workflows --example timeouts
//! weft dev -- target/debug/examples/timeouts
//! # in another terminal:
//! weft run bounded_sleep '[0.2]'     # 0.2
//! weft run bounded_sleep '[5]'       # fails: timed out after 1 s, twice
//! weft run sleepers '[3, 60]'        # then: weft runs cancel <id>
//! ```

use futures::future::try_join_all;
use weft::{Retry, Task, TaskContext, TaskOptions, TaskResult, Workflows};

const SLEEP: Task<f64, f64> = Task::named("sleep");

async fn sleep(_ctx: TaskContext, seconds: f64) -> TaskResult<f64> {
    tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
    Ok(seconds)
}

async fn sleepers(ctx: TaskContext, (n, seconds): (u32, f64)) -> TaskResult<f64> {
    let slept = try_join_all((0..n).map(|_| ctx.run(&SLEEP, seconds))).await?;
    Ok(slept.into_iter().sum())
}

fn main() {
    let mut app = Workflows::new();
    app.register(SLEEP, sleep);
    app.task_with(
        "bounded_sleep",
        TaskOptions::new()
            .timeout_seconds(1)
            .retry(Retry::new(1, 100)),
        sleep,
    );
    app.task("sleepers", sleepers);
    app.main();
}
