//! Per-row validation: turns one CSV row of a source into a typed row, or the
//! reject reason the contract's precedence picks.
//!
//! Everything but `duplicate` is decided here, row by row, in the partition
//! step; duplicates need the earlier rows of the same customer and are found in
//! the shard step.

use crate::calendar::{Date, parse_timestamp};
use crate::contract::{Priority, RejectReason, Segment, Status};
use std::borrow::Cow;

/// Largest number of integer digits accepted in `amount`: keeps every amount in
/// cents well inside `i64` (sums are taken in `i128`).
pub const MAX_AMOUNT_INTEGER_DIGITS: usize = 15;

/// A customer id: `cust_` and 8 ASCII digits, kept as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomerId(pub u32);

impl CustomerId {
    /// Parses a trimmed id; `None` when it does not have the contract's shape.
    pub fn parse(text: &str) -> Option<CustomerId> {
        let digits = text.strip_prefix("cust_")?;
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(CustomerId(digits.parse().ok()?))
    }
}

impl std::fmt::Display for CustomerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cust_{:08}", self.0)
    }
}

/// An accepted crm.csv row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmRow<'a> {
    /// The customer.
    pub customer: CustomerId,
    /// Trimmed name, may be empty.
    pub name: &'a str,
    /// Trimmed and ASCII-lower-cased email, may be empty.
    pub email: Cow<'a, str>,
    /// Trimmed company, may be empty.
    pub company: &'a str,
    /// Trimmed country, may be empty.
    pub country: &'a str,
    /// Segment.
    pub segment: Segment,
    /// Signup date.
    pub signup_date: Date,
}

/// An accepted billing.csv row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingRow<'a> {
    /// Record key.
    pub invoice_id: &'a str,
    /// The customer.
    pub customer: CustomerId,
    /// Issue date.
    pub issued_at: Date,
    /// Amount in cents.
    pub amount_cents: i64,
    /// Status.
    pub status: Status,
    /// Payment date, if any.
    pub paid_at: Option<Date>,
}

/// An accepted product.csv row (`duration_s` is validated but not needed by any profile column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow<'a> {
    /// Record key.
    pub event_id: &'a str,
    /// The customer.
    pub customer: CustomerId,
    /// Seconds since the epoch, UTC, fraction truncated.
    pub occurred_at: i64,
    /// Trimmed feature name.
    pub feature: &'a str,
}

/// An accepted support.csv row (`priority` is validated but not needed by any profile column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportRow<'a> {
    /// Record key.
    pub ticket_id: &'a str,
    /// The customer.
    pub customer: CustomerId,
    /// Seconds since the epoch, UTC.
    pub opened_at: i64,
    /// Seconds since the epoch, UTC, if closed.
    pub closed_at: Option<i64>,
    /// Satisfaction 1..=5, if given.
    pub csat: Option<u8>,
}

/// The customer a row can be routed by: the trimmed `customer_id` field when it
/// has the contract's shape, whatever else is wrong with the row.
pub fn routing_id(field: &str) -> Option<CustomerId> {
    CustomerId::parse(field.trim_ascii())
}

/// Validates crm fields, given trimmed, in [`crate::contract::Source::columns`] order.
pub fn crm<'a>(f: &[&'a str]) -> Result<CrmRow<'a>, RejectReason> {
    let customer = customer_id(f[0])?;
    let segment = required(f[5]).and_then(|s| Segment::parse(s).ok_or(RejectReason::BadEnum))?;
    let signup_date = date(required(f[6])?)?;
    let email = if f[2].bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(f[2].to_ascii_lowercase())
    } else {
        Cow::Borrowed(f[2])
    };
    Ok(CrmRow {
        customer,
        name: f[1],
        email,
        company: f[3],
        country: f[4],
        segment,
        signup_date,
    })
}

/// Validates billing fields, given trimmed, in [`crate::contract::Source::columns`] order.
pub fn billing<'a>(f: &[&'a str]) -> Result<BillingRow<'a>, RejectReason> {
    let invoice_id = required(f[0])?;
    let customer = customer_id(f[1])?;
    let issued_at = date(required(f[2])?)?;
    let amount_cents = parse_amount(required(f[3])?).ok_or(RejectReason::BadAmount)?;
    let status = Status::parse(required(f[4])?).ok_or(RejectReason::BadEnum)?;
    let paid_at = match f[5] {
        "" if status == Status::Paid => return Err(RejectReason::MissingField),
        "" => None,
        text => Some(date(text)?),
    };
    if paid_at.is_some_and(|paid| paid < issued_at) {
        return Err(RejectReason::PaidBeforeIssued);
    }
    Ok(BillingRow {
        invoice_id,
        customer,
        issued_at,
        amount_cents,
        status,
        paid_at,
    })
}

