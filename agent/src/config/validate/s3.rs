//! Validation of `[snapshot.s3]`: the endpoint is an http(s) URL (plain http only with
//! `allow_http`), the bucket a valid S3 bucket name, the prefix a relative key prefix, and the
//! credential files readable, not empty, and the secret not readable by other users.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::super::error::ConfigError;
use super::super::host::HostProbe;
use super::super::s3::{
    S3Credentials, S3Section, S3Settings, Secret, DEFAULT_S3_PREFIX, DEFAULT_S3_REGION,
};

/// Resolves `[snapshot.s3]`; `snapshot_retain` is the default of its `retain`.
pub fn resolve_s3(
    s3: &S3Section,
    snapshot_retain: u32,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<S3Settings> {
    let before = errors.len();
    let allow_http = s3.allow_http.unwrap_or(false);
    let endpoint = s3
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    if let Some(endpoint) = endpoint {
        check_endpoint(endpoint, allow_http, errors);
    }
    let bucket = match s3.bucket.as_deref().map(str::trim) {
        None | Some("") => {
            errors.push(ConfigError::invalid(
                "snapshot.s3.bucket",
                "(unset)",
                "a [snapshot.s3] section needs a bucket",
                "name the bucket snapshots go to (bucket = \"etcd-backups\"), or remove [snapshot.s3]",
            ));
            String::new()
        }
        Some(b) => {
            if let Err(problem) = bucket_problem(b) {
                errors.push(ConfigError::invalid(
                    "snapshot.s3.bucket",
                    format!("{b:?}"),
                    problem,
                    "use the bucket's name as the store shows it: 3 to 63 lowercase letters, \
                     digits, '.' or '-', starting and ending with a letter or digit",
                ));
            }
            b.to_owned()
        }
    };
    let prefix = s3
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_S3_PREFIX.into());
    if prefix.starts_with('/') || prefix.split('/').any(|p| p == "." || p == "..") {
        errors.push(ConfigError::invalid(
            "snapshot.s3.prefix",
            format!("{prefix:?}"),
            "an object key prefix is relative: no leading '/', no '.' or '..' parts",
            "write it like \"quorate/\" or \"backups/prod/\" (the default is \"quorate/\")",
        ));
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix
    } else {
        format!("{prefix}/")
    };
    let region = s3
        .region
        .clone()
        .unwrap_or_else(|| DEFAULT_S3_REGION.into());
    if region.trim().is_empty() || region.chars().any(|c| c.is_whitespace() || c == '/') {
        errors.push(ConfigError::invalid(
            "snapshot.s3.region",
            format!("{region:?}"),
            "not a region name",
            "write the store's region such as \"eu-west-1\", or leave it unset for \"us-east-1\"",
        ));
    }
    let retain = s3.retain.unwrap_or(snapshot_retain);
    if retain == 0 {
        errors.push(ConfigError::invalid(
            "snapshot.s3.retain",
            retain,
            "the store always keeps at least the newest snapshot",
            "set it to 1 or more, or leave it unset to keep as many as snapshot.retain",
        ));
    }
    let credentials = resolve_credentials(s3, host, errors);
    if errors.len() > before {
        return None;
    }
    Some(S3Settings {
        path_style: s3.path_style.unwrap_or(endpoint.is_some()),
        endpoint: endpoint.map(|e| e.trim_end_matches('/').to_owned()),
        bucket,
        prefix,
        region,
        credentials: credentials?,
        retain: retain as usize,
        allow_http,
    })
}

