//! The app's tasks: registered by running the start command in register
//! mode, again when a run names a task the registry does not know (the
//! app changed), and checked (names, options Render's cloud refuses).

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use weft_protocol::socket::TaskDefinition;
use weft_store::TaskRecord;

use super::Coordinator;
use crate::{RunError, RuntimeError};

/// A registration this recent is not repeated for a task it did not list.
const REREGISTER_AFTER: Duration = Duration::from_secs(2);

impl Coordinator {
    /// Runs the start command in register mode and records its tasks.
    pub(crate) async fn register_tasks(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let mut last = self.registering.lock().await;
        let tasks = self.register_tasks_now().await;
        *last = Some(tokio::time::Instant::now());
        tasks
    }

    /// A task the registry does not know was asked for: the app may have
    /// new tasks since its last registration (its code changed), so it is
    /// registered again, once, before the answer is "not found". Chosen
    /// over watching the start command's files: it costs nothing until a
    /// task is missing, sees every way an app can change (a rebuild, an
    /// edit, a new version installed), and a typo still answers 404 at
    /// once, since a registration finished in the last few seconds is not
    /// repeated.
    pub(super) async fn find_or_register(&self, name: &str) -> Result<TaskRecord, RunError> {
        if let Some(task) = self.task(name) {
            return Ok(task);
        }
        {
            let mut last = self.registering.lock().await;
            let recent = last.is_some_and(|t| t.elapsed() < REREGISTER_AFTER);
            if !recent && self.task(name).is_none() {
                tracing::info!(
                    "task {name:?} is not registered: registering the app's tasks again"
                );
                if let Err(e) = self.register_tasks_now().await {
                    tracing::warn!("could not register the tasks again: {e}");
                }
                *last = Some(tokio::time::Instant::now());
            }
        }
        self.task(name)
            .ok_or_else(|| RunError::UnknownTask(name.to_string()))
    }

    /// Registers, the caller holding the registration lock.
    pub(super) async fn register_tasks_now(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let defs = self.runner.register(&self.config).await?;
        validate_definitions(&defs)?;
        for warning in cloud_warnings(&defs) {
            tracing::warn!("{warning}");
        }
        if let Some(budget) = self.config.memory {
            for def in &defs {
                let plan = def.options.as_ref().and_then(|o| o.plan.as_deref());
                if let Ok(plan) = weft_protocol::plan::Plan::of(plan)
                    && plan.memory_bytes > budget
                {
                    tracing::warn!(
                        "task {:?} is on plan {} ({}), larger than --memory ({}): its runs start alone",
                        def.name,
                        plan.name,
                        weft_protocol::plan::megabytes_text(plan.memory_bytes),
                        weft_protocol::plan::megabytes_text(budget)
                    );
                }
            }
        }
        let tasks = self.store.register_tasks(&defs, Utc::now()).await?;
        let names: Vec<_> = tasks
            .iter()
            .filter(|t| t.registered)
            .map(|t| t.name.as_str())
            .collect();
        tracing::info!("registered {} tasks: {}", names.len(), names.join(", "));
        *self.tasks.write().unwrap_or_else(|p| p.into_inner()) =
            tasks.iter().map(|t| (t.name.clone(), t.clone())).collect();
        Ok(tasks)
    }

    /// The registered task of this name or slug.
    pub fn task(&self, name_or_slug: &str) -> Option<TaskRecord> {
        let tasks = self.tasks.read().unwrap_or_else(|p| p.into_inner());
        let name = weft_protocol::api::task_name_from_slug(name_or_slug);
        tasks
            .get(name)
            .or_else(|| tasks.values().find(|t| t.id == name_or_slug))
            .filter(|t| t.registered)
            .cloned()
    }

    /// Registered tasks, by name.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        let tasks = self.tasks.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = tasks.values().filter(|t| t.registered).cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Task options Render's cloud refuses: weft runs them (local dev may want
/// a short timeout), but says so, naming the task and the range.
pub(super) fn cloud_warnings(defs: &[TaskDefinition]) -> Vec<String> {
    const TIMEOUT: std::ops::RangeInclusive<i64> = 30..=86_400;
    let mut warnings = Vec::new();
    for def in defs {
        let Some(options) = &def.options else {
            continue;
        };
        if let Some(t) = options.timeout_seconds
            && !TIMEOUT.contains(&t)
        {
            warnings.push(format!(
                "task {:?} has timeout_seconds {t}: Render's cloud takes {} to {} seconds{}",
                def.name,
                TIMEOUT.start(),
                TIMEOUT.end(),
                if t <= 0 {
                    " (weft runs it with no timeout)"
                } else {
                    " (weft enforces it as given)"
                }
            ));
        }
        if let Some(name) = options.plan.as_deref()
            && weft_protocol::plan::Plan::named(name).is_none()
        {
            warnings.push(format!(
                "task {:?} has plan {name:?}, which is not one of Render's plans ({}): weft holds it to the default plan, {}",
                def.name,
                weft_protocol::plan::plan_names(),
                weft_protocol::plan::DEFAULT_PLAN,
            ));
        }
        if let Some(n) = options.retry.as_ref().and_then(|r| r.max_retries)
            && n < 0
        {
            warnings.push(format!(
                "task {:?} has max_retries {n}: retries cannot be negative (weft runs it with none)",
                def.name
            ));
        }
    }
    warnings
}

pub(super) fn validate_definitions(defs: &[TaskDefinition]) -> Result<(), RuntimeError> {
    let mut seen = HashSet::new();
    for def in defs {
        if def.name.trim().is_empty() {
            return Err(RuntimeError::Registration(
                "a task was registered with an empty name".into(),
            ));
        }
        if def.name.contains('/') {
            return Err(RuntimeError::Registration(format!(
                "task name {:?} may not contain '/'",
                def.name
            )));
        }
        if !seen.insert(def.name.as_str()) {
            return Err(RuntimeError::Registration(format!(
                "task {:?} was registered twice",
                def.name
            )));
        }
    }
    Ok(())
}
