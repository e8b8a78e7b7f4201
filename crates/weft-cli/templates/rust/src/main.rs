//! {{name}}: workflow tasks on weft's Rust SDK.
//!
//! Run them locally:   cargo build && weft dev -- target/debug/tasks
//! Trigger a run:      cargo run -q --bin client -- 1 2 3

use futures::future::try_join_all;
use weft::{Retry, Task, TaskContext, TaskOptions, TaskResult, Workflows};

/// One subtask: runs in a process of its own, retried up to twice.
const SQUARE: Task<i64, i64> = Task::named("square");

async fn square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
    println!("squaring {x}");
    Ok(x * x)
}

/// Fans out: one `square` subtask per value, all at once, then sums them.
async fn sum_squares(ctx: TaskContext, values: Vec<i64>) -> TaskResult<i64> {
    let squares = try_join_all(values.iter().map(|&v| ctx.run(&SQUARE, v))).await?;
    let total = squares.iter().sum();
    println!("the sum of the squares of {values:?} is {total}");
    Ok(total)
}

fn main() {
    let mut app = Workflows::new();
    app.register_with(
        SQUARE,
        TaskOptions::new().retry(Retry::new(2, 500)),
        square,
    );
    app.task_with(
        "sum_squares",
        TaskOptions::new().timeout_seconds(300),
        sum_squares,
    );
    // Serves the tasks when started by weft or Render (RENDER_SDK_SOCKET_PATH).
    app.main();
}
