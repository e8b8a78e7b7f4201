//! A wide fan-out: `fan_out(n)` runs `square(i)` for every `i` in `0..n`
//! at once and sums the results. Each child is its own run, in its own
//! process; the parent waits for all of them.
//!
//! ```text
//! cargo build -p weft-workflows --example fan_out
//! weft dev -- target/debug/examples/fan_out
//! # in another terminal:
//! weft run fan_out '[200]'                     # 2646700
//! cargo run -p weft-workflows --example trigger -- fan_out '[200]'
//! ```

use futures::future::try_join_all;
use weft::{Retry, Task, TaskContext, TaskOptions, TaskResult, Workflows};

const SQUARE: Task<u64, u64> = Task::named("square");

async fn square(_ctx: TaskContext, x: u64) -> TaskResult<u64> {
    Ok(x * x)
}

async fn fan_out(ctx: TaskContext, n: u64) -> TaskResult<u64> {
    let squares = try_join_all((0..n).map(|i| ctx.run(&SQUARE, i))).await?;
    Ok(squares.into_iter().sum())
}

fn main() {
    let mut app = Workflows::new().default_retry(Retry::new(2, 500));
    app.register(SQUARE, square);
    app.task_with("fan_out", TaskOptions::new().timeout_seconds(600), fan_out);
    app.main();
}
