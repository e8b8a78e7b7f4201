//! What every store must do, whatever holds the data: each check is
//! generic over a [`Backend`], and `conformance_tests!(Backend)` turns them
//! into one `#[tokio::test]` each in a store's own test file; the checks
//! only a store several nodes share has, `cluster_conformance_tests!`.

// Each store's test binary takes part of this: the cluster checks are
// PostgreSQL's only.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use weft_protocol::payload::Json;
use weft_protocol::socket::{RetryPolicy, TaskDefinition, TaskOptions};
use weft_store::RunState::*;
use weft_store::*;

/// How long a heartbeat may take in these checks.
const BEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// A store under test.
pub trait Backend: Sized {
    /// Empty storage of its own.
    async fn fresh() -> Self;
    /// A new handle on the same data; dropping one without closing
    /// anything is how these checks crash.
    async fn open(&self) -> Arc<dyn Store>;
}

/// A store several nodes share.
pub trait ClusterBackend: Backend {
    /// A handle for another node of the cluster on the same data, with a
    /// timeout of one second.
    async fn open_as(&self, node: &str) -> Arc<dyn Store>;
}

/// One `#[tokio::test]` per check, for a [`Backend`].
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ty) => {
        $crate::conformance_tests!(
            $backend;
            tasks_register_and_reregister,
            a_run_goes_through_attempts_to_completion,
            root_idempotency_keys_hold_for_a_day,
            concurrent_starts_with_one_key_make_one_run,
            subtask_keys_deduplicate_within_their_parent,
            cancel_reaches_every_descendant_and_refuses_ended_runs,
            recovery_relaunches_interrupted_attempts_and_adopts_their_children,
            adoption_survives_any_number_of_crashes,
            adoption_hands_each_child_to_one_call_and_skips_failed_ones,
            claims_take_due_runs_oldest_first_and_each_once,
            claims_within_memory_stop_at_the_first_run_that_does_not_fit,
            a_parent_attempt_that_ended_starts_no_children,
            pruning_removes_old_ended_trees_and_their_logs,
            runs_are_counted_by_state,
            root_runs_are_listed_with_their_subtasks_counted,
            sessions_expire_belong_to_their_key_and_end_on_sign_out,
            each_attempt_keeps_what_its_processes_used,
            listing_pages_newest_first_with_filters,
            pinned_versions_pass_to_subtasks_and_filter_lists,
            runs_are_counted_per_bucket_by_task_and_state,
            logs_filter_by_run_tree_time_and_text,
        );
    };
    ($backend:ty; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                conformance::$name::<$backend>().await
            }
        )+
    };
}

/// One `#[tokio::test]` per check that only a store several nodes share
/// has, for a [`ClusterBackend`].
#[macro_export]
macro_rules! cluster_conformance_tests {
    ($backend:ty) => {
        $crate::conformance_tests!(
            $backend;
            claims_from_many_nodes_take_each_run_once,
            reports_are_fenced_to_the_node_that_runs_the_attempt,
            a_silent_node_is_rescued_and_its_late_report_refused,
            a_node_id_runs_once_at_a_time,
        );
    };
}

fn root(task: &str, input: serde_json::Value) -> NewRun {
    NewRun {
        task_name: task.into(),
        input: input.into(),
        parent: None,
        idempotency_key: None,
        idempotency_created_at: None,
        task_version: None,
        trace_parent: None,
        at: Utc::now(),
    }
}

fn child(
    parent: &RunRecord,
    attempt: u32,
    task: &str,
    input: serde_json::Value,
    key: Option<&str>,
) -> NewRun {
    NewRun {
        parent: Some(ParentRef {
            run_id: parent.id.clone(),
            root_id: parent.root_id.clone(),
            attempt,
        }),
        idempotency_key: key.map(str::to_string),
        idempotency_created_at: key.map(|_| "2026-01-01T00:00:00Z".to_string()),
        ..root(task, input)
    }
}

/// A child whose input is this JSON text, as its parent's SDK wrote it.
fn child_text(parent: &RunRecord, attempt: u32, task: &str, input: &str) -> NewRun {
    NewRun {
        input: Json::parse(input).unwrap(),
        ..child(parent, attempt, task, json!([]), None)
    }
}

/// Creates a run and starts its first attempt.
async fn started(store: &dyn Store, new: NewRun) -> RunRecord {
    let run = store.create_run(new).await.unwrap().run;
    store
        .start_attempt(&run.id, Utc::now())
        .await
        .unwrap()
        .unwrap()
}

/// Ends an attempt of a run.
async fn end(
    store: &dyn Store,
    run_id: &str,
    attempt: u32,
    outcome: AttemptOutcome,
) -> Result<Option<RunRecord>> {
    store
        .finish_attempt(AttemptEnd {
            run_id: run_id.to_string(),
            attempt,
            at: Utc::now(),
            outcome,
        })
        .await
}

pub async fn tasks_register_and_reregister<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let defs = vec![
        TaskDefinition {
            name: "a".into(),
            options: Some(TaskOptions {
                retry: Some(RetryPolicy {
                    max_retries: Some(2),
                    wait_duration_ms: Some(10),
                    factor: None,
                }),
                timeout_seconds: Some(5),
                plan: None,
            }),
            parameters: None,
        },
        TaskDefinition {
            name: "b".into(),
            options: None,
            parameters: None,
        },
    ];
    let tasks = store.register_tasks(&defs, Utc::now()).await.unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(tasks[0].id, "tsk-a");
    assert_eq!(tasks[0].options.timeout_seconds, Some(5));

    let tasks = store.register_tasks(&defs[1..], Utc::now()).await.unwrap();
    assert_eq!(
        tasks
            .iter()
            .map(|t| (t.name.as_str(), t.registered))
            .collect::<Vec<_>>(),
        [("b", true), ("a", false)]
    );
}

