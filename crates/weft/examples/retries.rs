//! Failures and retries.
//!
//! - `flaky(k)` fails its first `k` attempts, then succeeds; its retry
//!   policy allows three retries. Attempts are counted in a marker file
//!   named after the run, in the temporary directory (each attempt is a new
//!   process, so memory would not do).
//! - `always_panics()` panics on every attempt: the runtime sees an error
//!   with the panic's message, retries once, and fails the run.
//! - `survive()` runs `always_panics` as a child and returns the child's
//!   error message instead of failing.
//!
//! ```text
//! cargo build -p weft-workflows --example retries
//! weft dev -- target/debug/examples/retries
//! # in another terminal:
//! weft run flaky '[2]'             # succeeds on the third attempt: "attempt 3"
//! weft run flaky '[5]'             # fails after four attempts
//! weft run always_panics '[]'      # fails: "panicked: RETRIES_EXAMPLE_SETTINGS is never set"
//! weft run survive '[]'            # succeeds with the child's error message
//! ```

use std::path::PathBuf;

use weft::{Retry, SubtaskError, Task, TaskContext, TaskOptions, TaskResult, Workflows};

const ALWAYS_PANICS: Task<(), ()> = Task::named("always_panics");

/// `flaky` is tried at most 1 + this many times.
const FLAKY_RETRIES: u32 = 3;

/// The file counting a run's attempts.
fn attempts_file(ctx: &TaskContext) -> PathBuf {
    let run = ctx.task_run_id().unwrap_or("no-run-id");
    std::env::temp_dir().join(format!("weft-retries-example-{run}"))
}

async fn flaky(ctx: TaskContext, failures: u32) -> TaskResult<String> {
    let file = attempts_file(&ctx);
    let attempt = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    // The last attempt the policy allows cleans up, whatever its outcome.
    if attempt > FLAKY_RETRIES {
        let _ = std::fs::remove_file(&file);
    } else {
        std::fs::write(&file, attempt.to_string())?;
    }
    if attempt <= failures {
        return Err(format!("attempt {attempt} of {failures} planned failures").into());
    }
    let _ = std::fs::remove_file(&file);
    Ok(format!("attempt {attempt}"))
}

async fn always_panics(_ctx: TaskContext, (): ()) -> TaskResult<()> {
    let settings = std::env::var("RETRIES_EXAMPLE_SETTINGS").ok();
    let value = settings.expect("RETRIES_EXAMPLE_SETTINGS is never set");
    println!("{value}");
    Ok(())
}

async fn survive(ctx: TaskContext, (): ()) -> TaskResult<String> {
    match ctx.run(&ALWAYS_PANICS, ()).await {
        Ok(()) => Ok("the child succeeded?".into()),
        Err(SubtaskError::Failed { message, .. }) => Ok(format!("the child failed: {message}")),
        Err(other) => Err(other.into()),
    }
}

fn main() {
    let mut app = Workflows::new();
    app.task_with(
        "flaky",
        TaskOptions::new().retry(Retry::new(FLAKY_RETRIES, 200).factor(2.0)),
        flaky,
    );
    app.register_with(
        ALWAYS_PANICS,
        TaskOptions::new().retry(Retry::new(1, 100)),
        always_panics,
    );
    app.task("survive", survive);
    app.main();
}
