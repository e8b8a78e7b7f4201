//! The data contract's vocabulary: the four sources, their columns, the enum
//! fields, the reject reasons and the `as_of` window.

use crate::calendar::{Date, SECONDS_PER_DAY};
use serde::{Deserialize, Serialize};

/// The default `as_of` date of a run.
pub const DEFAULT_AS_OF: &str = "2026-10-01";

/// One of the four input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `crm.csv`: one customer (master data) per row.
    Crm,
    /// `billing.csv`: one invoice per row.
    Billing,
    /// `product.csv`: one product usage event per row.
    Product,
    /// `support.csv`: one support ticket per row.
    Support,
}

impl Source {
    /// All sources, in the contract's order (which is also the order of `sources` and of rejects).
    pub const ALL: [Source; 4] = [
        Source::Crm,
        Source::Billing,
        Source::Product,
        Source::Support,
    ];

    /// The name used in rejects, manifests and `sources`: `crm`, `billing`, ...
    pub fn name(self) -> &'static str {
        match self {
            Source::Crm => "crm",
            Source::Billing => "billing",
            Source::Product => "product",
            Source::Support => "support",
        }
    }

    /// The input file name, e.g. `crm.csv`.
    pub fn file_name(self) -> &'static str {
        match self {
            Source::Crm => "crm.csv",
            Source::Billing => "billing.csv",
            Source::Product => "product.csv",
            Source::Support => "support.csv",
        }
    }

    /// The required columns, in the contract's order (the order in which fields are validated).
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Source::Crm => &[
                "customer_id",
                "name",
                "email",
                "company",
                "country",
                "segment",
                "signup_date",
            ],
            Source::Billing => &[
                "invoice_id",
                "customer_id",
                "issued_at",
                "amount",
                "status",
                "paid_at",
            ],
            Source::Product => &[
                "event_id",
                "customer_id",
                "occurred_at",
                "feature",
                "duration_s",
            ],
            Source::Support => &[
                "ticket_id",
                "customer_id",
                "opened_at",
                "closed_at",
                "priority",
                "csat",
            ],
        }
    }

    /// Position in [`Source::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The source at position `index` of [`Source::ALL`].
    pub fn from_index(index: usize) -> Option<Source> {
        Source::ALL.get(index).copied()
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of the rejects table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RejectRecord<'a> {
    /// The input file.
    pub source: Source,
    /// 1-based physical line of the row's first line.
    pub line: u64,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// Raw row text without line terminator.
    pub raw: std::borrow::Cow<'a, str>,
}

/// Why a row was rejected. The declaration order is the reason codes' order in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The row's field count differs from the header's.
    ColumnCount,
    /// `customer_id` is not `cust_` followed by 8 ASCII digits.
    BadCustomerId,
    /// A required field is empty (including an empty `customer_id`, and `paid_at` of a paid invoice).
    MissingField,
    /// A date field is not a valid `YYYY-MM-DD`.
    BadDate,
    /// A timestamp field is not valid RFC 3339.
    BadTimestamp,
    /// `amount` is not a non-negative decimal with at most 2 fraction digits.
    BadAmount,
    /// `segment`, `status` or `priority` is not one of its values.
    BadEnum,
    /// `duration_s` is not a non-negative integer.
    BadInteger,
    /// `csat` is not empty and not an integer 1 to 5.
    BadCsat,
    /// `closed_at` is earlier than `opened_at`.
    ClosedBeforeOpened,
    /// `paid_at` is earlier than `issued_at`.
    PaidBeforeIssued,
    /// An earlier accepted row of the same file has the same customer_id and record key.
    Duplicate,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::ColumnCount,
        RejectReason::BadCustomerId,
        RejectReason::MissingField,
        RejectReason::BadDate,
        RejectReason::BadTimestamp,
        RejectReason::BadAmount,
        RejectReason::BadEnum,
        RejectReason::BadInteger,
        RejectReason::BadCsat,
        RejectReason::ClosedBeforeOpened,
        RejectReason::PaidBeforeIssued,
        RejectReason::Duplicate,
    ];

    /// The reason code written to the rejects table.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::ColumnCount => "column_count",
            RejectReason::BadCustomerId => "bad_customer_id",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadDate => "bad_date",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::BadAmount => "bad_amount",
            RejectReason::BadEnum => "bad_enum",
            RejectReason::BadInteger => "bad_integer",
            RejectReason::BadCsat => "bad_csat",
            RejectReason::ClosedBeforeOpened => "closed_before_opened",
            RejectReason::PaidBeforeIssued => "paid_before_issued",
            RejectReason::Duplicate => "duplicate",
        }
    }

    /// Position in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason at position `index` of [`RejectReason::ALL`].
    pub fn from_index(index: usize) -> Option<RejectReason> {
        RejectReason::ALL.get(index).copied()
    }
}

