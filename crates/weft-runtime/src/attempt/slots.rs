//! Which attempts this node runs, and how many of them hold a slot of
//! `--max-concurrent`.
//!
//! A parent waiting on children holds no slot: otherwise parents holding
//! every slot would wait forever on children that cannot start. So an
//! attempt counts while it has no children that have not ended. An
//! attempt that has reported its outcome holds no slot either: its task is
//! done, and its process only exits (within `exit_grace`, or it is
//! killed), so the next attempt need not wait for the exit.
//!
//! A run's retry can start while its previous attempt's process is still
//! exiting; the old attempt then waits aside until its process is gone,
//! and the run's entry is the new attempt's. Everything here can be
//! rebuilt from the store; it is the node's own bookkeeping, not shared
//! with other nodes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::attempt::Attempt;

/// One node's attempts.
#[derive(Default)]
pub struct Slots {
    /// Each run's current attempt here.
    active: HashMap<String, Active>,
    /// Earlier attempts of runs that have a newer one here, until their
    /// processes are gone (they hold no slot).
    superseded: Vec<Arc<Attempt>>,
    /// Attempts that count against the limit.
    counted: usize,
    /// No new attempts: the node is draining or stopping.
    closed: bool,
    /// No new attempts until the node has rejoined: it fenced itself.
    fenced: bool,
}

struct Active {
    attempt: Arc<Attempt>,
    /// The memory its plan gives it, held while it counts.
    memory: u64,
    /// Children of this run that have not ended.
    open_children: u32,
    /// Its outcome is reported; its process may still be exiting.
    reported: bool,
}

impl Active {
    fn counts(&self) -> bool {
        self.open_children == 0 && !self.reported
    }
}

impl Slots {
    /// Free slots under `max`; none once closed, or while fenced.
    pub fn free(&self, max: usize) -> usize {
        if self.closed || self.fenced {
            0
        } else {
            max.saturating_sub(self.counted)
        }
    }

    /// No new attempts from now on.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// No new attempts until [`Slots::unfence`]: the node fenced itself.
    pub fn fence(&mut self) {
        self.fenced = true;
    }

    /// The node rejoined: attempts start again.
    pub fn unfence(&mut self) {
        self.fenced = false;
    }

    /// An attempt starts here, holding `memory` (its plan's) while it
    /// counts: until it has open children or reports. `false`, and nothing
    /// changes, while the node is fenced.
    pub fn start(&mut self, attempt: Arc<Attempt>, memory: u64) -> bool {
        if self.fenced {
            return false;
        }
        let id = attempt.run.id.clone();
        let new = Active {
            attempt,
            memory,
            open_children: 0,
            reported: false,
        };
        if let Some(old) = self.active.insert(id, new) {
            if old.counts() {
                self.counted -= 1;
            }
            self.superseded.push(old.attempt);
        }
        self.counted += 1;
        true
    }

    /// Attempt `number` of `run_id` reported its outcome: it holds no slot
    /// while its process exits.
    pub fn reported(&mut self, run_id: &str, number: u32) {
        let Some(active) = self.active.get_mut(run_id) else {
            return;
        };
        if active.attempt.number != number || active.reported {
            return;
        }
        if active.counts() {
            self.counted -= 1;
        }
        active.reported = true;
    }

