//! The PostgreSQL store against the real PostgreSQL on this machine
//! (`postgres://127.0.0.1:5432/test`, or `$WEFT_TEST_DATABASE_URL`): every
//! conformance check, each in a schema of its own, and what only a shared
//! store has.

mod conformance;

use std::sync::Arc;

use conformance::Backend;
use sqlx::postgres::PgConnectOptions;
use weft_store::{NodeId, PgStore, Store, StoreError};

fn database_url() -> String {
    std::env::var("WEFT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A schema of its own in the test database, dropped afterwards.
struct Postgres {
    schema: String,
}

impl Postgres {
    fn options(&self) -> PgConnectOptions {
        database_url()
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("search_path", self.schema.as_str())])
    }

    async fn connect(&self, node: NodeId) -> Arc<dyn Store> {
        Arc::new(
            PgStore::connect_with(self.options(), node, 4)
                .await
                .unwrap_or_else(|e| panic!("{e} (is PostgreSQL running? `.ci/run` starts it)")),
        )
    }
}

impl Backend for Postgres {
    async fn fresh() -> Self {
        let schema = format!("weft_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&database_url())
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", database_url()));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        Postgres { schema }
    }

    async fn open(&self) -> Arc<dyn Store> {
        self.connect(NodeId::new("conformance")).await
    }
}

impl conformance::ClusterBackend for Postgres {
    async fn open_as(&self, node: &str) -> Arc<dyn Store> {
        let node = NodeId::new(node).with_timeout(std::time::Duration::from_secs(1));
        self.connect(node).await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        // Dropped inside the test's runtime: a thread of its own may block.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut conn) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&database_url()).await
                    {
                        // Never wait long: a lock held by the test's own
                        // (now blocked) runtime would wait forever.
                        let _ = sqlx::query("SET lock_timeout = '5s'")
                            .execute(&mut conn)
                            .await;
                        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&mut conn)
                            .await;
                    }
                })
        })
        .join();
    }
}

conformance_tests!(Postgres);
cluster_conformance_tests!(Postgres);

#[tokio::test]
async fn a_database_that_does_not_answer_is_named() {
    let started = std::time::Instant::now();
    let err = PgStore::connect("postgres://weft@127.0.0.1:9/nowhere", NodeId::new("n"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("postgres://weft@127.0.0.1:9/nowhere"),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let err = PgStore::connect("mysql://x", NodeId::new("n"))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a PostgreSQL URL"), "{err}");
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused() {
    let pg = Postgres::fresh().await;
    drop(pg.open().await);
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect_with(&pg.options()).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99, 'from the future', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = PgStore::connect_with(pg.options(), NodeId::new("n"), 2)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer weft"), "{err}");
}

#[tokio::test]
async fn two_nodes_starting_200_runs_under_50_keys_at_once_make_50_runs() {
    use weft_store::{NewRun, RunFilter};
    let pg = Postgres::fresh().await;
    let (a, b) = (
        pg.connect(NodeId::new("a")).await,
        pg.connect(NodeId::new("b")).await,
    );
    let starts = (0..200).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let run = store
                .create_run(NewRun {
                    task_name: "t".into(),
                    input: serde_json::json!([i % 50]).into(),
                    parent: None,
                    idempotency_key: Some(format!("key-{}", i % 50)),
                    idempotency_created_at: None,
                    task_version: None,
                    trace_parent: None,
                    at: chrono::Utc::now(),
                })
                .await
                .unwrap()
                .run;
            (i % 50, run.id)
        })
    });
    let mut by_key = std::collections::HashMap::new();
    for s in starts {
        let (key, id) = s.await.unwrap();
        let first = by_key.entry(key).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "key {key} named two runs");
    }
    let all = a
        .list_runs(&RunFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 50);
}

#[tokio::test]
async fn another_node_hears_of_pending_work_and_of_runs_that_end() {
    use weft_store::{AttemptEnd, AttemptOutcome, NewRun, StoreEvent};
    let pg = Postgres::fresh().await;
    let (a, b) = (
        pg.connect(NodeId::new("a")).await,
        pg.connect(NodeId::new("b")).await,
    );
    let mut heard = b.events().expect("a shared store tells its events");
    // The listener says it is listening (a resync) before it hears.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, StoreEvent::Resync);
    let mut own = a.events().unwrap();
    let run = a
        .create_run(NewRun {
            task_name: "t".into(),
            input: serde_json::json!([1]).into(),
            parent: None,
            idempotency_key: None,
            idempotency_created_at: None,
            task_version: None,
            trace_parent: None,
            at: chrono::Utc::now(),
        })
        .await
        .unwrap()
        .run;
    assert_eq!(recv_skipping_resync(&mut heard).await, StoreEvent::Pending);
    a.start_attempt(&run.id, chrono::Utc::now()).await.unwrap();
    a.finish_attempt(AttemptEnd {
        run_id: run.id.clone(),
        attempt: 1,
        at: chrono::Utc::now(),
        outcome: AttemptOutcome::Completed {
            output: serde_json::json!([1]).into(),
        },
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        recv_skipping_resync(&mut heard).await,
        StoreEvent::Ended {
            run_id: run.id.clone(),
            parent_id: None
        }
    );
    // A node does not hear its own ends (it knew first); pending work it
    // made is said to everyone, itself included.
    while let Ok(e) = own.try_recv() {
        assert!(
            !matches!(e, StoreEvent::Ended { .. }),
            "heard its own end: {e:?}"
        );
    }
}

async fn recv_skipping_resync(
    rx: &mut tokio::sync::broadcast::Receiver<weft_store::StoreEvent>,
) -> weft_store::StoreEvent {
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .unwrap();
        if e != weft_store::StoreEvent::Resync {
            return e;
        }
    }
}

