//! One customer's profile, computed from its accepted, de-duplicated rows
//! exactly as the contract says (the shard step, [`crate::shard_step`],
//! gathers the rows and writes the results).

use crate::calendar::{Date, SECONDS_PER_DAY};
use crate::contract::{Source, Status, Window};
use crate::validate::{BillingRow, CrmRow, CustomerId, ProductRow, SupportRow};

/// A customer's health tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// score >= 80
    Champion,
    /// score >= 60
    Healthy,
    /// score >= 40
    AtRisk,
    /// below 40
    Churning,
}

impl Tier {
    /// The tier of a health score.
    pub fn of(score: u32) -> Tier {
        match score {
            80.. => Tier::Champion,
            60.. => Tier::Healthy,
            40.. => Tier::AtRisk,
            _ => Tier::Churning,
        }
    }

    /// The text written to the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Champion => "champion",
            Tier::Healthy => "healthy",
            Tier::AtRisk => "at_risk",
            Tier::Churning => "churning",
        }
    }
}

/// One enriched customer profile (borrowing its text from the shard's buffers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile<'a> {
    /// The customer.
    pub customer: CustomerId,
    /// The accepted crm.csv row, if any (`in_crm`).
    pub crm: Option<CrmRow<'a>>,
    /// Accepted invoices.
    pub invoice_count: u64,
    /// Invoices with status `paid`.
    pub paid_invoice_count: u64,
    /// Sum of `amount` over paid invoices, in cents.
    pub lifetime_value_cents: i128,
    /// Sum of `amount` over open and overdue invoices, in cents.
    pub outstanding_balance_cents: i128,
    /// Invoices with status `overdue`.
    pub overdue_invoice_count: u64,
    /// Latest `paid_at` over paid invoices.
    pub last_payment_at: Option<Date>,
    /// Accepted events.
    pub event_count: u64,
    /// Events in the 30-day window.
    pub events_30d: u64,
    /// Distinct UTC dates of the events in the window.
    pub active_days_30d: u32,
    /// The feature with the most events (ties: smallest by byte order).
    pub top_feature: Option<&'a str>,
    /// Latest `occurred_at`, seconds since the epoch.
    pub last_seen_at: Option<i64>,
    /// Accepted tickets.
    pub ticket_count: u64,
    /// Tickets without `closed_at`.
    pub open_ticket_count: u64,
    /// Mean csat in hundredths, rounded half up.
    pub avg_csat_hundredths: Option<i64>,
    /// Mean resolution time in tenths of hours, rounded half up.
    pub avg_resolution_tenths: Option<i128>,
    /// 0..=100.
    pub health_score: u32,
    /// Tier of `health_score`.
    pub tier: Tier,
    /// Whether the customer appears in each source, in [`Source::ALL`] order.
    pub sources: [bool; 4],
}

impl Profile<'_> {
    /// The `sources` column: the files the customer appears in, joined by `|`.
    pub fn sources_text(&self) -> String {
        let names: Vec<&str> = Source::ALL
            .iter()
            .filter(|s| self.sources[s.index()])
            .map(|s| s.name())
            .collect();
        names.join("|")
    }
}

