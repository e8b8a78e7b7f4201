//! The node's part in the cluster, all by the database's clock: joining
//! (refused while another process runs as this node), heartbeats on a
//! connection of their own, taking over silent nodes' attempts, rejoining
//! after a fence under a new incarnation, leaving, and the list of nodes.

use super::listen::listen;
use super::*;

impl PgStore {
    pub(super) async fn node_join(&self) -> Result<()> {
        let node = self.current();
        let pid = std::process::id() as i32;
        self.tx(move |conn| {
            let node = node.clone();
            Box::pin(async move {
                // Taken when free: never seen, gone, silent past its own
                // timeout, or this very incarnation.
                let joined = sqlx::query(
                    "INSERT INTO nodes (id, incarnation, host, pid, started_at, heartbeat_at, gone_at, timeout_ms)
                     VALUES ($1, $2, $3, $4, now(), now(), NULL, $5)
                     ON CONFLICT (id) DO UPDATE SET incarnation = EXCLUDED.incarnation, host = EXCLUDED.host,
                         pid = EXCLUDED.pid, started_at = now(), heartbeat_at = now(), gone_at = NULL,
                         timeout_ms = EXCLUDED.timeout_ms
                     WHERE nodes.gone_at IS NOT NULL OR nodes.heartbeat_at < now() - {SILENT}
                        OR nodes.incarnation = EXCLUDED.incarnation"
                        .replace("{SILENT}", &silence("nodes"))
                        .as_str(),
                )
                .bind(&node.id)
                .bind(&node.incarnation)
                .bind(&node.host)
                .bind(pid)
                .bind(timeout_ms(&node))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if joined == 1 {
                    return Ok(());
                }
                let row = sqlx::query(
                    "SELECT host, pid, extract(epoch FROM now() - heartbeat_at)::bigint AS ago FROM nodes WHERE id = $1",
                )
                .bind(&node.id)
                .fetch_one(&mut *conn)
                .await?;
                let (host, holder, ago): (String, i32, i64) =
                    (row.try_get("host")?, row.try_get("pid")?, row.try_get("ago")?);
                // The same id on this machine, by a process that is gone (a
                // crash just now): this is its restart.
                if host == node.host && !process_exists(holder) {
                    sqlx::query(
                        "UPDATE nodes SET incarnation = $2, pid = $3, started_at = now(), heartbeat_at = now(), gone_at = NULL,
                             timeout_ms = $4
                         WHERE id = $1",
                    )
                    .bind(&node.id)
                    .bind(&node.incarnation)
                    .bind(pid)
                    .bind(timeout_ms(&node))
                    .execute(&mut *conn)
                    .await?;
                    return Ok(());
                }
                Err(StoreError::NodeAlive { node: node.id.clone(), host, seconds_ago: ago }.into())
            })
        })
        .await
    }

    /// One statement on the heartbeat's own connection (made anew when
    /// there is none), all within `within`: a connection that took too
    /// long is closed with the call, never used again.
    pub(super) async fn node_heartbeat(&self, within: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + within;
        let node = self.current();
        let unavailable = |detail: String| StoreError::Unavailable {
            location: self.location.to_string(),
            detail,
        };
        let Ok(mut slot) = tokio::time::timeout_at(deadline, self.heartbeat.lock()).await else {
            return Err(unavailable(format!(
                "the last heartbeat is still waiting for an answer after {within:?}"
            )));
        };
        // Taken out: if this call ends before the answer, the connection
        // goes with it.
        let held = slot.take();
        let options = &self.heartbeat_options;
        let beat = async move {
            let mut conn = match held {
                Some(conn) => conn,
                None => <PgConnection as sqlx::Connection>::connect_with(options).await?,
            };
            let n = sqlx::query(
                "UPDATE nodes SET heartbeat_at = now() WHERE id = $1 AND incarnation = $2 AND gone_at IS NULL",
            )
            .bind(&node.id)
            .bind(&node.incarnation)
            .execute(&mut conn)
            .await?
            .rows_affected();
            Ok::<_, sqlx::Error>((conn, n == 1))
        };
        match tokio::time::timeout_at(deadline, beat).await {
            Ok(Ok((conn, alive))) => {
                *slot = Some(conn);
                Ok(alive)
            }
            Ok(Err(e)) => Err(classify(e, &self.location)),
            Err(_) => Err(unavailable(format!(
                "the heartbeat had no answer within {within:?}"
            ))),
        }
    }

    pub(super) async fn node_rescue(&self) -> Result<Vec<String>> {
        let channel = self.channel.clone();
        self.tx(move |conn| {
            let channel = channel.clone();
            Box::pin(async move {
                sqlx::query(&format!(
                    "UPDATE nodes SET gone_at = now() WHERE gone_at IS NULL AND heartbeat_at < now() - {}",
                    silence("nodes")
                ))
                .execute(&mut *conn)
                .await?;
                interrupt(conn, Holders::Orphaned, &channel).await
            })
        })
        .await
    }