pub async fn a_run_goes_through_attempts_to_completion<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let run = store.create_run(root("square", json!([3]))).await.unwrap();
    assert_eq!(run.how, Creation::New);
    let run = run.run;
    assert_eq!(
        (run.status, run.root_id.as_str()),
        (Pending, run.id.as_str())
    );

    let started = store
        .start_attempt(&run.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.status, Running);
    assert_eq!(started.current_attempt().unwrap().number, 1);
    // A second start is refused: the run is no longer pending.
    assert!(
        store
            .start_attempt(&run.id, Utc::now())
            .await
            .unwrap()
            .is_none()
    );

    let retry_at = Utc::now() + Duration::milliseconds(50);
    let failed = end(
        &*store,
        &run.id,
        1,
        AttemptOutcome::Retry {
            error: "boom".into(),
            retry_at,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(failed.status, Pending);
    assert_eq!(failed.failed_attempts(), 1);
    assert!(failed.not_before.is_some());
    // The same attempt cannot end twice.
    let again = end(
        &*store,
        &run.id,
        1,
        AttemptOutcome::Failed {
            error: "late".into(),
        },
    )
    .await
    .unwrap();
    assert!(again.is_none());

    store
        .start_attempt(&run.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let done = end(
        &*store,
        &run.id,
        2,
        AttemptOutcome::Completed {
            output: json!([9]).into(),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.status, Completed);
    assert_eq!(done.output, Some(json!([9]).into()));
    assert_eq!(done.error, None);
    assert_eq!(done.attempts.len(), 2);
    assert_eq!(done.attempts[0].error.as_deref(), Some("boom"));
    assert_eq!(done.attempts[1].output, Some(json!([9]).into()));
    assert!(done.completed_at.is_some());
}

pub async fn root_idempotency_keys_hold_for_a_day<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let mut new = root("a", json!([]));
    new.idempotency_key = Some("k1".into());
    let first = store.create_run(new.clone()).await.unwrap().run;
    let second = store.create_run(new.clone()).await.unwrap();
    assert_eq!(
        (second.how, second.run.id.as_str()),
        (Creation::Deduplicated, first.id.as_str())
    );

    new.at = Utc::now() + Duration::hours(25);
    let later = store.create_run(new).await.unwrap();
    assert_eq!(later.how, Creation::New);
    assert_ne!(later.run.id, first.id);
}

/// Many clients retrying one start at once (several nodes, one database):
/// one run is made, and every caller is told its id.
pub async fn concurrent_starts_with_one_key_make_one_run<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let mut new = root("a", json!([1]));
    new.idempotency_key = Some("same-key".into());
    let starts: Vec<_> = (0..16)
        .map(|_| {
            let (store, new) = (store.clone(), new.clone());
            tokio::spawn(async move { store.create_run(new).await.unwrap() })
        })
        .collect();
    let mut made = Vec::new();
    for start in starts {
        made.push(start.await.unwrap());
    }
    let fresh = made.iter().filter(|c| c.how == Creation::New).count();
    assert_eq!(fresh, 1, "exactly one start makes the run");
    assert!(made.iter().all(|c| c.run.id == made[0].run.id));
    let all = store
        .list_runs(&RunFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

pub async fn subtask_keys_deduplicate_within_their_parent<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let parent = started(&*store, root("p", json!([]))).await;
    let a = store
        .create_run(child(&parent, 1, "c", json!([1]), Some("u1")))
        .await
        .unwrap();
    let b = store
        .create_run(child(&parent, 1, "c", json!([1]), Some("u1")))
        .await
        .unwrap();
    assert_eq!((b.how, &b.run.id), (Creation::Deduplicated, &a.run.id));
    let c = store
        .create_run(child(&parent, 1, "c", json!([1]), Some("u2")))
        .await
        .unwrap();
    assert_eq!(c.how, Creation::New);
    assert_eq!(c.run.parent_id.as_deref(), Some(parent.id.as_str()));
    assert_eq!(c.run.root_id, parent.id);
    assert_eq!(
        store
            .open_children(&[parent.id.clone(), "trn-other".into()])
            .await
            .unwrap(),
        vec![(parent.id.clone(), 2)]
    );
}

pub async fn cancel_reaches_every_descendant_and_refuses_ended_runs<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let parent = started(&*store, root("p", json!([]))).await;
    let kid = started(&*store, child(&parent, 1, "c", json!([1]), None)).await;
    let grandkid = store
        .create_run(child(&kid, 1, "g", json!([2]), None))
        .await
        .unwrap()
        .run;
    let done = store
        .create_run(child(&parent, 1, "c", json!([3]), None))
        .await
        .unwrap()
        .run;
    store.start_attempt(&done.id, Utc::now()).await.unwrap();
    end(
        &*store,
        &done.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();

    let CancelOutcome::Canceled(ids) = store.cancel_run(&parent.id, Utc::now()).await.unwrap()
    else {
        panic!("expected a cancel")
    };
    assert_eq!(
        ids,
        vec![parent.id.clone(), kid.id.clone(), grandkid.id.clone()]
    );
    let kid = store.get_run(&kid.id).await.unwrap().unwrap();
    assert_eq!((kid.status, kid.attempts[0].status), (Canceled, Canceled));
    assert_eq!(
        store.get_run(&done.id).await.unwrap().unwrap().status,
        Completed
    );
    assert_eq!(
        store.cancel_run(&parent.id, Utc::now()).await.unwrap(),
        CancelOutcome::AlreadyEnded(Canceled)
    );
    assert_eq!(
        store.cancel_run("trn-nope", Utc::now()).await.unwrap(),
        CancelOutcome::NotFound
    );
    // A canceled run's attempt can no longer complete.
    let late = end(
        &*store,
        &kid.id,
        1,
        AttemptOutcome::Completed {
            output: json!([0]).into(),
        },
    )
    .await
    .unwrap();
    assert!(late.is_none());
}

pub async fn recovery_relaunches_interrupted_attempts_and_adopts_their_children<B: Backend>() {
    let backend = B::fresh().await;
    let (parent, kids) = {
        let store = backend.open().await;
        let parent = started(&*store, root("p", json!([]))).await;
        let mut kids = Vec::new();
        for i in 0..3 {
            kids.push(
                store
                    .create_run(child(&parent, 1, "c", json!([i]), Some(&format!("k{i}"))))
                    .await
                    .unwrap()
                    .run,
            );
        }
        store.start_attempt(&kids[0].id, Utc::now()).await.unwrap();
        end(
            &*store,
            &kids[0].id,
            1,
            AttemptOutcome::Completed {
                output: json!([0]).into(),
            },
        )
        .await
        .unwrap();
        store.start_attempt(&kids[1].id, Utc::now()).await.unwrap();
        (parent, kids)
        // The store is dropped here without closing anything: a crash.
    };

    let store = backend.open().await;
    let interrupted = store.recover(Utc::now()).await.unwrap();
    let mut ids: Vec<_> = interrupted.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    let mut want = [parent.id.as_str(), kids[1].id.as_str()];
    want.sort();
    assert_eq!(ids, want, "the attempts that were running");
    let pending = store
        .list_runs(&RunFilter {
            status: Some(Pending),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 3, "kids[2] was pending all along");
    let p = interrupted.iter().find(|r| r.id == parent.id).unwrap();
    assert!(p.attempts[0].interrupted);
    assert_eq!(
        p.failed_attempts(),
        0,
        "an interruption is not the task's failure"
    );

    // The relaunched parent asks for the same children with fresh keys.
    let p = store
        .start_attempt(&parent.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.current_attempt().unwrap().number, 2);
    for (i, kid) in kids.iter().enumerate() {
        let again = store
            .create_run(child(&p, 2, "c", json!([i]), Some(&format!("new{i}"))))
            .await
            .unwrap();
        assert_eq!((again.how, &again.run.id), (Creation::Adopted, &kid.id));
    }
    // A fourth, never started before, is new; so is a repeat of an adopted one.
    let fresh = store
        .create_run(child(&p, 2, "c", json!([0]), Some("new-extra")))
        .await
        .unwrap();
    assert_eq!(fresh.how, Creation::New);
    assert_eq!(
        store.get_run(&kids[0].id).await.unwrap().unwrap().output,
        Some(json!([0]).into())
    );
}

/// Crashes the parent's running attempt (recovery records it interrupted)
/// and starts its next one.
async fn crash_and_relaunch(
    backend: &impl Backend,
    parent_id: &str,
) -> (Arc<dyn Store>, RunRecord) {
    let store = backend.open().await;
    store.recover(Utc::now()).await.unwrap();
    let parent = store
        .start_attempt(parent_id, Utc::now())
        .await
        .unwrap()
        .expect("the parent is pending again");
    (store, parent)
}

pub async fn adoption_survives_any_number_of_crashes<B: Backend>() {
    let backend = B::fresh().await;
    let (parent, first) = {
        let store = backend.open().await;
        let parent = started(&*store, root("p", json!([]))).await;
        let mut first = Vec::new();
        // Attempt 1 starts children 0..3, then the runtime dies.
        for i in 0..3 {
            first.push(
                store
                    .create_run(child(&parent, 1, "c", json!({"i": i, "of": 6}), None))
                    .await
                    .unwrap()
                    .run
                    .id,
            );
        }
        (parent, first)
    };
    // Attempt 2 asks for 0..3 again (adopted), and starts 3..5 anew; dies.
    let mut second = Vec::new();
    {
        let (store, p) = crash_and_relaunch(&backend, &parent.id).await;
        assert_eq!(p.current_attempt().unwrap().number, 2);
        for i in 0..5 {
            let made = store
                .create_run(child(&p, 2, "c", json!({"of": 6, "i": i}), None))
                .await
                .unwrap();
            match first.get(i) {
                Some(id) => assert_eq!((made.how, &made.run.id), (Creation::Adopted, id)),
                None => assert_eq!(made.how, Creation::New, "attempt 2, child {i}"),
            }
            second.push(made.run.id);
        }
    }
    // Attempts 3 and 4 each find all five: the ones attempt 2 adopted and
    // the ones it started; the sixth call is new, once.
    for attempt in [3, 4] {
        let (store, p) = crash_and_relaunch(&backend, &parent.id).await;
        assert_eq!(p.current_attempt().unwrap().number, attempt);
        for (i, id) in second[..5].iter().enumerate() {
            let made = store
                .create_run(child(&p, attempt, "c", json!({"i": i, "of": 6}), None))
                .await
                .unwrap();
            assert_eq!(
                (made.how, &made.run.id),
                (Creation::Adopted, id),
                "attempt {attempt}, child {i}"
            );
        }
        let sixth = store
            .create_run(child(&p, attempt, "c", json!({"i": 5, "of": 6}), None))
            .await
            .unwrap();
        if attempt == 3 {
            assert_eq!(sixth.how, Creation::New);
            second.push(sixth.run.id);
        } else {
            assert_eq!((sixth.how, &sixth.run.id), (Creation::Adopted, &second[5]));
        }
    }
    let store = backend.open().await;
    let tree = store
        .list_runs(&RunFilter {
            root_ids: vec![parent.id.clone()],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tree.len(), 1 + 6, "the parent and exactly its six children");
}

pub async fn adoption_hands_each_child_to_one_call_and_skips_failed_ones<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let parent = started(&*store, root("p", json!([]))).await;
    // Two identical calls make two children; one more fails, one is canceled.
    let twin_a = store
        .create_run(child(&parent, 1, "c", json!([7]), None))
        .await
        .unwrap()
        .run;
    let twin_b = store
        .create_run(child(&parent, 1, "c", json!([7]), None))
        .await
        .unwrap()
        .run;
    assert_ne!(twin_a.id, twin_b.id);
    let failed = started(&*store, child(&parent, 1, "c", json!([8]), None)).await;
    end(
        &*store,
        &failed.id,
        1,
        AttemptOutcome::Failed {
            error: "boom".into(),
        },
    )
    .await
    .unwrap();
    let canceled = store
        .create_run(child(&parent, 1, "c", json!([9]), None))
        .await
        .unwrap()
        .run;
    store.cancel_run(&canceled.id, Utc::now()).await.unwrap();
    let other_task = store
        .create_run(child(&parent, 1, "d", json!([7]), None))
        .await
        .unwrap()
        .run;
    let keyed = store
        .create_run(child_text(&parent, 1, "k", r#"[{"b": 1, "a": [1, 2]}]"#))
        .await
        .unwrap()
        .run;
    let float = store
        .create_run(child_text(&parent, 1, "f", "[1.0]"))
        .await
        .unwrap()
        .run;

    // Attempt 1 fails on its own (a retry, not a crash): attempt 2 is handed
    // back what attempt 1 started too.
    end(
        &*store,
        &parent.id,
        1,
        AttemptOutcome::Retry {
            error: "parent failed".into(),
            retry_at: Utc::now(),
        },
    )
    .await
    .unwrap()
    .unwrap();
    let p = store
        .start_attempt(&parent.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let ask = |task: &'static str, input: serde_json::Value| {
        let store = store.clone();
        let p = p.clone();
        async move {
            store
                .create_run(child(&p, 2, task, input, None))
                .await
                .unwrap()
        }
    };
    let a = ask("c", json!([7])).await;
    let b = ask("c", json!([7])).await;
    assert_eq!(
        (a.how, &a.run.id),
        (Creation::Adopted, &twin_a.id),
        "in order"
    );
    assert_eq!((b.how, &b.run.id), (Creation::Adopted, &twin_b.id));
    assert_eq!(
        ask("c", json!([7])).await.how,
        Creation::New,
        "a third call is a third child"
    );
    let d = ask("d", json!([7])).await;
    assert_eq!(
        (d.how, &d.run.id),
        (Creation::Adopted, &other_task.id),
        "matched by task too"
    );
    // Inputs are the same JSON value whatever their key order or
    // whitespace; 1 and 1.0 are not the same input.
    let k = store
        .create_run(child_text(&p, 2, "k", r#"[{"a":[1,2],"b":1}]"#))
        .await
        .unwrap();
    assert_eq!((k.how, &k.run.id), (Creation::Adopted, &keyed.id));
    let f = store
        .create_run(child_text(&p, 2, "f", "[1]"))
        .await
        .unwrap();
    assert_eq!(f.how, Creation::New, "1 is not 1.0");
    assert_ne!(f.run.id, float.id);
    let again = ask("c", json!([8])).await;
    assert_eq!(again.how, Creation::New, "a failed child is started anew");
    assert_ne!(again.run.id, failed.id);
    assert_eq!(
        ask("c", json!([9])).await.how,
        Creation::New,
        "so is a canceled one"
    );
}

pub async fn listing_pages_newest_first_with_filters<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .create_run(root(if i % 2 == 0 { "even" } else { "odd" }, json!([i])))
                .await
                .unwrap()
                .run,
        );
    }
    let page = store
        .list_runs(&RunFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&ids[4].id, &ids[3].id]
    );
    let next = store
        .list_runs(&RunFilter {
            limit: 10,
            before_seq: Some(page[1].seq),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 3);
    let even = store
        .list_runs(&RunFilter {
            limit: 10,
            task_names: vec!["even".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(even.len(), 3);
    let by_root = store
        .list_runs(&RunFilter {
            limit: 10,
            root_ids: vec![ids[1].id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_root.len(), 1);
}

pub async fn claims_within_memory_stop_at_the_first_run_that_does_not_fit<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    const GB: u64 = 1 << 30;
    let mut ids = Vec::new();
    for task in ["small", "other", "big", "small"] {
        ids.push(
            store
                .create_run(root(task, json!([])))
                .await
                .unwrap()
                .run
                .id,
        );
    }
    let memory = |free_bytes| MemoryLimit {
        free_bytes,
        task_bytes: vec![("small".into(), GB), ("big".into(), 3 * GB)],
        default_bytes: 2 * GB,
    };
    let claimed = |c: Claimed| c.runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // What claims take next, oldest first, with their attempts so far.
    let next = store.next_pending(3).await.unwrap();
    assert_eq!(
        next.iter().map(|p| (&p.id, p.attempts)).collect::<Vec<_>>(),
        [(&ids[0], 0), (&ids[1], 0), (&ids[2], 0)]
    );
    assert_eq!(next[0].task_name, "small");
    assert_eq!(next[0].root_id, ids[0]);
    // 1 + 2 (a task not listed) fit in 4; the big one would make 6.
    let first = store
        .claim_within(10, Some(&memory(4 * GB)), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        claimed(first),
        ids[..2],
        "oldest first, up to the first that does not fit"
    );
    // The big one at the head waits for room; the small one behind it
    // does not pass it.
    let none = store
        .claim_within(10, Some(&memory(2 * GB)), Utc::now())
        .await
        .unwrap();
    assert!(none.runs.is_empty(), "{:?}", none.runs);
    assert!(none.next_due.is_some(), "work is still due");
    let big = store
        .claim_within(10, Some(&memory(3 * GB)), Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed(big), ids[2..3]);
    assert_eq!(
        store.next_pending(10).await.unwrap().len(),
        1,
        "claimed runs are no longer next"
    );
    let rest = store.claim(10, Utc::now()).await.unwrap();
    assert_eq!(claimed(rest), ids[3..], "no budget: whatever is due");
}

pub async fn pinned_versions_pass_to_subtasks_and_filter_lists<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let pinned = |task: &str, version: Option<&str>| NewRun {
        task_version: version.map(str::to_string),
        ..root(task, json!([]))
    };
    let v1 = started(&*store, pinned("p", Some("v1"))).await;
    assert_eq!(v1.task_version.as_deref(), Some("v1"));
    let v2 = store.create_run(pinned("p", Some("v2"))).await.unwrap().run;
    let loose = store.create_run(pinned("p", None)).await.unwrap().run;
    let other = store.create_run(pinned("q", Some("v1"))).await.unwrap().run;
    // A subtask runs in its root's version, whatever its request says.
    let kid = store
        .create_run(NewRun {
            task_version: Some("v9".into()),
            ..child(&v1, 1, "c", json!([]), None)
        })
        .await
        .unwrap()
        .run;
    assert_eq!(kid.task_version.as_deref(), Some("v1"));
    // So does the trace its root run was started in.
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = started(
        &*store,
        NewRun {
            trace_parent: Some(TRACE.into()),
            ..root("t", json!([]))
        },
    )
    .await;
    let traced_kid = store
        .create_run(child(&traced, 1, "c", json!([]), None))
        .await
        .unwrap()
        .run;
    assert_eq!(traced_kid.trace_parent.as_deref(), Some(TRACE));
    assert_eq!(kid.trace_parent, None);
    assert_eq!(
        store.get_run(&kid.id).await.unwrap().unwrap().task_version,
        kid.task_version,
        "kept"
    );
    let list = |filter: RunFilter| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .list_runs(&RunFilter {
                    limit: 100,
                    ..filter
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |mut ids: Vec<&String>| {
        ids.sort();
        ids.into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(
        list(RunFilter {
            pinned: vec![("p".into(), "v1".into())],
            ..Default::default()
        })
        .await,
        vec![v1.id.clone()],
        "p:v1 is p's runs pinned to v1 only"
    );
    assert_eq!(
        list(RunFilter {
            task_names: vec!["p".into()],
            ..Default::default()
        })
        .await,
        sorted(vec![&v1.id, &v2.id, &loose.id]),
        "p, with no version, is every run of p"
    );
    assert_eq!(
        list(RunFilter {
            task_names: vec!["q".into()],
            pinned: vec![("p".into(), "v2".into())],
            ..Default::default()
        })
        .await,
        sorted(vec![&v2.id, &other.id]),
        "task filters are ORed"
    );
    assert_eq!(
        list(RunFilter {
            versions: vec!["v1".into()],
            ..Default::default()
        })
        .await,
        sorted(vec![&v1.id, &other.id, &kid.id]),
        "a version alone: every run pinned to it, subtasks too"
    );
}

pub async fn runs_are_counted_per_bucket_by_task_and_state<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let from = Utc::now() - Duration::seconds(600);
    let at = |secs: i64| from + Duration::seconds(secs);
    let made = |task: &str, secs: i64| NewRun {
        at: at(secs),
        ..root(task, json!([]))
    };
    // a: two runs in the first minute, one in the third; b: one in the second.
    let a1 = store.create_run(made("a", 5)).await.unwrap().run;
    let a2 = store.create_run(made("a", 59)).await.unwrap().run;
    store.create_run(made("a", 150)).await.unwrap();
    let b1 = store.create_run(made("b", 60)).await.unwrap().run;
    // Outside the window: before it, and at its end (the end is open).
    store.create_run(made("a", -1)).await.unwrap();
    store.create_run(made("a", 300)).await.unwrap();
    let query = |counted, task_names: Vec<String>| RunCountQuery {
        counted,
        task_names,
        from,
        to: at(300),
        resolution: 60,
    };
    let mut created = store
        .count_runs(&query(Counted::Created, Vec::new()))
        .await
        .unwrap();
    created.sort_by(|x, y| (&x.task_name, x.bucket).cmp(&(&y.task_name, y.bucket)));
    let seen: Vec<_> = created
        .iter()
        .map(|c| (c.task_name.as_str(), c.bucket, c.count))
        .collect();
    assert_eq!(seen, [("a", 0, 2), ("a", 2, 1), ("b", 1, 1)]);
    let only_b = store
        .count_runs(&query(Counted::Created, vec!["b".into()]))
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].task_name, "b");
    // Ended: a1 completed, a2 failed, b1 canceled; the others are pending.
    for run in [&a1, &a2] {
        store
            .start_attempt(&run.id, Utc::now())
            .await
            .unwrap()
            .unwrap();
    }
    end(
        &*store,
        &a1.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap()
    .unwrap();
    end(
        &*store,
        &a2.id,
        1,
        AttemptOutcome::Failed { error: "no".into() },
    )
    .await
    .unwrap()
    .unwrap();
    store.cancel_run(&b1.id, Utc::now()).await.unwrap();
    let ended = store
        .count_runs(&RunCountQuery {
            counted: Counted::Ended,
            task_names: Vec::new(),
            from: Utc::now() - Duration::seconds(60),
            to: Utc::now() + Duration::seconds(1),
            resolution: 3600,
        })
        .await
        .unwrap();
    let mut seen: Vec<_> = ended
        .iter()
        .map(|c| (c.task_name.as_str(), c.status, c.bucket, c.count))
        .collect();
    seen.sort_by_key(|s| (s.0, s.1.as_str()));
    assert_eq!(
        seen,
        [
            ("a", Completed, 0, 1),
            ("a", Failed, 0, 1),
            ("b", Canceled, 0, 1)
        ]
    );
}

pub async fn logs_filter_by_run_tree_time_and_text<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let parent = started(&*store, root("p", json!([]))).await;
    let kid = store
        .create_run(child(&parent, 1, "c", json!([]), None))
        .await
        .unwrap()
        .run;
    let t0 = Utc::now();
    let line = |run: &RunRecord, msg: &str, at| NewLogLine {
        run_id: run.id.clone(),
        task_name: run.task_name.clone(),
        attempt: 1,
        stream: "stdout",
        at,
        message: msg.into(),
    };
    store
        .append_logs(vec![
            line(&parent, "hello from parent", t0),
            line(&kid, "hello from kid", t0 + Duration::seconds(1)),
            line(&kid, "bye", t0 + Duration::seconds(2)),
        ])
        .await
        .unwrap();
    let q = |run_ids: Vec<String>, include_descendants| LogQuery {
        run_ids,
        include_descendants,
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        store
            .query_logs(&q(vec![parent.id.clone()], false))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .query_logs(&q(vec![parent.id.clone()], true))
            .await
            .unwrap()
            .len(),
        3
    );
    let mut text = q(vec![], false);
    text.text = vec!["hello".into()];
    assert_eq!(store.query_logs(&text).await.unwrap().len(), 2);
    let mut window = q(vec![], false);
    window.start = Some(t0 + Duration::milliseconds(500));
    window.end = Some(t0 + Duration::seconds(2));
    let lines = store.query_logs(&window).await.unwrap();
    assert_eq!(
        lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["hello from kid"]
    );
}

pub async fn claims_take_due_runs_oldest_first_and_each_once<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .create_run(root("t", json!([i])))
                .await
                .unwrap()
                .run
                .id,
        );
    }
    // The oldest is retried later: not due.
    let first = store.claim(1, Utc::now()).await.unwrap();
    assert_eq!(first.runs.len(), 1);
    assert_eq!(first.runs[0].id, ids[0]);
    assert_eq!(first.runs[0].status, Running);
    assert_eq!(
        first.runs[0].attempts[0].node_id.as_deref(),
        Some(store.node().id.as_str())
    );
    let later = Utc::now() + Duration::minutes(5);
    end(
        &*store,
        &ids[0],
        1,
        AttemptOutcome::Retry {
            error: "e".into(),
            retry_at: later,
        },
    )
    .await
    .unwrap()
    .unwrap();
    let two = store.claim(2, Utc::now()).await.unwrap();
    assert_eq!(
        two.runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&ids[1], &ids[2]]
    );
    assert!(two.next_due.unwrap() <= Utc::now(), "due runs are left");
    let rest = store.claim(10, Utc::now()).await.unwrap();
    assert_eq!(
        rest.runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&ids[3], &ids[4]]
    );
    let due = rest.next_due.expect("the retried run waits");
    assert!(
        (due - later).num_milliseconds().abs() < 5,
        "{due} vs {later}"
    );
    assert!(store.claim(10, Utc::now()).await.unwrap().runs.is_empty());
    let retried = store.claim(10, later).await.unwrap();
    assert_eq!(retried.runs[0].id, ids[0]);
    assert_eq!(retried.runs[0].attempts.len(), 2);
    assert_eq!(retried.next_due, None);

    // Many claimers at once, from every node there is: each run once.
    let mut created = std::collections::HashSet::new();
    for i in 0..40 {
        created.insert(
            store
                .create_run(root("t", json!([100 + i])))
                .await
                .unwrap()
                .run
                .id,
        );
    }
    let handles = vec![store.clone(); 4];
    claim_all_at_once(&handles, created).await;
}

/// Many nodes claiming at once: each run once.
pub async fn claims_from_many_nodes_take_each_run_once<B: ClusterBackend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let mut created = std::collections::HashSet::new();
    for i in 0..40 {
        created.insert(
            store
                .create_run(root("t", json!([i])))
                .await
                .unwrap()
                .run
                .id,
        );
    }
    let mut handles = vec![store.clone()];
    for n in 0..3 {
        let other = backend.open_as(&format!("claimer-{n}")).await;
        other.join().await.unwrap();
        handles.push(other);
    }
    claim_all_at_once(&handles, created).await;
}

/// Twelve claims of four at once, spread over `handles`: every run in
/// `created` is claimed, none twice.
async fn claim_all_at_once(handles: &[Arc<dyn Store>], created: std::collections::HashSet<String>) {
    let claims = (0..12).map(|i| {
        let store = handles[i % handles.len()].clone();
        tokio::spawn(async move { store.claim(4, Utc::now()).await.unwrap().runs })
    });
    let mut claimed = Vec::new();
    for c in claims {
        claimed.extend(c.await.unwrap().into_iter().map(|r| r.id));
    }
    let unique: std::collections::HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(unique.len(), claimed.len(), "no run claimed twice");
    assert_eq!(unique, created, "every due run claimed");
}

pub async fn a_parent_attempt_that_ended_starts_no_children<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let parent = started(&*store, root("p", json!([]))).await;
    end(
        &*store,
        &parent.id,
        1,
        AttemptOutcome::Failed {
            error: "done".into(),
        },
    )
    .await
    .unwrap()
    .unwrap();
    let err = store
        .create_run(child(&parent, 1, "c", json!([1]), None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AttemptEnded { attempt: 1, .. }),
        "{err:?}"
    );
    let none = store
        .list_runs(&RunFilter {
            root_ids: vec![parent.id.clone()],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(none.len(), 1, "no child was made");
}

pub async fn pruning_removes_old_ended_trees_and_their_logs<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let old = started(&*store, root("p", json!(["old"]))).await;
    let kid = started(&*store, child(&old, 1, "c", json!([1]), None)).await;
    store
        .append_logs(vec![NewLogLine {
            run_id: kid.id.clone(),
            task_name: "c".into(),
            attempt: 1,
            stream: "stdout",
            at: Utc::now(),
            message: "kid says".into(),
        }])
        .await
        .unwrap();
    end(
        &*store,
        &kid.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();
    end(
        &*store,
        &old.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();
    // Ended, but a child still runs: kept.
    let busy = started(&*store, root("p", json!(["busy"]))).await;
    let _running = started(&*store, child(&busy, 1, "c", json!([2]), None)).await;
    end(
        &*store,
        &busy.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();
    let fresh = store
        .create_run(root("p", json!(["fresh"])))
        .await
        .unwrap()
        .run;

    let cutoff = Utc::now() + Duration::seconds(1);
    assert_eq!(store.prune(cutoff, 100).await.unwrap(), 1);
    assert!(store.get_run(&old.id).await.unwrap().is_none());
    assert!(
        store.get_run(&kid.id).await.unwrap().is_none(),
        "with its subtree"
    );
    let logs = store
        .query_logs(&LogQuery {
            run_ids: vec![kid.id.clone()],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(logs.is_empty(), "and its logs");
    assert!(
        store.get_run(&busy.id).await.unwrap().is_some(),
        "a tree still running is kept"
    );
    assert!(
        store.get_run(&fresh.id).await.unwrap().is_some(),
        "pending roots are kept"
    );
    assert_eq!(
        store
            .prune(Utc::now() - Duration::days(1), 100)
            .await
            .unwrap(),
        0,
        "younger than the cutoff"
    );
}

pub async fn runs_are_counted_by_state<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let a = started(&*store, root("t", json!([1]))).await;
    started(&*store, root("t", json!([2]))).await;
    store.create_run(root("t", json!([3]))).await.unwrap();
    end(
        &*store,
        &a.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();
    let mut counts = store.count_by_state().await.unwrap();
    counts.sort();
    assert_eq!(counts, vec![(Pending, 1), (Running, 1), (Completed, 1)]);
}

pub async fn root_runs_are_listed_with_their_subtasks_counted<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let lone = store.create_run(root("t", json!([0]))).await.unwrap().run;
    let parent = started(&*store, root("fan", json!([3]))).await;
    let mut kids = Vec::new();
    for i in 0..3 {
        kids.push(started(&*store, child(&parent, 1, "sq", json!([i]), None)).await);
    }
    let grandchild = started(&*store, child(&kids[0], 1, "sq", json!([9]), None)).await;
    end(
        &*store,
        &grandchild.id,
        1,
        AttemptOutcome::Failed {
            error: "boom".into(),
        },
    )
    .await
    .unwrap();
    end(
        &*store,
        &kids[1].id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();
    let roots = store
        .list_runs(&RunFilter {
            roots_only: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        roots.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [parent.id.as_str(), lone.id.as_str()],
        "roots only, newest first"
    );
    let mut counts = store
        .subtask_counts(&[parent.id.clone(), lone.id.clone()])
        .await
        .unwrap();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            (parent.id.clone(), Running, 2),
            (parent.id.clone(), Completed, 1),
            (parent.id.clone(), Failed, 1),
        ]
    );
    assert!(store.subtask_counts(&[]).await.unwrap().is_empty());
}

pub async fn reports_are_fenced_to_the_node_that_runs_the_attempt<B: ClusterBackend>() {
    let backend = B::fresh().await;
    let other = backend.open_as("other-node").await;
    let store = backend.open().await;
    store.join().await.unwrap();
    other.join().await.unwrap();
    let run = store.create_run(root("t", json!([1]))).await.unwrap().run;
    let claimed = other.claim(1, Utc::now()).await.unwrap().runs;
    assert_eq!(
        claimed[0].attempts[0].node_id.as_deref(),
        Some("other-node")
    );
    let refused = end(
        &*store,
        &run.id,
        1,
        AttemptOutcome::Completed {
            output: json!([9]).into(),
        },
    )
    .await
    .unwrap();
    assert!(
        refused.is_none(),
        "a node cannot end another node's attempt"
    );
    let done = end(
        &*other,
        &run.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.output, Some(json!([1]).into()));
}

pub async fn a_silent_node_is_rescued_and_its_late_report_refused<B: ClusterBackend>() {
    let backend = B::fresh().await;
    let sleepy = backend.open_as("sleepy").await;
    let store = backend.open().await;
    store.join().await.unwrap();
    sleepy.join().await.unwrap();
    let run = store.create_run(root("t", json!([1]))).await.unwrap().run;
    assert_eq!(sleepy.claim(1, Utc::now()).await.unwrap().runs.len(), 1);
    // Nobody is silent yet.
    assert!(store.rescue().await.unwrap().is_empty());
    // Past the sleeper's own timeout (other nodes' handles have 1 s).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(store.heartbeat(BEAT).await.unwrap());
    let rescued = store.rescue().await.unwrap();
    assert_eq!(rescued, vec![run.id.clone()]);
    let back = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(back.status, Pending);
    assert!(back.attempts[0].interrupted);
    assert_eq!(back.failed_attempts(), 0, "not counted against retries");
    // The sleeper wakes: declared dead, its report refused.
    assert!(!sleepy.heartbeat(BEAT).await.unwrap());
    let late = end(
        &*sleepy,
        &run.id,
        1,
        AttemptOutcome::Completed {
            output: json!([1]).into(),
        },
    )
    .await
    .unwrap();
    assert!(late.is_none());
    let nodes = store.nodes().await.unwrap();
    let dead = nodes.iter().find(|n| n.id == "sleepy").unwrap();
    assert!(dead.gone_at.is_some());
    let me = nodes.iter().find(|n| n.id == store.node().id).unwrap();
    assert!(me.gone_at.is_none());
    // The run goes on elsewhere.
    let again = store.claim(1, Utc::now()).await.unwrap().runs;
    assert_eq!(again[0].attempts.len(), 2);
}

pub async fn sessions_expire_belong_to_their_key_and_end_on_sign_out<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let now = Utc::now();
    store
        .create_session("s1", "k1", now + Duration::days(7))
        .await
        .unwrap();
    store
        .create_session("s2", "k1", now + Duration::days(7))
        .await
        .unwrap();
    store
        .create_session("old", "k1", now - Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.session_alive("s1", "k1", now).await.unwrap());
    assert!(
        !store.session_alive("s1", "k2", now).await.unwrap(),
        "made for another key"
    );
    assert!(
        !store.session_alive("old", "k1", now).await.unwrap(),
        "expired"
    );
    assert!(
        !store
            .session_alive("s1", "k1", now + Duration::days(8))
            .await
            .unwrap()
    );
    assert!(!store.session_alive("nobody", "k1", now).await.unwrap());
    store.end_session("s1").await.unwrap();
    assert!(
        !store.session_alive("s1", "k1", now).await.unwrap(),
        "signed out"
    );
    assert!(
        store.session_alive("s2", "k1", now).await.unwrap(),
        "the other session stays"
    );
    store.end_session("s1").await.unwrap();
    // Kept across a restart (another handle on the same data).
    drop(store);
    let again = backend.open().await;
    assert!(again.session_alive("s2", "k1", now).await.unwrap());
}

pub async fn a_node_id_runs_once_at_a_time<B: ClusterBackend>() {
    let backend = B::fresh().await;
    let first = backend.open_as("twin").await;
    first.join().await.unwrap();
    let second = backend.open_as("twin").await;
    let err = second.join().await.unwrap_err();
    assert!(matches!(err, StoreError::NodeAlive { .. }), "{err:?}");
    assert!(err.to_string().contains("--node-id"), "{err}");
    // Once the first leaves, the id is free.
    first.leave().await.unwrap();
    second.join().await.unwrap();
}

pub async fn each_attempt_keeps_what_its_processes_used<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.open().await;
    let run = started(&*store, root("u", json!([]))).await;
    assert_eq!(run.attempts[0].usage, AttemptUsage::default());
    end(
        &*store,
        &run.id,
        1,
        AttemptOutcome::Retry {
            error: "first".into(),
            retry_at: Utc::now(),
        },
    )
    .await
    .unwrap();
    // Recorded after the outcome, as the runtime does once the process
    // is gone.
    let used = AttemptUsage {
        peak_memory_bytes: Some(800 << 20),
        cpu_time_ms: Some(1234),
    };
    let record = |run_id: &str, attempt| UsageRecord {
        run_id: run_id.to_string(),
        attempt,
        usage: used,
    };
    store.record_usage(vec![record(&run.id, 1)]).await.unwrap();
    let second = store
        .start_attempt(&run.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempts[0].usage, used);
    assert_eq!(second.attempts[1].usage, AttemptUsage::default());
    // An attempt that is not there is nothing to record.
    store
        .record_usage(vec![record(&run.id, 9), record("trn-none", 1)])
        .await
        .unwrap();
    let again = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(again.attempts.len(), 2);
}