/// Computes one profile from a customer's accepted, de-duplicated rows.
/// `features` is scratch space reused across calls.
pub fn build_profile<'a, 'r>(
    customer: CustomerId,
    crm: Option<CrmRow<'a>>,
    invoices: impl Iterator<Item = &'r BillingRow<'a>>,
    events: impl Iterator<Item = &'r ProductRow<'a>>,
    tickets: impl Iterator<Item = &'r SupportRow<'a>>,
    window: &Window,
    features: &mut Vec<&'a str>,
) -> Profile<'a>
where
    'a: 'r,
{
    let mut p = Profile {
        customer,
        sources: [crm.is_some(), false, false, false],
        crm,
        invoice_count: 0,
        paid_invoice_count: 0,
        lifetime_value_cents: 0,
        outstanding_balance_cents: 0,
        overdue_invoice_count: 0,
        last_payment_at: None,
        event_count: 0,
        events_30d: 0,
        active_days_30d: 0,
        top_feature: None,
        last_seen_at: None,
        ticket_count: 0,
        open_ticket_count: 0,
        avg_csat_hundredths: None,
        avg_resolution_tenths: None,
        health_score: 0,
        tier: Tier::Churning,
    };
    for inv in invoices {
        p.invoice_count += 1;
        match inv.status {
            Status::Paid => {
                p.paid_invoice_count += 1;
                p.lifetime_value_cents += inv.amount_cents as i128;
                p.last_payment_at = p.last_payment_at.max(inv.paid_at);
            }
            Status::Open => p.outstanding_balance_cents += inv.amount_cents as i128,
            Status::Overdue => {
                p.overdue_invoice_count += 1;
                p.outstanding_balance_cents += inv.amount_cents as i128;
            }
            Status::Refunded => {}
        }
    }
    features.clear();
    let mut active_days = 0u32; // bit d: an event on day d of the window
    for ev in events {
        p.event_count += 1;
        if window.contains(ev.occurred_at) {
            p.events_30d += 1;
            active_days |= 1 << ((ev.occurred_at - window.start) / SECONDS_PER_DAY);
        }
        p.last_seen_at = p.last_seen_at.max(Some(ev.occurred_at));
        features.push(ev.feature);
    }
    p.active_days_30d = active_days.count_ones();
    p.top_feature = top_feature(features);
    let (mut csat_sum, mut csat_n) = (0i64, 0i64);
    let (mut resolution_seconds, mut closed_n) = (0i128, 0i128);
    for t in tickets {
        p.ticket_count += 1;
        match t.closed_at {
            None => p.open_ticket_count += 1,
            Some(closed) => {
                resolution_seconds += (closed - t.opened_at) as i128;
                closed_n += 1;
            }
        }
        if let Some(csat) = t.csat {
            csat_sum += csat as i64;
            csat_n += 1;
        }
    }
    if csat_n > 0 {
        p.avg_csat_hundredths = Some((200 * csat_sum + csat_n) / (2 * csat_n));
    }
    if closed_n > 0 {
        p.avg_resolution_tenths =
            Some((20 * resolution_seconds + 3600 * closed_n) / (7200 * closed_n));
    }
    p.sources[1] = p.invoice_count > 0;
    p.sources[2] = p.event_count > 0;
    p.sources[3] = p.ticket_count > 0;

    let usage = 2 * p.active_days_30d.min(20);
    let billing = 30u64.saturating_sub(10 * p.overdue_invoice_count) as u32;
    let support = 20 - (5 * p.open_ticket_count).min(20) as u32;
    let satisfaction = if csat_n == 0 {
        5
    } else {
        (10 * (csat_sum - csat_n) / (4 * csat_n)) as u32
    };
    p.health_score = usage + billing + support + satisfaction;
    p.tier = Tier::of(p.health_score);
    p
}

