//! Two tasks: `square`, and `add_squares`, which runs `square` twice at
//! once as children and adds the results.
//!
//! ```text
//! cargo build -p weft-workflows --example hello
//! weft dev -- target/debug/examples/hello
//! # in another terminal:
//! weft run add_squares '[3, 4]'                     # 25
//! cargo run -p weft-workflows --example trigger -- add_squares '[3, 4]'
//! ```

use weft::{Task, TaskContext, TaskResult, Workflows};

/// The handle parents use to run `square`; its types are its input and
/// output.
const SQUARE: Task<i64, i64> = Task::named("square");

async fn square(ctx: TaskContext, x: i64) -> TaskResult<i64> {
    println!("run {:?}: squaring {x}", ctx.task_run_id());
    Ok(x * x)
}

async fn add_squares(ctx: TaskContext, (a, b): (i64, i64)) -> TaskResult<i64> {
    let (x, y) = futures::try_join!(ctx.run(&SQUARE, a), ctx.run(&SQUARE, b))?;
    println!("{a}² + {b}² = {}", x + y);
    Ok(x + y)
}

fn main() {
    let mut app = Workflows::new();
    app.register(SQUARE, square);
    app.task("add_squares", add_squares);
    app.main();
}
