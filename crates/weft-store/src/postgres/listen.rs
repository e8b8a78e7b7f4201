//! Hearing the other nodes: one connection that `LISTEN`s, and the
//! notifications every node sends inside the transactions that change
//! something.

use super::*;

/// Hears the other nodes: one connection that `LISTEN`s, reconnecting when
/// it drops. Notifications sent while it was down are lost, so a
/// reconnect is told as [`StoreEvent::Resync`].
pub(super) async fn listen(
    pool: PgPool,
    channel: String,
    node: Arc<RwLock<NodeId>>,
    events: broadcast::Sender<StoreEvent>,
) {
    let me = || {
        let node = node.read().unwrap_or_else(|p| p.into_inner());
        format!("{} {}", node.id, node.incarnation)
    };
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot listen for other nodes' work: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!("cannot LISTEN {channel}: {e}; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let _ = events.send(StoreEvent::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(event) = parse_event(n.payload(), &me()) {
                        let _ = events.send(event);
                    }
                }
                // The connection was lost; the next call reconnects.
                Ok(None) => {
                    let _ = events.send(StoreEvent::Resync);
                }
                Err(e) => {
                    tracing::warn!("lost the connection that hears other nodes: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Payloads: `p` (work pending), `e <node> <incarnation> <run> <parent|->`
/// (a run ended), `c <node> <incarnation>` (runs canceled). A node's own
/// notifications are skipped: it knew first.
pub(super) fn parse_event(payload: &str, me: &str) -> Option<StoreEvent> {
    let mut words = payload.split(' ');
    match words.next()? {
        "p" => Some(StoreEvent::Pending),
        "e" => {
            let from = format!("{} {}", words.next()?, words.next()?);
            let run_id = words.next()?.to_string();
            let parent_id = words.next().filter(|p| *p != "-").map(str::to_string);
            (from != me).then_some(StoreEvent::Ended { run_id, parent_id })
        }
        "c" => {
            let from = format!("{} {}", words.next()?, words.next()?);
            (from != me).then_some(StoreEvent::Canceled)
        }
        _ => None,
    }
}

pub(super) async fn notify(conn: &mut PgConnection, channel: &str, payload: &str) -> TxResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
