//! Render's instance plans: the CPU and memory a task's `plan` option
//! gives each of its runs on Render Workflows, so that a local runtime can
//! hold an attempt to what the same task would get when deployed.
//!
//! The figures are Render's published instance types: `starter` 0.5 CPU /
//! 512 MB, `standard` (the default) 1 CPU / 2 GB, `pro` 2 CPU / 4 GB, and on
//! request `pro_plus` 4 CPU / 8 GB, `pro_max` 4 CPU / 16 GB, `pro_ultra`
//! 8 CPU / 32 GB. Megabytes here are Render's: MiB.

/// What a plan gives one task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The plan's name, as a task's options spell it.
    pub name: &'static str,
    /// Thousandths of a CPU.
    pub cpu_millis: u32,
    /// Memory, in bytes; swap is none.
    pub memory_bytes: u64,
}

const MIB: u64 = 1024 * 1024;

/// Every plan, smallest first.
pub const PLANS: [Plan; 6] = [
    Plan::new("starter", 500, 512),
    Plan::new("standard", 1000, 2048),
    Plan::new("pro", 2000, 4096),
    Plan::new("pro_plus", 4000, 8192),
    Plan::new("pro_max", 4000, 16384),
    Plan::new("pro_ultra", 8000, 32768),
];

/// The plan of a task whose options name none.
pub const DEFAULT_PLAN: &str = "standard";

impl Plan {
    const fn new(name: &'static str, cpu_millis: u32, memory_mib: u64) -> Self {
        Self {
            name,
            cpu_millis,
            memory_bytes: memory_mib * MIB,
        }
    }

    /// The plan of this name (`pro-plus` and any case are taken too).
    pub fn named(name: &str) -> Option<Plan> {
        let wanted = name.trim().to_ascii_lowercase().replace('-', "_");
        PLANS.iter().copied().find(|p| p.name == wanted)
    }

    /// The plan a task's `plan` option gives: the named one, or the default
    /// when it names none. `Err` carries a name that is no plan.
    pub fn of(option: Option<&str>) -> Result<Plan, String> {
        match option {
            None => Ok(Plan::default()),
            Some(name) => Plan::named(name).ok_or_else(|| name.to_string()),
        }
    }

    /// The memory as people write it: `512 MB`, `2 GB`.
    pub fn memory_text(&self) -> String {
        megabytes_text(self.memory_bytes)
    }

    /// The CPUs as people write them: `0.5 CPU`, `2 CPU`.
    pub fn cpu_text(&self) -> String {
        let cpus = self.cpu_millis as f64 / 1000.0;
        format!("{cpus} CPU")
    }
}

impl Default for Plan {
    /// [`DEFAULT_PLAN`]: what a task that names no plan gets.
    fn default() -> Self {
        Plan::named(DEFAULT_PLAN).expect("the default plan is one of PLANS")
    }
}

/// Bytes in Render's units: whole GB from 1 GB up, else MB.
pub fn megabytes_text(bytes: u64) -> String {
    let mib = bytes as f64 / MIB as f64;
    if mib >= 1024.0 && (mib / 1024.0).fract() == 0.0 {
        format!("{} GB", mib / 1024.0)
    } else {
        format!("{} MB", mib.round())
    }
}

/// The plan names, for messages: `starter, standard, pro, ...`.
pub fn plan_names() -> String {
    PLANS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_found_by_name_and_the_default_is_standard() {
        let starter = Plan::named("starter").unwrap();
        assert_eq!((starter.cpu_millis, starter.memory_bytes), (500, 512 * MIB));
        assert_eq!(Plan::named("Pro-Plus").unwrap().name, "pro_plus");
        assert_eq!(Plan::of(None).unwrap().name, "standard");
        assert_eq!(Plan::of(Some("huge")), Err("huge".to_string()));
        assert_eq!(starter.memory_text(), "512 MB");
        assert_eq!(starter.cpu_text(), "0.5 CPU");
        assert_eq!(Plan::named("pro").unwrap().memory_text(), "4 GB");
        assert_eq!(megabytes_text(800 * MIB + 1000), "800 MB");
    }
}
