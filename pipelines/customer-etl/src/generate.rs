//! Deterministic sample data: the four input files for `customers` customers,
//! with realistic shapes and a small fraction of deliberately bad rows.
//!
//! Streams to disk: rows are generated a window of customers at a time,
//! shuffled within the window (so one customer's rows are interleaved with
//! others', as in real exports) and written, so memory stays bounded whatever
//! the customer count.

use crate::calendar::{Date, SECONDS_PER_DAY, format_timestamp};
use crate::error::{EtlError, Result};
use crate::writer::push_csv_field;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;

/// Customers generated per window (rows are shuffled within a window).
const WINDOW: u64 = 512;
/// Chance, per row, of a deliberate defect (in thousandths).
const BAD_PER_MILLE: u64 = 15;

/// The headers the generator writes: orders differ from the contract's and
/// there are extra columns, which readers must handle.
const HEADERS: [&str; 4] = [
    "customer_id,name,email,company,country,segment,signup_date,notes",
    "customer_id,invoice_id,issued_at,amount,currency,status,paid_at",
    "event_id,customer_id,occurred_at,feature,duration_s",
    "ticket_id,customer_id,priority,opened_at,closed_at,csat",
];

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenerateStats {
    /// Customers.
    pub customers: u64,
    /// Rows written per file (crm, billing, product, support), bad rows included.
    pub rows: [u64; 4],
    /// Bytes written over all files.
    pub bytes: u64,
}

/// SplitMix64. Hand-written on purpose: the same seed must give byte-identical
/// files forever, and a library PRNG's stream may change between versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Linus", "Margaret", "Dennis", "Frances",
    "Niklaus", "Radia",
];
const LAST: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Torvalds", "Hamilton",
    "Ritchie", "Perlman",
];
const COMPANIES: [&str; 8] = [
    "Acme, Inc.",
    "Globex",
    "Initech",
    "Umbrella Corp",
    "The \"Best\" Widgets",
    "Hooli",
    "Stark Industries",
    "Wayne, Wayne & Co",
];
const COUNTRIES: [&str; 7] = ["US", "DE", "FR", "JP", "BR", "IN", ""];
const SEGMENTS: [&str; 3] = ["smb", "mid_market", "enterprise"];
const FEATURES: [&str; 8] = [
    "dashboard",
    "reports",
    "api",
    "exports",
    "alerts",
    "search",
    "billing_portal",
    "sso",
];
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const OFFSETS: [&str; 5] = ["+02:00", "-05:00", "+05:30", "-00:30", "+00:00"];