/// Validates product fields, given trimmed, in [`crate::contract::Source::columns`] order.
pub fn product<'a>(f: &[&'a str]) -> Result<ProductRow<'a>, RejectReason> {
    let event_id = required(f[0])?;
    let customer = customer_id(f[1])?;
    let occurred_at = timestamp(required(f[2])?)?;
    let feature = required(f[3])?;
    if !is_digits(required(f[4])?) {
        return Err(RejectReason::BadInteger);
    }
    Ok(ProductRow {
        event_id,
        customer,
        occurred_at,
        feature,
    })
}

/// Validates support fields, given trimmed, in [`crate::contract::Source::columns`] order.
pub fn support<'a>(f: &[&'a str]) -> Result<SupportRow<'a>, RejectReason> {
    let ticket_id = required(f[0])?;
    let customer = customer_id(f[1])?;
    let opened_at = timestamp(required(f[2])?)?;
    let closed_at = match f[3] {
        "" => None,
        text => Some(timestamp(text)?),
    };
    Priority::parse(required(f[4])?).ok_or(RejectReason::BadEnum)?;
    let csat = match f[5] {
        "" => None,
        text => Some(parse_csat(text).ok_or(RejectReason::BadCsat)?),
    };
    if closed_at.is_some_and(|closed| closed < opened_at) {
        return Err(RejectReason::ClosedBeforeOpened);
    }
    Ok(SupportRow {
        ticket_id,
        customer,
        opened_at,
        closed_at,
        csat,
    })
}

fn required(field: &str) -> Result<&str, RejectReason> {
    if field.is_empty() {
        Err(RejectReason::MissingField)
    } else {
        Ok(field)
    }
}

fn customer_id(field: &str) -> Result<CustomerId, RejectReason> {
    CustomerId::parse(required(field)?).ok_or(RejectReason::BadCustomerId)
}

fn date(field: &str) -> Result<Date, RejectReason> {
    Date::parse(field).ok_or(RejectReason::BadDate)
}

fn timestamp(field: &str) -> Result<i64, RejectReason> {
    parse_timestamp(field).ok_or(RejectReason::BadTimestamp)
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `12`, `12.5` or `12.50` into cents; `None` for anything else
/// (signs, exponents, a bare `.5` or `12.`, more than 2 fraction digits,
/// more than [`MAX_AMOUNT_INTEGER_DIGITS`] integer digits).
pub fn parse_amount(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !is_digits(whole) || whole.len() > MAX_AMOUNT_INTEGER_DIGITS {
        return None;
    }
    if text.contains('.') && (fraction.is_empty() || fraction.len() > 2 || !is_digits(fraction)) {
        return None;
    }
    let cents = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<i64>().ok()? * 10,
        _ => fraction.parse::<i64>().ok()?,
    };
    Some(whole.parse::<i64>().ok()? * 100 + cents)
}

