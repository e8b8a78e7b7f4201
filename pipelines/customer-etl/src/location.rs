//! Where the pipeline's files live: a [`Location`] is a local path, or an
//! object (or a prefix of objects) in S3 or any S3-compatible store, named
//! by an `s3://bucket/key` URL. This module only names them (parsing,
//! joining, printing, serialising); [`crate::storage`] reads and writes them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A file or directory: a local path or an object (prefix) in a bucket.
///
/// Serialised as its text (a path, or `s3://bucket/key`), so task inputs
/// and manifests that held paths keep their shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Location {
    /// A path on this machine's file system.
    Local(PathBuf),
    /// An object, or a prefix of objects, in an S3 bucket.
    Object(ObjectUrl),
}

/// `s3://bucket/key`: the bucket and the key (no leading or trailing `/`;
/// empty for the bucket's root).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    bucket: String,
    key: String,
}

impl ObjectUrl {
    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object's key (or the prefix), without a leading `/`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `s3://bucket`.
    pub fn bucket_url(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.key)
        }
    }
}

impl Location {
    /// Parses a local path, a `file://` URL or an `s3://bucket/prefix` URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            return parse_s3(text, rest).map(Location::Object);
        }
        if text.starts_with("file:") {
            let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
            return url
                .to_file_path()
                .map(Location::Local)
                .map_err(|()| format!("`{text}` is not a local file URL"));
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(format!(
                "`{text}`: the `{scheme}://` scheme is not supported; use a local path, a file:// URL or an s3://bucket/prefix URL"
            ));
        }
        if text.is_empty() {
            return Err("an empty path names no file".into());
        }
        Ok(Location::Local(PathBuf::from(text)))
    }

    /// The location `relative` (`/`-separated) below this one.
    pub fn join(&self, relative: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(relative)),
            Location::Object(url) => {
                let relative = relative.trim_matches('/');
                let key = if url.key.is_empty() {
                    relative.to_string()
                } else {
                    format!("{}/{relative}", url.key)
                };
                Location::Object(ObjectUrl {
                    bucket: url.bucket.clone(),
                    key,
                })
            }
        }
    }

    /// The local path, for a local location.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::Object(_) => None,
        }
    }

    /// Whether this is an object-store location.
    pub fn is_object(&self) -> bool {
        matches!(self, Location::Object(_))
    }

    /// A local location made absolute against the working directory (task
    /// processes may not share it); an object location as it is.
    pub fn absolute(&self) -> Result<Location, String> {
        match self {
            Location::Local(path) => std::path::absolute(path)
                .map(Location::Local)
                .map_err(|e| format!("cannot resolve {}: {e}", path.display())),
            Location::Object(_) => Ok(self.clone()),
        }
    }
}

fn parse_s3(text: &str, rest: &str) -> Result<ObjectUrl, String> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !valid_bucket {
        return Err(format!(
            "`{text}`: `{bucket}` is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
        ));
    }
    let key = key.trim_end_matches('/');
    if !key.is_empty() {
        object_store::path::Path::parse(key)
            .map_err(|e| format!("`{text}`: the key `{key}` is not usable: {e}"))?;
    }
    Ok(ObjectUrl {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

impl FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Location::parse(text)
    }
}

impl TryFrom<String> for Location {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Location::parse(&text)
    }
}

impl From<Location> for String {
    fn from(location: Location) -> String {
        location.to_string()
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Local(path)
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Local(path.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Self {
        Location::Local(path.clone())
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Self {
        location.clone()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Object(url) => url.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_file_urls_and_s3_urls_parse_and_print_back() {
        let local = Location::parse("data/in").unwrap();
        assert_eq!(local, Location::Local("data/in".into()));
        assert_eq!(local.join("crm.csv").to_string(), "data/in/crm.csv");
        assert_eq!(
            Location::parse("file:///tmp/a%20b").unwrap(),
            Location::Local("/tmp/a b".into())
        );
        let object = Location::parse("s3://my-bucket/runs/today/").unwrap();
        assert_eq!(object.to_string(), "s3://my-bucket/runs/today");
        assert_eq!(
            object.join("profiles/shard-00000.csv").to_string(),
            "s3://my-bucket/runs/today/profiles/shard-00000.csv"
        );
        let root = Location::parse("s3://my-bucket").unwrap();
        assert_eq!(root.join("crm.csv").to_string(), "s3://my-bucket/crm.csv");
        let json = serde_json::to_string(&object).unwrap();
        assert_eq!(json, "\"s3://my-bucket/runs/today\"");
        assert_eq!(serde_json::from_str::<Location>(&json).unwrap(), object);
    }

    #[test]
    fn unusable_urls_are_refused_by_name() {
        for (text, named) in [
            ("gs://bucket/x", "gs://"),
            ("s3://", "bucket name"),
            ("s3://No_Such/x", "No_Such"),
            ("s3://bucket/a//b", "a//b"),
            ("", "empty"),
        ] {
            let err = Location::parse(text).unwrap_err();
            assert!(err.contains(named), "{text}: {err}");
        }
    }
}