/// Counts of rejects by reason, indexed by [`RejectReason::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasonCounts(pub [u64; 12]);

impl ReasonCounts {
    /// Counts one more reject for `reason`.
    pub fn add(&mut self, reason: RejectReason) {
        self.0[reason.index()] += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ReasonCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counts as `(code, count)`, in reason order.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, u64> {
        RejectReason::ALL
            .iter()
            .filter(|r| self.0[r.index()] > 0)
            .map(|r| (r.code().to_string(), self.0[r.index()]))
            .collect()
    }

    /// The inverse of [`ReasonCounts::to_map`]; unknown codes are ignored.
    pub fn from_map(map: &std::collections::BTreeMap<String, u64>) -> ReasonCounts {
        let mut counts = ReasonCounts::default();
        for reason in RejectReason::ALL {
            counts.0[reason.index()] = map.get(reason.code()).copied().unwrap_or(0);
        }
        counts
    }
}

impl Serialize for ReasonCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ReasonCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        Ok(ReasonCounts::from_map(&map))
    }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Parses the exact (case-sensitive) text of a value.
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The text of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value whose `as u8` is `code`.
            pub fn from_u8(code: u8) -> Option<$name> {
                Self::ALL.get(code as usize).copied()
            }
        }
    };
}

text_enum!(
    /// crm.csv `segment`.
    Segment { Smb = "smb", MidMarket = "mid_market", Enterprise = "enterprise" }
);
text_enum!(
    /// billing.csv `status`.
    Status { Paid = "paid", Open = "open", Overdue = "overdue", Refunded = "refunded" }
);
text_enum!(
    /// support.csv `priority`.
    Priority { Low = "low", Normal = "normal", High = "high", Urgent = "urgent" }
);

/// The 30-day activity window of a run, in seconds since the epoch (UTC):
/// `start <= t < end`, with `end = as_of + 1 day 00:00Z` and `start = end - 30 days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

impl Window {
    /// Number of days in the window.
    pub const DAYS: i64 = 30;

    /// The window of a run with this `as_of` date.
    pub fn for_as_of(as_of: Date) -> Window {
        let end = as_of.add_days(1).midnight_utc();
        Window {
            start: end - Self::DAYS * SECONDS_PER_DAY,
            end,
        }
    }

    /// Whether `t` lies in the window.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// The output format of the profile table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header row.
    #[default]
    Csv,
    /// Parquet with typed columns (see the README for the schema).
    Parquet,
}

impl Format {
    /// The file extension of profile files.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!(
                "unknown format `{other}` (expected csv or parquet)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_thirty_days_ending_after_as_of() {
        let w = Window::for_as_of(Date::parse("2026-10-01").unwrap());
        assert_eq!(
            crate::calendar::format_timestamp(w.start),
            "2026-09-02T00:00:00Z"
        );
        assert_eq!(
            crate::calendar::format_timestamp(w.end),
            "2026-10-02T00:00:00Z"
        );
        assert!(
            w.contains(w.start)
                && !w.contains(w.end)
                && w.contains(w.end - 1)
                && !w.contains(w.start - 1)
        );
    }

    #[test]
    fn reason_codes_are_the_contracts() {
        let codes: Vec<_> = RejectReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), 12);
        assert!(
            RejectReason::ALL
                .iter()
                .enumerate()
                .all(|(i, r)| r.index() == i)
        );
        assert_eq!(Status::parse("paid"), Some(Status::Paid));
        assert_eq!(Status::parse("Paid"), None);
        assert_eq!(
            Segment::from_u8(Segment::MidMarket as u8),
            Some(Segment::MidMarket)
        );
    }
}