fn new_root(task: &str) -> weft_store::NewRun {
    weft_store::NewRun {
        task_name: task.into(),
        input: serde_json::json!([1]).into(),
        parent: None,
        idempotency_key: None,
        idempotency_created_at: None,
        task_version: None,
        trace_parent: None,
        at: chrono::Utc::now(),
    }
}

/// A node that fenced itself before anyone took its work over rejoins: its
/// attempt is closed as interrupted with what happened, under a new
/// incarnation, and a report of the old one is refused.
#[tokio::test]
async fn a_fenced_node_rejoins_under_a_new_incarnation_and_says_what_happened() {
    use weft_store::{AttemptEnd, AttemptOutcome, RunState};
    let pg = Postgres::fresh().await;
    let node = NodeId::new("fenced");
    let first = node.incarnation.clone();
    let a = pg.connect(node).await;
    a.join().await.unwrap();
    let run = a.create_run(new_root("t")).await.unwrap().run;
    assert_eq!(a.claim(1, chrono::Utc::now()).await.unwrap().runs.len(), 1);
    // A sibling handle of the old incarnation, as a late report would use.
    let note = "interrupted: node fenced fenced itself at 12:00:00";
    let back = a.rejoin(note).await.unwrap();
    assert_eq!(back, vec![run.id.clone()]);
    assert_ne!(a.node().incarnation, first, "a new incarnation");
    let stored = a.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunState::Pending);
    assert!(stored.attempts[0].interrupted);
    assert_eq!(stored.attempts[0].error.as_deref(), Some(note));
    assert_eq!(stored.failed_attempts(), 0, "not counted against retries");
    // The old incarnation's report is refused: its attempt is closed.
    let late = a
        .finish_attempt(AttemptEnd {
            run_id: run.id.clone(),
            attempt: 1,
            at: chrono::Utc::now(),
            outcome: AttemptOutcome::Completed {
                output: serde_json::json!([1]).into(),
            },
        })
        .await
        .unwrap();
    assert!(late.is_none());
    // It serves again: it heartbeats, claims the run and finishes it.
    assert!(
        a.heartbeat(std::time::Duration::from_secs(5))
            .await
            .unwrap()
    );
    let claimed = a.claim(1, chrono::Utc::now()).await.unwrap().runs;
    assert_eq!(claimed[0].attempts.len(), 2);
    let nodes = a.nodes().await.unwrap();
    let me = nodes.iter().find(|n| n.id == "fenced").unwrap();
    assert_eq!(me.incarnation, a.node().incarnation);
    assert!(me.gone_at.is_none());
    assert_eq!(me.running, 1);
}

/// Taken over while fenced: the attempts the cluster closed say, once the
/// node rejoins, that it fenced itself; a node declared dead claims nothing
/// until it rejoins; another process that took the id meanwhile keeps it.
#[tokio::test]
async fn what_the_cluster_took_over_says_the_node_fenced_itself() {
    let pg = Postgres::fresh().await;
    let a = pg
        .connect(NodeId::new("lost").with_timeout(std::time::Duration::from_secs(1)))
        .await;
    let b = pg.connect(NodeId::new("b")).await;
    a.join().await.unwrap();
    b.join().await.unwrap();
    let run = b.create_run(new_root("t")).await.unwrap().run;
    assert_eq!(a.claim(1, chrono::Utc::now()).await.unwrap().runs.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(b.rescue().await.unwrap(), vec![run.id.clone()]);
    let generic = b.get_run(&run.id).await.unwrap().unwrap();
    assert!(
        generic.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("fell silent")
    );
    // Declared dead: no claim until it rejoins.
    assert!(
        a.claim(1, chrono::Utc::now())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    assert!(
        !a.heartbeat(std::time::Duration::from_secs(5))
            .await
            .unwrap()
    );
    let note = "interrupted: node lost fenced itself";
    assert!(
        a.rejoin(note).await.unwrap().is_empty(),
        "nothing left to close"
    );
    let told = b.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(told.attempts[0].error.as_deref(), Some(note));
    assert_eq!(a.claim(1, chrono::Utc::now()).await.unwrap().runs.len(), 1);

    // A twin took the id while this one was away: the rejoin is refused.
    let twin_old = pg.connect(NodeId::new("twin")).await;
    twin_old.join().await.unwrap();
    twin_old.leave().await.unwrap();
    let twin_new = pg.connect(NodeId::new("twin")).await;
    twin_new.join().await.unwrap();
    let err = twin_old.rejoin("note").await.unwrap_err();
    assert!(matches!(err, StoreError::NodeAlive { .. }), "{err:?}");
}