/// Parses a csat: ASCII digits whose value is 1 to 5 (leading zeros allowed).
fn parse_csat(text: &str) -> Option<u8> {
    if !is_digits(text) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    match significant.as_bytes() {
        [d @ b'1'..=b'5'] => Some(d - b'0'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_cents() {
        assert_eq!(parse_amount("12"), Some(1200));
        assert_eq!(parse_amount("12.5"), Some(1250));
        assert_eq!(parse_amount("12.50"), Some(1250));
        assert_eq!(parse_amount("0.07"), Some(7));
        assert_eq!(
            parse_amount("999999999999999.99"),
            Some(99_999_999_999_999_999)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.",
            ".5",
            "1.234",
            "1e3",
            "1,5",
            "1 000",
            "1000000000000000",
            "1.-5",
        ] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
    }

    #[test]
    fn customer_ids_have_one_shape() {
        assert_eq!(CustomerId::parse("cust_00000042"), Some(CustomerId(42)));
        assert_eq!(CustomerId(42).to_string(), "cust_00000042");
        for bad in [
            "cust_0000042",
            "cust_000000042",
            "CUST_00000042",
            "cust_0000004a",
            "cust_+0000042",
        ] {
            assert_eq!(CustomerId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn csat_values() {
        assert_eq!(parse_csat("5"), Some(5));
        assert_eq!(parse_csat("05"), Some(5));
        for bad in ["0", "6", "-1", "4.5", "+3", "10"] {
            assert_eq!(parse_csat(bad), None, "{bad}");
        }
    }

    #[test]
    fn billing_precedence() {
        let row = |f: [&'static str; 6]| billing(&f).map(|_| ());
        assert_eq!(
            row(["", "bad", "x", "x", "x", ""]),
            Err(RejectReason::MissingField)
        );
        assert_eq!(
            row(["i", "bad", "x", "x", "x", ""]),
            Err(RejectReason::BadCustomerId)
        );
        assert_eq!(
            row(["i", "", "x", "x", "x", ""]),
            Err(RejectReason::MissingField)
        );
        assert_eq!(
            row(["i", "cust_00000001", "2026-02-30", "x", "x", ""]),
            Err(RejectReason::BadDate)
        );
        assert_eq!(
            row(["i", "cust_00000001", "2026-02-03", "x", "x", ""]),
            Err(RejectReason::BadAmount)
        );
        assert_eq!(
            row(["i", "cust_00000001", "2026-02-03", "1", "PAID", ""]),
            Err(RejectReason::BadEnum)
        );
        assert_eq!(
            row(["i", "cust_00000001", "2026-02-03", "1", "paid", ""]),
            Err(RejectReason::MissingField)
        );
        assert_eq!(
            row(["i", "cust_00000001", "2026-02-03", "1", "open", ""]),
            Ok(())
        );
        assert_eq!(
            row(["i", "cust_00000001", "2026-02-03", "1", "open", "x"]),
            Err(RejectReason::BadDate)
        );
        assert_eq!(
            row([
                "i",
                "cust_00000001",
                "2026-02-03",
                "1",
                "open",
                "2026-02-02"
            ]),
            Err(RejectReason::PaidBeforeIssued)
        );
        assert_eq!(
            row([
                "i",
                "cust_00000001",
                "2026-02-03",
                "1",
                "paid",
                "2026-02-03"
            ]),
            Ok(())
        );
    }

    #[test]
    fn support_precedence() {
        let row = |f: [&'static str; 6]| support(&f).map(|_| ());
        let open = "2026-09-01T10:00:00Z";
        assert_eq!(
            row([
                "t",
                "cust_00000001",
                open,
                "2026-09-01T09:00:00Z",
                "urgent",
                "9"
            ]),
            Err(RejectReason::BadCsat)
        );
        assert_eq!(
            row([
                "t",
                "cust_00000001",
                open,
                "2026-09-01T09:00:00Z",
                "asap",
                "3"
            ]),
            Err(RejectReason::BadEnum)
        );
        assert_eq!(
            row([
                "t",
                "cust_00000001",
                open,
                "2026-09-01T09:00:00Z",
                "low",
                "3"
            ]),
            Err(RejectReason::ClosedBeforeOpened)
        );
        assert_eq!(
            row(["t", "cust_00000001", open, "yesterday", "low", "3"]),
            Err(RejectReason::BadTimestamp)
        );
        assert_eq!(
            row(["t", "cust_00000001", "", "", "low", ""]),
            Err(RejectReason::MissingField)
        );
        assert_eq!(row(["t", "cust_00000001", open, open, "low", ""]), Ok(()));
    }

    #[test]
    fn product_and_crm_rules() {
        let p = |f: [&'static str; 5]| product(&f).map(|_| ());
        let t = "2026-09-01T10:00:00Z";
        assert_eq!(
            p(["e", "cust_00000001", t, "", "x"]),
            Err(RejectReason::MissingField)
        );
        assert_eq!(
            p(["e", "cust_00000001", t, "f", "1.5"]),
            Err(RejectReason::BadInteger)
        );
        assert_eq!(
            p(["e", "cust_00000001", t, "f", "-1"]),
            Err(RejectReason::BadInteger)
        );
        assert_eq!(p(["e", "cust_00000001", t, "f", "0"]), Ok(()));
        let c = |f: [&'static str; 7]| crm(&f).map(|r| r.email.into_owned());
        assert_eq!(
            c(["cust_00000001", "", "A@B.COM", "", "", "smb", "2026-01-01"]),
            Ok("a@b.com".into())
        );
        assert_eq!(
            c(["cust_00000001", "", "", "", "", "SMB", "bad"]),
            Err(RejectReason::BadEnum)
        );
        assert_eq!(
            c(["cust_00000001", "", "", "", "", "smb", ""]),
            Err(RejectReason::MissingField)
        );
    }
}
