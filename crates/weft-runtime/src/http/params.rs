//! Query parameters as the API reads them: repeated keys, comma lists,
//! cursors, states, times and numbers, each refused by name when it is
//! not what it must be.

use chrono::{DateTime, Utc};
use weft_store::RunState;

use crate::http::json::ApiError;

/// Query parameters, where a key may repeat (`a=1&a=2`) and hold commas (`a=1,2`).
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The parameters of a query string. A NUL byte (`%00`) in any of
    /// them is refused, naming the parameter: no name, id or filter holds
    /// one, and PostgreSQL text cannot.
    pub(crate) fn parse(raw: Option<String>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        if let Some((key, _)) = pairs
            .iter()
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::bad_request(format!(
                "the query parameter {:?} holds a NUL byte (%00), which no value may",
                key.replace('\0', "\\0")
            )));
        }
        Ok(Self(pairs))
    }

    pub(crate) fn list(&self, keys: &[&str]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `cursor`: a run's place in the list (its `seq`).
    pub(crate) fn cursor(&self) -> Result<Option<i64>, ApiError> {
        self.one("cursor")
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid cursor {v:?}")))
            })
            .transpose()
    }

    /// `status`: a run state. `succeeded` (the newer clients' word) finds
    /// the runs reported as `completed`: one state, two spellings.
    pub(crate) fn status(&self) -> Result<Option<RunState>, ApiError> {
        self.one("status")
            .map(|v| {
                RunState::parse(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown status {v:?} (pending, running, completed, failed or canceled)"
                    ))
                })
            })
            .transpose()
    }

    pub(crate) fn number(&self, key: &str, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.one(key) {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{key} must be a whole number from 1 to {max}, got {v:?}"
                ))),
            },
        }
    }

    /// A time as RFC 3339 (`2026-12-03T19:00:00Z`), as an ISO 8601 time
    /// with no offset (taken as UTC: Python's `isoformat()` of a naive
    /// time), or as Unix seconds (Render's metrics API documents them).
    pub(crate) fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.one(key).map(|v| parse_time(key, v)).transpose()
    }

    /// A number of seconds, more than 0 and at most `max`.
    pub(crate) fn seconds(&self, key: &str, default: f64, max: f64) -> Result<f64, ApiError> {
        match self.one(key) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n > 0.0 && n <= max => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{key} must be a number of seconds above 0 and at most {max}, got {v:?}"
                ))),
            },
        }
    }
}

fn parse_time(key: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.to_utc());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && let Some(t) = DateTime::from_timestamp_micros((secs * 1e6) as i64)
    {
        return Ok(t);
    }
    Err(ApiError::bad_request(format!(
        "{key} must be an RFC 3339 time or Unix seconds, got {v:?}"
    )))
}