    pub(super) async fn node_rejoin(&self, note: &str) -> Result<Vec<String>> {
        let old = self.current();
        let fresh = NodeId {
            incarnation: NodeId::new_incarnation(),
            ..old.clone()
        };
        let pid = std::process::id() as i32;
        let (channel, note) = (self.channel.clone(), note.to_string());
        let (o, f) = (old.clone(), fresh.clone());
        let runs = self
            .tx(move |conn| {
                let (old, fresh, channel, note) = (o.clone(), f.clone(), channel.clone(), note.clone());
                Box::pin(async move {
                    // The id is still this node's: its old incarnation's,
                    // declared dead, or silent past its timeout (not taken
                    // by another process meanwhile).
                    let taken = sqlx::query(&format!(
                        "UPDATE nodes SET incarnation = $2, pid = $3, heartbeat_at = now(), gone_at = NULL, timeout_ms = $4
                         WHERE id = $1 AND (incarnation = $5 OR gone_at IS NOT NULL OR heartbeat_at < now() - {})",
                        silence("nodes")
                    ))
                    .bind(&fresh.id)
                    .bind(&fresh.incarnation)
                    .bind(pid)
                    .bind(timeout_ms(&fresh))
                    .bind(&old.incarnation)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if taken == 0 {
                        let row = sqlx::query(
                            "SELECT host, extract(epoch FROM now() - heartbeat_at)::bigint AS ago FROM nodes WHERE id = $1",
                        )
                        .bind(&old.id)
                        .fetch_one(&mut *conn)
                        .await?;
                        return Err(StoreError::NodeAlive {
                            node: old.id.clone(),
                            host: row.try_get("host")?,
                            seconds_ago: row.try_get("ago")?,
                        }
                        .into());
                    }
                    let ids =
                        interrupt(conn, Holders::Incarnation(&old.id, &old.incarnation), &channel).await?;
                    // What happened, on every attempt the old incarnation
                    // lost: those closed just now and those the cluster
                    // took over while it was fenced.
                    sqlx::query(
                        "UPDATE attempts SET error = $3
                         WHERE node_id = $1 AND node_incarnation = $2 AND interrupted",
                    )
                    .bind(&old.id)
                    .bind(&old.incarnation)
                    .bind(&note)
                    .execute(&mut *conn)
                    .await?;
                    Ok(ids)
                })
            })
            .await?;
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        // The connection that hears other nodes may be one the outage left
        // hanging: a new one, which starts with a resync.
        let listener = tokio::spawn(listen(
            self.pool.clone(),
            self.channel.to_string(),
            self.node.clone(),
            self.events.clone(),
        ));
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) =
            AbortOnDrop(listener.abort_handle());
        Ok(runs)
    }

    pub(super) async fn node_leave(&self) -> Result<()> {
        let node = self.current();
        self.tx(move |conn| {
            let node = node.clone();
            Box::pin(async move {
                sqlx::query("UPDATE nodes SET gone_at = now() WHERE id = $1 AND incarnation = $2")
                    .bind(&node.id)
                    .bind(&node.incarnation)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub(super) async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.tx(|conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT n.id, n.host, n.incarnation, n.started_at, n.heartbeat_at, n.gone_at,
                            (SELECT count(*) FROM attempts a WHERE a.node_id = n.id AND a.node_incarnation = n.incarnation
                               AND a.status = 'running') AS running
                     FROM nodes n ORDER BY n.gone_at IS NOT NULL, n.id",
                )
                .fetch_all(&mut *conn)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(NodeRecord {
                            id: r.try_get("id")?,
                            host: r.try_get("host")?,
                            incarnation: r.try_get("incarnation")?,
                            started_at: r.try_get("started_at")?,
                            heartbeat_at: r.try_get("heartbeat_at")?,
                            gone_at: r.try_get("gone_at")?,
                            running: r.try_get::<i64, _>("running")? as u32,
                        })
                    })
                    .collect()
            })
        })
        .await
    }
}

/// The interval after which the node of this row (`table` names it) is
/// silent: its own timeout, or the default for a node of an older weft.
pub(super) fn silence(table: &str) -> String {
    format!(
        "make_interval(secs => coalesce({table}.timeout_ms, {}) / 1000.0)",
        NodeId::DEFAULT_TIMEOUT.as_millis()
    )
}

/// A node's timeout as stored.
pub(super) fn timeout_ms(node: &NodeId) -> i32 {
    node.timeout.as_millis().min(i32::MAX as u128) as i32
}
