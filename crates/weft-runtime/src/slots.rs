//! Which attempts this node runs, and how many of them hold a slot of
//! `--max-concurrent`.
//!
//! A parent waiting on children holds no slot: otherwise parents holding
//! every slot would wait forever on children that cannot start. So an
//! attempt counts while it has no children that have not ended.
//! Everything here can be rebuilt from the store; it is the node's own
//! bookkeeping, not shared with other nodes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::attempt::Attempt;

/// One node's attempts.
#[derive(Default)]
pub struct Slots {
    active: HashMap<String, Active>,
    /// Attempts that count against the limit.
    counted: usize,
    /// No new attempts: the node is draining or stopping.
    closed: bool,
}

struct Active {
    attempt: Arc<Attempt>,
    /// Children of this run that have not ended.
    open_children: u32,
}

impl Active {
    fn counts(&self) -> bool {
        self.open_children == 0
    }
}

impl Slots {
    /// Free slots under `max`; none once closed.
    pub fn free(&self, max: usize) -> usize {
        if self.closed {
            0
        } else {
            max.saturating_sub(self.counted)
        }
    }

    /// No new attempts from now on.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// An attempt starts here (it counts until it has open children).
    pub fn start(&mut self, attempt: Arc<Attempt>) {
        let id = attempt.run.id.clone();
        if let Some(old) = self.active.insert(
            id,
            Active {
                attempt,
                open_children: 0,
            },
        ) && old.counts()
        {
            self.counted -= 1;
        }
        self.counted += 1;
    }

    /// The attempt of `run_id` is over here.
    pub fn finish(&mut self, run_id: &str) {
        if let Some(active) = self.active.remove(run_id)
            && active.counts()
        {
            self.counted -= 1;
        }
    }

    /// A child of `parent` was created (+1) or ended (-1).
    pub fn child_changed(&mut self, parent: &str, delta: i32) {
        if let Some(active) = self.active.get_mut(parent) {
            let open = (active.open_children as i64 + i64::from(delta)).max(0) as u32;
            self.set(parent, open);
        }
    }

    /// The open children of `parent`, as read from the store.
    pub fn set_open_children(&mut self, parent: &str, open: u32) {
        self.set(parent, open);
    }

    fn set(&mut self, parent: &str, open: u32) {
        let Some(active) = self.active.get_mut(parent) else {
            return;
        };
        let before = active.counts();
        active.open_children = open;
        match (before, active.counts()) {
            (true, false) => self.counted -= 1,
            (false, true) => self.counted += 1,
            _ => {}
        }
    }

    /// The attempt running `run_id` here, if any.
    pub fn get(&self, run_id: &str) -> Option<&Arc<Attempt>> {
        self.active.get(run_id).map(|a| &a.attempt)
    }

    /// Every attempt running here.
    pub fn attempts(&self) -> Vec<Arc<Attempt>> {
        self.active.values().map(|a| a.attempt.clone()).collect()
    }

    /// Runs with an attempt here.
    pub fn run_ids(&self) -> Vec<String> {
        self.active.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Attempts holding a slot.
    pub fn counted(&self) -> usize {
        self.counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use tokio_util::sync::CancellationToken;
    use weft_store::{RunRecord, RunState};

    fn attempt(id: &str) -> Arc<Attempt> {
        let now = Utc::now();
        Arc::new(Attempt::new(
            RunRecord {
                status: RunState::Running,
                started_at: Some(now),
                ..RunRecord::new(id, "t", serde_json::json!([]), now)
            },
            CancellationToken::new(),
        ))
    }

    #[test]
    fn a_parent_with_open_children_holds_no_slot() {
        let mut slots = Slots::default();
        slots.start(attempt("p"));
        slots.start(attempt("q"));
        assert_eq!(slots.free(2), 0);
        slots.child_changed("p", 1);
        slots.child_changed("p", 1);
        assert_eq!((slots.counted(), slots.free(2)), (1, 1));
        slots.child_changed("p", -1);
        assert_eq!(slots.free(2), 1, "one child still open");
        slots.child_changed("p", -1);
        assert_eq!(slots.free(2), 0, "all ended: p counts again");
        slots.set_open_children("q", 3);
        assert_eq!(slots.free(2), 1);
        slots.finish("q");
        assert_eq!((slots.len(), slots.counted()), (1, 1));
        slots.finish("p");
        assert_eq!((slots.len(), slots.counted(), slots.free(2)), (0, 0, 2));
        slots.child_changed("gone", -1);
        slots.finish("gone");
        assert_eq!(slots.counted(), 0, "unknown runs change nothing");
        slots.close();
        assert_eq!(slots.free(2), 0);
    }
}