    /// Attempt `number` of `run_id` is over here: its process is gone.
    pub fn finish(&mut self, run_id: &str, number: u32) {
        let current = self
            .active
            .get(run_id)
            .is_some_and(|a| a.attempt.number == number);
        if current {
            if let Some(active) = self.active.remove(run_id)
                && active.counts()
            {
                self.counted -= 1;
            }
        } else {
            self.superseded
                .retain(|a| !(a.run.id == run_id && a.number == number));
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

    /// The current attempt of `run_id` here, if any.
    pub fn get(&self, run_id: &str) -> Option<&Arc<Attempt>> {
        self.active.get(run_id).map(|a| &a.attempt)
    }

    /// Every attempt whose process is alive here, superseded ones too.
    pub fn attempts(&self) -> Vec<Arc<Attempt>> {
        self.active
            .values()
            .map(|a| a.attempt.clone())
            .chain(self.superseded.iter().cloned())
            .collect()
    }

    /// Runs with an attempt here.
    pub fn run_ids(&self) -> Vec<String> {
        self.active.keys().cloned().collect()
    }

    /// Attempts whose processes are alive here.
    pub fn len(&self) -> usize {
        self.active.len() + self.superseded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attempts holding a slot.
    pub fn counted(&self) -> usize {
        self.counted
    }

    /// The memory held by the attempts holding a slot (summed when asked:
    /// once per claim, over this node's attempts).
    pub fn memory_held(&self) -> u64 {
        self.active
            .values()
            .filter(|a| a.counts())
            .map(|a| a.memory)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str) -> Arc<Attempt> {
        attempt_number(id, 1)
    }

    fn attempt_number(id: &str, number: u32) -> Arc<Attempt> {
        Arc::new(crate::attempt::running(id, number))
    }

    #[test]
    fn memory_is_held_while_an_attempt_counts() {
        let mut slots = Slots::default();
        slots.start(attempt("p"), 4);
        slots.start(attempt("q"), 2);
        assert_eq!(slots.memory_held(), 6);
        slots.child_changed("p", 1);
        assert_eq!(
            slots.memory_held(),
            2,
            "a parent waiting on a child holds none"
        );
        slots.reported("q", 1);
        assert_eq!(slots.memory_held(), 0, "nor does an attempt that reported");
        slots.child_changed("p", -1);
        assert_eq!(slots.memory_held(), 4);
        slots.finish("p", 1);
        assert_eq!(slots.memory_held(), 0);
    }

    #[test]
    fn a_parent_with_open_children_holds_no_slot() {
        let mut slots = Slots::default();
        slots.start(attempt("p"), 0);
        slots.start(attempt("q"), 0);
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
        slots.finish("q", 1);
        assert_eq!((slots.len(), slots.counted()), (1, 1));
        slots.finish("p", 1);
        assert_eq!((slots.len(), slots.counted(), slots.free(2)), (0, 0, 2));
        slots.child_changed("gone", -1);
        slots.finish("gone", 1);
        assert_eq!(slots.counted(), 0, "unknown runs change nothing");
        slots.close();
        assert_eq!(slots.free(2), 0);
    }

    #[test]
    fn a_fenced_node_starts_nothing_until_it_rejoins() {
        let mut slots = Slots::default();
        assert!(slots.start(attempt("p"), 0));
        slots.fence();
        assert_eq!(slots.free(4), 0);
        assert!(!slots.start(attempt("q"), 0), "refused while fenced");
        assert_eq!(slots.attempts().len(), 1, "only p is there to kill");
        slots.finish("p", 1);
        slots.unfence();
        assert_eq!(slots.free(4), 4);
        assert!(slots.start(attempt("q"), 0));
    }

    #[test]
    fn a_reported_attempt_holds_no_slot_while_it_exits() {
        let mut slots = Slots::default();
        slots.start(attempt("p"), 0);
        slots.start(attempt("q"), 0);
        assert_eq!(slots.free(2), 0);
        slots.reported("p", 2);
        assert_eq!(slots.free(2), 0, "another attempt's report changes nothing");
        slots.reported("p", 1);
        slots.reported("p", 1);
        assert_eq!((slots.free(2), slots.len()), (1, 2), "p exits slot-free");
        slots.child_changed("p", 1);
        slots.child_changed("p", -1);
        assert_eq!(slots.free(2), 1, "its children do not give it a slot back");
        slots.finish("p", 1);
        assert_eq!((slots.free(2), slots.len()), (1, 1));
        slots.child_changed("q", 1);
        slots.reported("q", 1);
        slots.child_changed("q", -1);
        assert_eq!(
            slots.free(2),
            2,
            "a waiting parent that reports stays uncounted"
        );
    }

    #[test]
    fn a_retry_overlapping_its_exiting_predecessor_keeps_its_place() {
        let mut slots = Slots::default();
        let first = attempt_number("r", 1);
        slots.start(first.clone(), 0);
        slots.reported("r", 1);
        let retry = attempt_number("r", 2);
        slots.start(retry.clone(), 0);
        assert_eq!((slots.counted(), slots.len()), (1, 2));
        // The first attempt's process is gone only now.
        slots.finish("r", 1);
        assert!(
            slots.get("r").is_some_and(|a| Arc::ptr_eq(a, &retry)),
            "the retry is still the run's attempt here"
        );
        assert_eq!((slots.counted(), slots.len()), (1, 1));
        slots.finish("r", 2);
        assert_eq!((slots.counted(), slots.len()), (0, 0));

        // Superseded before it reported (the runtime's report comes after
        // the process is gone): it stops counting at once.
        slots.start(attempt_number("s", 1), 0);
        slots.start(attempt_number("s", 2), 0);
        assert_eq!((slots.counted(), slots.len()), (1, 2));
        assert_eq!(slots.attempts().len(), 2, "both are killed on stop");
        slots.finish("s", 1);
        slots.finish("s", 2);
        assert!(slots.is_empty());
    }
}