fn check_endpoint(endpoint: &str, allow_http: bool, errors: &mut Vec<ConfigError>) {
    let fix = "write the store's URL such as \"https://s3.example.net\" or \
               \"https://minio.lan:9000\" (no bucket, path or query), or leave it unset for AWS";
    let url = match url::Url::parse(endpoint) {
        Ok(url) => url,
        Err(e) => {
            errors.push(ConfigError::invalid(
                "snapshot.s3.endpoint",
                format!("{endpoint:?}"),
                format!("not a URL: {e}"),
                fix,
            ));
            return;
        }
    };
    let scheme_problem = match url.scheme() {
        "https" => None,
        "http" if allow_http => None,
        "http" => {
            errors.push(ConfigError::invalid(
                "snapshot.s3.endpoint",
                format!("{endpoint:?}"),
                "plain http sends the snapshots (every key, the sealed CA) and the signed \
                 requests unencrypted",
                "use the store's https:// URL, or set allow_http = true for a store on \
                 loopback or a trusted network",
            ));
            return;
        }
        other => Some(format!("scheme {other}:// is neither https nor http")),
    };
    let problem = scheme_problem.or_else(|| {
        if url.host_str().is_none_or(str::is_empty) {
            Some("it names no host".to_owned())
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("it carries a query or fragment".into())
        } else if !matches!(url.path(), "" | "/") {
            Some(format!(
                "it carries a path ({}): the bucket and prefix are separate settings",
                url.path()
            ))
        } else {
            None
        }
    });
    if let Some(problem) = problem {
        errors.push(ConfigError::invalid(
            "snapshot.s3.endpoint",
            format!("{endpoint:?}"),
            problem,
            fix,
        ));
    }
}

/// Why `b` is not an S3 bucket name (the rules every S3-compatible store accepts).
fn bucket_problem(b: &str) -> Result<(), String> {
    if !(3..=63).contains(&b.len()) {
        return Err(format!("{} characters; a bucket name has 3 to 63", b.len()));
    }
    if let Some(c) = b
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
    {
        return Err(format!("{c:?} is not allowed in a bucket name"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(b.chars().next()) || !edge_ok(b.chars().last()) {
        return Err("a bucket name starts and ends with a letter or digit".into());
    }
    if b.contains("..") {
        return Err("a bucket name has no \"..\"".into());
    }
    Ok(())
}

/// The credentials from the files; `Some(None)` when no file is named (the `AWS_*` variables
/// then); None after an error.
fn resolve_credentials(
    s3: &S3Section,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<S3Credentials>> {
    match (&s3.access_key_id_file, &s3.secret_access_key_file) {
        (None, None) => Some(None),
        (Some(_), None) | (None, Some(_)) => {
            let (field, missing) = if s3.access_key_id_file.is_some() {
                ("snapshot.s3.access_key_id_file", "secret_access_key_file")
            } else {
                ("snapshot.s3.secret_access_key_file", "access_key_id_file")
            };
            errors.push(ConfigError::invalid(
                field,
                "(set)",
                format!("{missing} is not set: a key ID needs its secret and the other way round"),
                "set both files, or neither to use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
            None
        }
        (Some(id_file), Some(secret_file)) => {
            let id = read_credential("snapshot.s3.access_key_id_file", id_file, host, errors);
            let secret = read_credential(
                "snapshot.s3.secret_access_key_file",
                secret_file,
                host,
                errors,
            );
            if secret.is_some() {
                check_private(secret_file, errors);
            }
            Some(Some(S3Credentials {
                access_key_id: id?,
                secret_access_key: Secret::new(secret?),
                session_token: None,
            }))
        }
    }
}

fn read_credential(
    field: &'static str,
    path: &Path,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match host.read_file(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => {
            errors.push(ConfigError::invalid(
                field,
                path.display(),
                "the file is empty",
                "write the credential into the file (its whole content, surrounding \
                 whitespace ignored)",
            ));
            None
        }
        Err(e) => {
            errors.push(ConfigError::invalid(
                field,
                path.display(),
                format!("cannot read it: {e}"),
                "create the file with the credential, readable by the agent's user",
            ));
            None
        }
    }
}

/// A secret readable by every user of the host is refused.
fn check_private(path: &Path, errors: &mut Vec<ConfigError>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        errors.push(ConfigError::invalid(
            "snapshot.s3.secret_access_key_file",
            path.display(),
            format!("the secret is readable by every user of this host (mode {mode:03o})"),
            format!(
                "chmod 600 {} (or 640 with the agent's group), then start again",
                path.display()
            ),
        ));
    }
}
