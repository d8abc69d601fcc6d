//! Tests of `[snapshot.s3]` validation.
use super::tests::{base, HOST};
use super::*;
use crate::config::{S3Credentials, S3Section};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The fake host, but credential files are real files (their modes matter).
struct RealFiles;

impl HostProbe for RealFiles {
    fn hostname(&self) -> Option<String> {
        HOST.hostname()
    }
    fn detect_address(&self) -> Option<IpAddr> {
        HOST.detect_address()
    }
    fn is_local_address(&self, ip: IpAddr) -> bool {
        HOST.is_local_address(ip)
    }
    fn find_executable(&self, binary: &Path) -> Option<PathBuf> {
        HOST.find_executable(binary)
    }
    fn etcd_version_output(&self, binary: &Path) -> Result<String, String> {
        HOST.etcd_version_output(binary)
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

fn with_s3(s3: S3Section) -> Config {
    let mut c = base();
    c.snapshot.retain = Some(5);
    c.snapshot.s3 = Some(s3);
    c
}

fn bucket(b: &str) -> S3Section {
    S3Section {
        bucket: Some(b.into()),
        ..S3Section::default()
    }
}

fn errors(c: &Config) -> String {
    validate(c, &RealFiles).unwrap_err().to_string()
}

#[test]
fn defaults_for_aws_and_for_an_endpoint() {
    let s = validate(&with_s3(bucket("etcd-backups")), &RealFiles)
        .unwrap()
        .settings;
    let s3 = s.snapshot.s3.unwrap();
    assert_eq!(s3.bucket, "etcd-backups");
    assert_eq!(s3.prefix, "quorate/");
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(s3.endpoint, None);
    assert!(!s3.path_style, "AWS itself: virtual-hosted style");
    assert_eq!(s3.retain, 5, "snapshot.retain is the default");
    assert!(!s3.allow_http);
    assert_eq!(s3.credentials, None);
    assert_eq!(s3.location(), "s3://etcd-backups/quorate/");

    let c = with_s3(S3Section {
        endpoint: Some("https://minio.lan:9000/".into()),
        prefix: Some("prod".into()),
        region: Some("eu-west-1".into()),
        retain: Some(9),
        ..bucket("b-1.x")
    });
    let s3 = validate(&c, &RealFiles)
        .unwrap()
        .settings
        .snapshot
        .s3
        .unwrap();
    assert_eq!(s3.endpoint.as_deref(), Some("https://minio.lan:9000"));
    assert!(s3.path_style, "an endpoint: path style");
    assert_eq!(s3.prefix, "prod/");
    assert_eq!(s3.region, "eu-west-1");
    assert_eq!(s3.retain, 9);
    // No [snapshot.s3]: no upload.
    assert!(validate(&base(), &HOST)
        .unwrap()
        .settings
        .snapshot
        .s3
        .is_none());
}

#[test]
fn the_toml_section_reads_back() {
    let text = r#"
        [snapshot.s3]
        endpoint = "http://127.0.0.1:9000"
        bucket = "bkt"
        allow_http = true
        path_style = false
    "#;
    let parsed: Config = toml::from_str(text).unwrap();
    let s3 = parsed.snapshot.s3.unwrap();
    assert_eq!(s3.allow_http, Some(true));
    assert_eq!(s3.path_style, Some(false));
    assert!(toml::from_str::<Config>("[snapshot.s3]\nbuckett = \"x\"\n").is_err());
}

#[test]
fn bad_values_name_the_field_and_the_fix() {
    let e = errors(&with_s3(S3Section::default()));
    assert!(
        e.contains("snapshot.s3.bucket") && e.contains("needs a bucket"),
        "{e}"
    );
    for (b, why) in [
        ("ab", "3 to 63"),
        ("Backups", "'B' is not allowed"),
        ("-abc", "starts and ends"),
        ("a..b", "\"..\""),
    ] {
        let e = errors(&with_s3(bucket(b)));
        assert!(
            e.contains("snapshot.s3.bucket") && e.contains(why),
            "{b}: {e}"
        );
    }
    for (endpoint, why) in [
        ("minio.lan:9000", "scheme"),
        ("not a url", "not a URL"),
        ("ftp://host", "neither https nor http"),
        ("https://host/bucket", "carries a path"),
        ("https://host?x=1", "query"),
        ("http://127.0.0.1:9000", "allow_http = true"),
    ] {
        let e = errors(&with_s3(S3Section {
            endpoint: Some(endpoint.into()),
            ..bucket("bkt")
        }));
        assert!(
            e.contains("snapshot.s3.endpoint") && e.contains(why),
            "{endpoint}: {e}"
        );
    }
    let ok = with_s3(S3Section {
        endpoint: Some("http://127.0.0.1:9000".into()),
        allow_http: Some(true),
        ..bucket("bkt")
    });
    assert!(validate(&ok, &RealFiles).is_ok());
    let e = errors(&with_s3(S3Section {
        prefix: Some("/abs/".into()),
        ..bucket("bkt")
    }));
    assert!(
        e.contains("snapshot.s3.prefix") && e.contains("no leading '/'"),
        "{e}"
    );
    let e = errors(&with_s3(S3Section {
        region: Some("".into()),
        ..bucket("bkt")
    }));
    assert!(e.contains("snapshot.s3.region"), "{e}");
    let e = errors(&with_s3(S3Section {
        retain: Some(0),
        ..bucket("bkt")
    }));
    assert!(
        e.contains("snapshot.s3.retain") && e.contains("1 or more"),
        "{e}"
    );
}

#[test]
fn credentials_come_from_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    let secret = dir.path().join("secret");
    std::fs::write(&id, "AKIAEXAMPLE\n").unwrap();
    std::fs::write(&secret, "  s3cr3t \n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let files = S3Section {
        access_key_id_file: Some(id.clone()),
        secret_access_key_file: Some(secret.clone()),
        ..bucket("bkt")
    };
    let s3 = validate(&with_s3(files.clone()), &RealFiles)
        .unwrap()
        .settings
        .snapshot
        .s3
        .unwrap();
    let creds = s3.credentials.unwrap();
    assert_eq!(creds.access_key_id, "AKIAEXAMPLE");
    assert_eq!(creds.secret_access_key.expose(), "s3cr3t");
    assert!(
        !format!("{creds:?}").contains("s3cr3t"),
        "the secret never shows"
    );

    // World-readable secret: refused with the chmod that fixes it.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = errors(&with_s3(files.clone()));
    assert!(
        e.contains("snapshot.s3.secret_access_key_file") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Empty, missing, or only one of the two.
    std::fs::write(&id, " \n").unwrap();
    let e = errors(&with_s3(files.clone()));
    assert!(
        e.contains("access_key_id_file") && e.contains("empty"),
        "{e}"
    );
    let e = errors(&with_s3(S3Section {
        access_key_id_file: Some(dir.path().join("nope")),
        ..files.clone()
    }));
    assert!(e.contains("cannot read it"), "{e}");
    let e = errors(&with_s3(S3Section {
        secret_access_key_file: None,
        ..files
    }));
    assert!(e.contains("secret_access_key_file is not set"), "{e}");
}

#[test]
fn credentials_fall_back_to_the_aws_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let c = S3Credentials::from_env(env(&[
        ("AWS_ACCESS_KEY_ID", "id"),
        ("AWS_SECRET_ACCESS_KEY", "sec"),
        ("AWS_SESSION_TOKEN", "tok"),
    ]))
    .unwrap();
    assert_eq!(c.access_key_id, "id");
    assert_eq!(c.session_token.unwrap().expose(), "tok");
    assert!(S3Credentials::from_env(env(&[("AWS_ACCESS_KEY_ID", "id")])).is_none());
    assert!(S3Credentials::from_env(env(&[
        ("AWS_ACCESS_KEY_ID", "id"),
        ("AWS_SECRET_ACCESS_KEY", "")
    ]))
    .is_none());
}