/// Writes `crm.csv`, `billing.csv`, `product.csv` and `support.csv` for
/// `customers` customers into `out_dir`; the same seed gives the same bytes.
/// Dates lie in the two years before 2026-10-01, with many events in its
/// 30-day window.
pub fn generate(out_dir: &Path, customers: u64, seed: u64) -> Result<GenerateStats> {
    std::fs::create_dir_all(out_dir).map_err(|e| EtlError::io("creating directory", out_dir, e))?;
    let files = ["crm.csv", "billing.csv", "product.csv", "support.csv"];
    let mut writers = Vec::new();
    for (name, header) in files.iter().zip(HEADERS) {
        let path = out_dir.join(name);
        let file = File::create(&path).map_err(|e| EtlError::io("creating", &path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(header.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| EtlError::io("writing", &path, e))?;
        writers.push((path, w));
    }
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(customers), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} customers ({eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message("generating");
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut rng = SplitMix64::new(seed);
    let mut stats = GenerateStats {
        customers,
        ..GenerateStats::default()
    };
    let mut window: [Vec<Vec<u8>>; 4] = Default::default();
    let mut start = 0;
    while start < customers {
        let end = (start + WINDOW).min(customers);
        for id in start..end {
            customer_rows(&mut rng, id, &mut window);
        }
        for (file, rows) in window.iter_mut().enumerate() {
            shuffle(&mut rng, rows);
            let (path, w) = &mut writers[file];
            for row in rows.drain(..) {
                stats.rows[file] += 1;
                stats.bytes += row.len() as u64 + 1;
                w.write_all(&row)
                    .and_then(|_| w.write_all(b"\n"))
                    .map_err(|e| EtlError::io("writing", &*path, e))?;
                if rng.chance(1) {
                    w.write_all(b"\n")
                        .map_err(|e| EtlError::io("writing", &*path, e))?;
                }
            }
        }
        progress.inc(end - start);
        start = end;
    }
    for (path, w) in writers {
        w.into_inner()
            .map_err(|e| EtlError::io("writing", &path, e.into_error()))?;
    }
    progress.finish_and_clear();
    Ok(stats)
}

fn shuffle<T>(rng: &mut SplitMix64, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Fields of one row before it is written; defects edit them.
struct Row {
    fields: Vec<String>,
}

impl Row {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_csv_field(&mut out, f);
        }
        out
    }
}

fn as_of() -> Date {
    Date::parse(crate::contract::DEFAULT_AS_OF).expect("valid default as_of")
}

fn random_date(rng: &mut SplitMix64) -> Date {
    as_of().add_days(-(rng.below(730) as i32))
}

fn random_timestamp(rng: &mut SplitMix64) -> i64 {
    let end = as_of().add_days(1).midnight_utc();
    if rng.chance(400) {
        end - 1 - rng.below(30 * SECONDS_PER_DAY as u64) as i64
    } else {
        end - 1 - rng.below(730 * SECONDS_PER_DAY as u64) as i64
    }
}

/// A timestamp as text: mostly `Z`, some with an offset, some with a fraction.
fn timestamp_text(rng: &mut SplitMix64, t: i64) -> String {
    let z = format_timestamp(t);
    match rng.below(10) {
        0 => format!("{}.{:03}Z", &z[..19], rng.below(1000)),
        1 | 2 => {
            let offset = *rng.pick(&OFFSETS);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let secs = sign
                * (offset[1..3].parse::<i64>().expect("hh") * 3600
                    + offset[4..6].parse::<i64>().expect("mm") * 60);
            let local = format_timestamp(t + secs);
            let fraction = if rng.chance(300) { ".999999" } else { "" };
            format!("{}{fraction}{offset}", &local[..19])
        }
        _ => z,
    }
}

fn amount_text(rng: &mut SplitMix64) -> String {
    let cents = 500 + rng.below(250_000);
    match rng.below(3) {
        0 => format!("{}", cents / 100),
        1 => format!("{}.{}", cents / 100, (cents % 100) / 10),
        _ => format!("{}.{:02}", cents / 100, cents % 100),
    }
}

/// Appends one customer's rows to the per-file buffers.
fn customer_rows(rng: &mut SplitMix64, id: u64, out: &mut [Vec<Vec<u8>>; 4]) {
    let customer = format!("cust_{id:08}");
    let padded = |rng: &mut SplitMix64| {
        if rng.chance(20) {
            format!(" {customer} ")
        } else {
            customer.clone()
        }
    };
    if !rng.chance(40) {
        let first = *rng.pick(&FIRST);
        let last = *rng.pick(&LAST);
        let name = match rng.below(50) {
            0 => format!("{last}, {first}"),
            1 => format!("{first}\n{last}"),
            _ => format!("{first} {last}"),
        };
        let mut email = format!(
            "{}.{}{id}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        if rng.chance(100) {
            email = email.to_uppercase();
        }
        let fields = vec![
            padded(rng),
            name,
            email,
            rng.pick(&COMPANIES).to_string(),
            rng.pick(&COUNTRIES).to_string(),
            rng.pick(&SEGMENTS).to_string(),
            random_date(rng).to_string(),
            if rng.chance(100) {
                "vip, call first".into()
            } else {
                String::new()
            },
        ];
        emit(rng, 0, Row { fields }, out);
    }
    for k in 0..rng.below(7) {
        let issued = random_date(rng);
        let status = match rng.below(20) {
            0..=11 => "paid",
            12..=14 => "open",
            15..=17 => "overdue",
            _ => "refunded",
        };
        let paid_at = if status == "paid" || (status == "refunded" && rng.chance(500)) {
            issued.add_days(rng.below(40) as i32).to_string()
        } else {
            String::new()
        };
        let fields = vec![
            padded(rng),
            format!("INV-{id}-{k}"),
            issued.to_string(),
            amount_text(rng),
            "USD".into(),
            status.into(),
            paid_at,
        ];
        emit(rng, 1, Row { fields }, out);
    }
    for k in 0..rng.below(16) {
        let t = random_timestamp(rng);
        let fields = vec![
            format!("EVT-{id}-{k}"),
            padded(rng),
            timestamp_text(rng, t),
            rng.pick(&FEATURES[..3 + (id % 6) as usize]).to_string(),
            rng.below(3600).to_string(),
        ];
        emit(rng, 2, Row { fields }, out);
    }
    for k in 0..rng.below(5) {
        let opened = random_timestamp(rng);
        let closed = if rng.chance(750) {
            let closed = opened + rng.below(200 * 3600) as i64;
            timestamp_text(rng, closed)
        } else {
            String::new()
        };
        let csat = if rng.chance(600) {
            (1 + rng.below(5)).to_string()
        } else {
            String::new()
        };
        let fields = vec![
            format!("TCK-{id}-{k}"),
            padded(rng),
            rng.pick(&PRIORITIES).to_string(),
            timestamp_text(rng, opened),
            closed,
            csat,
        ];
        emit(rng, 3, Row { fields }, out);
    }
}

/// Writes a row, sometimes damaged on purpose, sometimes twice (a duplicate).
fn emit(rng: &mut SplitMix64, file: usize, mut row: Row, out: &mut [Vec<Vec<u8>>; 4]) {
    if rng.chance(BAD_PER_MILLE) {
        damage(rng, file, &mut row);
    }
    let encoded = row.encode();
    if rng.chance(8) {
        out[file].push(encoded.clone());
    }
    out[file].push(encoded);
}

/// Breaks one rule of the contract in a row. Field positions follow [`HEADERS`].
fn damage(rng: &mut SplitMix64, file: usize, row: &mut Row) {
    let f = &mut row.fields;
    let customer = match file {
        0 | 1 => 0,
        _ => 1,
    };
    match rng.below(6) {
        0 => {
            if rng.chance(500) {
                f.pop();
            } else {
                f.push("extra".into());
            }
        }
        1 => {
            f[customer] =
                (*rng.pick(&["cust_1234567", "CUST_00000001", "cust_abcdefgh", "42"])).into()
        }
        2 => {
            let required: &[usize] = match file {
                0 => &[0, 5, 6],
                1 => &[0, 1, 2, 3, 5],
                2 => &[0, 1, 2, 3, 4],
                _ => &[0, 1, 2, 3],
            };
            f[*rng.pick(required)] = if rng.chance(500) {
                "  ".into()
            } else {
                String::new()
            };
        }
        _ => match file {
            0 => match rng.below(2) {
                0 => f[5] = "Enterprise".into(),
                _ => f[6] = (*rng.pick(&["2026-02-30", "2026/01/05", "yesterday"])).into(),
            },
            1 => match rng.below(4) {
                0 => f[3] = (*rng.pick(&["-5.00", "12.345", "1e3", "$10"])).into(),
                1 => f[5] = "PAID".into(),
                2 => f[2] = "2026-13-01".into(),
                _ => {
                    f[5] = "paid".into();
                    f[6] = "2020-01-01".into();
                }
            },
            2 => match rng.below(2) {
                0 => {
                    f[2] =
                        (*rng.pick(&["2026-09-30 10:00:00", "2026-09-30T25:00:00Z", "1727690000"]))
                            .into()
                }
                _ => f[4] = (*rng.pick(&["-3", "1.5", "ten"])).into(),
            },
            _ => match rng.below(4) {
                0 => f[5] = (*rng.pick(&["0", "6", "4.5", "great"])).into(),
                1 => f[2] = "critical".into(),
                2 => f[3] = "not a time".into(),
                _ => {
                    f[3] = "2026-09-10T12:00:00Z".into();
                    f[4] = "2026-09-10T11:59:59Z".into();
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = generate(a.path(), 300, 7).unwrap();
        let sb = generate(b.path(), 300, 7).unwrap();
        assert_eq!(sa, sb);
        for name in ["crm.csv", "billing.csv", "product.csv", "support.csv"] {
            assert_eq!(
                std::fs::read(a.path().join(name)).unwrap(),
                std::fs::read(b.path().join(name)).unwrap()
            );
        }
        let c = tempfile::tempdir().unwrap();
        generate(c.path(), 300, 8).unwrap();
        assert_ne!(
            std::fs::read(a.path().join("billing.csv")).unwrap(),
            std::fs::read(c.path().join("billing.csv")).unwrap()
        );
    }
}