/// The most frequent feature; ties go to the smallest by byte order.
fn top_feature<'a>(features: &mut [&'a str]) -> Option<&'a str> {
    features.sort_unstable();
    let mut best: Option<(&str, usize)> = None;
    let mut i = 0;
    while i < features.len() {
        let run = features[i..]
            .iter()
            .take_while(|f| **f == features[i])
            .count();
        if best.is_none_or(|(_, n)| run > n) {
            best = Some((features[i], run));
        }
        i += run;
    }
    best.map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> i64 {
        crate::calendar::parse_timestamp(text).unwrap()
    }

    fn ticket(opened: &str, closed: Option<&str>, csat: Option<u8>) -> SupportRow<'static> {
        SupportRow {
            ticket_id: "t",
            customer: CustomerId(1),
            opened_at: ts(opened),
            closed_at: closed.map(ts),
            csat,
        }
    }

    fn profile_of<'a>(
        invoices: &[BillingRow<'a>],
        events: &[ProductRow<'a>],
        tickets: &[SupportRow<'a>],
    ) -> Profile<'a> {
        let window = Window::for_as_of(Date::parse("2026-10-01").unwrap());
        build_profile(
            CustomerId(1),
            None,
            invoices.iter(),
            events.iter(),
            tickets.iter(),
            &window,
            &mut Vec::new(),
        )
    }

    #[test]
    fn rounding_is_half_up_on_integers() {
        // csat 1,2 -> 1.50; 1,1,2 -> 1.333.. -> 1.33; 1,2,2 -> 1.666.. -> 1.67; 4,5,5,5,5,5,5,5 -> 4.875 -> 4.88
        let cases: [(&[u8], i64); 4] = [
            (&[1, 2], 150),
            (&[1, 1, 2], 133),
            (&[1, 2, 2], 167),
            (&[4, 5, 5, 5, 5, 5, 5, 5], 488),
        ];
        for (csats, want) in cases {
            let tickets: Vec<_> = csats
                .iter()
                .map(|c| ticket("2026-01-01T00:00:00Z", None, Some(*c)))
                .collect();
            assert_eq!(
                profile_of(&[], &[], &tickets).avg_csat_hundredths,
                Some(want),
                "{csats:?}"
            );
        }
        // Resolution 0.25 h and 0.0 h: mean 0.125 h -> 0.1; 0.05 h -> 0.1 (half up); 0.04999 h -> 0.0.
        let t = |closed: &str| ticket("2026-01-01T00:00:00Z", Some(closed), None);
        let p = profile_of(
            &[],
            &[],
            &[t("2026-01-01T00:15:00Z"), t("2026-01-01T00:00:00Z")],
        );
        assert_eq!(p.avg_resolution_tenths, Some(1));
        assert_eq!(
            profile_of(&[], &[], &[t("2026-01-01T00:03:00Z")]).avg_resolution_tenths,
            Some(1)
        );
        assert_eq!(
            profile_of(&[], &[], &[t("2026-01-01T00:02:59Z")]).avg_resolution_tenths,
            Some(0)
        );
        assert_eq!(
            profile_of(&[], &[], &[t("2026-01-01T01:03:00Z")]).avg_resolution_tenths,
            Some(11)
        );
    }

    #[test]
    fn window_edges_and_active_days() {
        let ev = |t: &str, f: &'static str| ProductRow {
            event_id: "e",
            customer: CustomerId(1),
            occurred_at: ts(t),
            feature: f,
        };
        let p = profile_of(
            &[],
            &[
                ev("2026-09-01T23:59:59Z", "z"),      // before window_start
                ev("2026-09-02T00:00:00Z", "b"),      // window_start: in
                ev("2026-09-02T05:00:00Z", "b"),      // same day
                ev("2026-10-01T23:59:59Z", "a"),      // last second: in
                ev("2026-10-02T00:00:00Z", "a"),      // window_end: out
                ev("2026-10-02T01:30:00+02:00", "c"), // 2026-10-01T23:30Z: in
            ],
            &[],
        );
        assert_eq!((p.event_count, p.events_30d, p.active_days_30d), (6, 4, 2));
        assert_eq!(p.top_feature, Some("a")); // a:2, b:2 -> byte order
        assert_eq!(p.last_seen_at, Some(ts("2026-10-02T00:00:00Z")));
        assert_eq!(p.health_score, 2 * 2 + 30 + 20 + 5);
    }

    #[test]
    fn billing_sums_and_health() {
        let inv = |status, cents, paid: Option<&str>| BillingRow {
            invoice_id: "i",
            customer: CustomerId(1),
            issued_at: Date::parse("2026-01-01").unwrap(),
            amount_cents: cents,
            status,
            paid_at: paid.map(|d| Date::parse(d).unwrap()),
        };
        let p = profile_of(
            &[
                inv(Status::Paid, 1050, Some("2026-02-01")),
                inv(Status::Paid, 1, Some("2026-03-01")),
                inv(Status::Open, 200, None),
                inv(Status::Overdue, 300, None),
                inv(Status::Overdue, 300, None),
                inv(Status::Overdue, 300, None),
                inv(Status::Overdue, 300, None),
                inv(Status::Refunded, 999, Some("2026-04-01")),
            ],
            &[],
            &[ticket("2026-01-01T00:00:00Z", None, Some(1))],
        );
        assert_eq!(
            (p.lifetime_value_cents, p.outstanding_balance_cents),
            (1051, 1400)
        );
        assert_eq!(p.last_payment_at, Date::parse("2026-03-01"));
        assert_eq!(
            (
                p.invoice_count,
                p.paid_invoice_count,
                p.overdue_invoice_count
            ),
            (8, 2, 4)
        );
        // usage 0 + billing 0 + support 15 + satisfaction 0
        assert_eq!((p.health_score, p.tier), (15, Tier::Churning));
        assert_eq!(p.sources_text(), "billing|support");
    }
}
