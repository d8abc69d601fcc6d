//! `[snapshot.s3]`: where off-site copies of snapshots go (any S3-compatible store), as
//! written ([`S3Section`]) and as resolved ([`S3Settings`]). Credentials come from files (their
//! content, trimmed) or, when no file is named, from the usual `AWS_*` variables when the
//! store is first used; the secret never appears in logs or `Debug` output.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default of `snapshot.s3.prefix`.
pub const DEFAULT_S3_PREFIX: &str = "quorate/";
/// Default of `snapshot.s3.region`.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// The `[snapshot.s3]` section as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// The store's URL (`https://minio.lan:9000`); unset for AWS S3 itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix of every object. Unset: [`DEFAULT_S3_PREFIX`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Unset: [`DEFAULT_S3_REGION`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`). Unset: true when `endpoint` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// A file holding the access key ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    /// A file holding the secret access key (not readable by others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Snapshots of this cluster kept in the store. Unset: `snapshot.retain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain: Option<u32>,
    /// Allow a plain `http://` endpoint (a store on loopback or a trusted LAN). Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
}

/// A credential that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value, for the one place that signs requests with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Credentials {
    /// The `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` triple from
    /// `var`; None unless both keys are set and not empty.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Some(Self {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: Secret::new(get("AWS_SECRET_ACCESS_KEY")?),
            session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
        })
    }
}

/// Resolved `[snapshot.s3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// None: AWS S3 itself (the region's endpoint).
    pub endpoint: Option<String>,
    pub bucket: String,
    /// "" or ends with '/'.
    pub prefix: String,
    pub region: String,
    pub path_style: bool,
    /// From the files; None: from the `AWS_*` variables when the store is first used.
    pub credentials: Option<S3Credentials>,
    /// Snapshots of this cluster kept in the store (at least 1).
    pub retain: usize,
    pub allow_http: bool,
}

impl S3Settings {
    /// Where the snapshots go, for status lines: `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
