//! The PostgreSQL schema: its versions, applied by sqlx's migrator.

use super::*;

/// The schema's history, applied by sqlx's migrator (which records each
/// version in `_sqlx_migrations` and refuses a database with versions it
/// does not know).
pub(super) fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let steps = [
        (
            1,
            "schema",
            include_str!("../../migrations/postgres/0001_schema.sql"),
        ),
        (
            2,
            "roots",
            include_str!("../../migrations/postgres/0002_roots.sql"),
        ),
        (
            3,
            "pending_due",
            include_str!("../../migrations/postgres/0003_pending_due.sql"),
        ),
        (
            4,
            "node_timeout",
            include_str!("../../migrations/postgres/0004_node_timeout.sql"),
        ),
        (
            5,
            "sessions",
            include_str!("../../migrations/postgres/0005_sessions.sql"),
        ),
        (
            6,
            "attempt_usage",
            include_str!("../../migrations/postgres/0006_attempt_usage.sql"),
        ),
        (
            7,
            "task_version",
            include_str!("../../migrations/postgres/0007_task_version.sql"),
        ),
        (
            8,
            "trace_parent",
            include_str!("../../migrations/postgres/0008_trace_parent.sql"),
        ),
    ];
    Migrator {
        migrations: Cow::Owned(
            steps
                .into_iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        version,
                        name.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

pub(super) async fn migrate(pool: &PgPool, location: &str) -> Result<()> {
    let migrator = migrator();
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::VersionMissing(found)) => Err(StoreError::SchemaTooNew {
            location: location.to_string(),
            found,
            known: migrator.migrations.len() as i64,
        }),
        Err(sqlx::migrate::MigrateError::Execute(e)) => Err(classify(e, location)),
        Err(e) => Err(StoreError::Open {
            location: location.to_string(),
            detail: format!("could not bring the schema up to date: {e}"),
        }),
    }
}
