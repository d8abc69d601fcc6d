//! Tests of the rules in the parent module.
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A host with 10.0.0.1 and loopback, etcd 3.4.23 at /usr/bin/etcd and a token file.
pub(super) struct FakeHost {
    pub(super) etcd_version: &'static str,
}

pub(super) const TOKEN: &str = "qrt1_Zx3kQ9vLm2Tq7Wc1Hn5Rb8Yd4Pf6Js0Ag3Ke9Uo2Ni";

impl HostProbe for FakeHost {
    fn hostname(&self) -> Option<String> {
        Some("host-a".into())
    }
    fn detect_address(&self) -> Option<IpAddr> {
        Some("10.0.0.1".parse().unwrap())
    }
    fn is_local_address(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip == "10.0.0.1".parse::<IpAddr>().unwrap()
    }
    fn find_executable(&self, binary: &Path) -> Option<PathBuf> {
        (binary == Path::new("etcd") || binary == Path::new("/usr/bin/etcd"))
            .then(|| PathBuf::from("/usr/bin/etcd"))
    }
    fn etcd_version_output(&self, _: &Path) -> Result<String, String> {
        Ok(format!(
            "etcd Version: {}\nGit SHA: x\nGo Version: go1.19\n",
            self.etcd_version
        ))
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        if path == Path::new("/etc/quorate/token") || path == Path::new("/etc/quorate/token-open") {
            Ok(format!("{TOKEN}\n"))
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }
    fn file_mode(&self, path: &Path) -> Option<u32> {
        match path.to_str()? {
            "/etc/quorate/token" | "/etc/quorate/ca-key.pem" => Some(0o600),
            "/etc/quorate/token-open" => Some(0o644),
            "/etc/quorate/ca-key-open.pem" => Some(0o640),
            _ => None,
        }
    }
}

#[test]
fn secret_files_readable_by_others_are_refused_with_the_fix() {
    let with_file = |path: &str| Config {
        token: None,
        token_file: Some(PathBuf::from(path)),
        ..base()
    };
    assert!(validate(&with_file("/etc/quorate/token"), &HOST).is_ok());
    let e = validate(&with_file("/etc/quorate/token-open"), &HOST).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("token_file")
            && text.contains("mode 0644")
            && text.contains("chmod 600 /etc/quorate/token-open"),
        "{text}"
    );
    let mut c = base();
    c.pki.ca_key_file = Some(PathBuf::from("/etc/quorate/ca-key-open.pem"));
    c.pki.ca_cert_file = Some(PathBuf::from("/etc/quorate/ca.pem"));
    assert!(
        subjects(&c, &HOST).contains(&"pki.ca_key_file".to_owned()),
        "{:?}",
        subjects(&c, &HOST)
    );
    c.pki.ca_key_file = Some(PathBuf::from("/etc/quorate/ca-key.pem"));
    assert!(!subjects(&c, &HOST).contains(&"pki.ca_key_file".to_owned()));
}

pub(super) const HOST: FakeHost = FakeHost {
    etcd_version: "3.4.23",
};

pub(super) fn base() -> Config {
    Config {
        seed: true,
        token: Some(TOKEN.into()),
        ..Config::default()
    }
}

pub(super) fn subjects(config: &Config, host: &FakeHost) -> Vec<String> {
    match validate(config, host) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.subject()).collect(),
    }
}

#[test]
fn defaults_resolve_from_the_host() {
    let v = validate(&base(), &HOST).unwrap();
    let s = v.settings;
    assert_eq!(s.name, "host-a");
    assert_eq!(s.advertise, "10.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(s.bind, s.advertise);
    assert_eq!(s.peer_url(), "https://10.0.0.1:2380");
    assert_eq!(s.client_url(), "https://10.0.0.1:2379");
    assert_eq!(s.etcd.binary, PathBuf::from("/usr/bin/etcd"));
    assert_eq!(s.etcd.version, (3, 4, 23));
    assert!(v.warnings.is_empty());
}

#[test]
fn token_sources() {
    let mut c = base();
    c.token = None;
    assert_eq!(subjects(&c, &HOST), vec!["token"]);
    let err = validate(&c, &HOST).unwrap_err().to_string();
    assert!(err.contains("quorate token generate"), "{err}");

    c.token_file = Some("/etc/quorate/token".into());
    assert!(validate(&c, &HOST).is_ok());

    c.token = Some(TOKEN.into());
    assert_eq!(subjects(&c, &HOST), vec!["token"]);

    c.token = None;
    c.token_file = Some("/missing".into());
    assert_eq!(subjects(&c, &HOST), vec!["token_file"]);

    c.token_file = None;
    c.token = Some("short".into());
    assert_eq!(subjects(&c, &HOST), vec!["token"]);
}

#[test]
fn bootstrap_expect_rules() {
    let mut c = base();
    c.bootstrap_expect = 0;
    assert_eq!(subjects(&c, &HOST), vec!["bootstrap_expect"]);
    c.bootstrap_expect = 4;
    let v = validate(&c, &HOST).unwrap();
    assert_eq!(v.warnings.len(), 1);
    assert!(v.warnings[0].contains("even"), "{:?}", v.warnings);
    c.bootstrap_expect = 1;
    assert!(validate(&c, &HOST).unwrap().warnings.is_empty());
}

#[test]
fn addresses_must_be_on_this_host() {
    let mut c = base();
    c.advertise_addr = Some("192.0.2.7".parse().unwrap());
    assert_eq!(subjects(&c, &HOST), vec!["advertise_addr"]);
    let err = validate(&c, &HOST).unwrap_err().to_string();
    assert!(
        err.contains("192.0.2.7") && err.contains("not on this host"),
        "{err}"
    );

    c.advertise_addr = Some("0.0.0.0".parse().unwrap());
    assert_eq!(subjects(&c, &HOST), vec!["advertise_addr"]);

    let mut c = base();
    c.bind_addr = Some("192.0.2.7".parse().unwrap());
    assert_eq!(subjects(&c, &HOST), vec!["bind_addr"]);
    c.bind_addr = Some("0.0.0.0".parse().unwrap());
    assert!(validate(&c, &HOST).is_ok());
    // The IPv6 wildcard also accepts IPv4 (dual stack); a specific IPv6 address does not.
    c.bind_addr = Some("::".parse().unwrap());
    assert!(validate(&c, &HOST).is_ok());
    c.bind_addr = Some("::1".parse().unwrap());
    assert_eq!(subjects(&c, &HOST), vec!["bind_addr"]);
}

#[test]
fn join_rules() {
    let mut c = base();
    c.seed = false;
    assert_eq!(subjects(&c, &HOST), vec!["join"]);
    c.join = vec!["10.0.0.2".into(), "bad host".into()];
    assert_eq!(subjects(&c, &HOST), vec!["join"]);
    c.join = vec!["10.0.0.2".into(), "[fd00::3]:7000".into()];
    let s = validate(&c, &HOST).unwrap().settings;
    assert_eq!(s.join.len(), 2);
    // A single-node cluster needs nobody to join.
    c.join.clear();
    c.bootstrap_expect = 1;
    assert!(validate(&c, &HOST).is_ok());
}

#[test]
fn node_name_rules() {
    let mut c = base();
    for bad in ["", "-a", "a b", "a,b", "a=b", &"x".repeat(64)] {
        c.node_name = Some(bad.into());
        assert_eq!(subjects(&c, &HOST), vec!["node_name"], "{bad:?}");
    }
    c.node_name = Some("etcd-1.dc_2".into());
    assert!(validate(&c, &HOST).is_ok());
}

#[test]
fn etcd_binary_rules() {
    let mut c = base();
    c.etcd.binary = "/opt/etcd".into();
    let err = validate(&c, &HOST).unwrap_err().to_string();
    assert!(err.contains("etcd.binary") && err.contains("apt-get install etcd-server"));
    let old = FakeHost {
        etcd_version: "3.3.25",
    };
    let err = validate(&base(), &old).unwrap_err().to_string();
    assert!(err.contains("3.3.25 is too old"), "{err}");
    let newer = FakeHost {
        etcd_version: "3.5.17",
    };
    assert!(validate(&base(), &newer).is_ok());
}

#[test]
fn version_parsing() {
    assert_eq!(
        parse_etcd_version("etcd Version: 3.4.23\nGit SHA: x"),
        Some((3, 4, 23))
    );
    assert_eq!(
        parse_etcd_version("etcd Version: 3.6.0-rc.1\n"),
        Some((3, 6, 0))
    );
    assert_eq!(parse_etcd_version("etcdctl version: 3.4.23"), None);
}

#[test]
fn ports_and_pki_rules() {
    let mut c = base();
    c.ports.peer = c.ports.client;
    assert_eq!(subjects(&c, &HOST), vec!["ports.peer"]);
    let mut c = base();
    c.ports.gossip = 0;
    assert_eq!(subjects(&c, &HOST), vec!["ports.gossip"]);
    let mut c = base();
    c.pki.ca_cert_file = Some("/ca.pem".into());
    assert_eq!(subjects(&c, &HOST), vec!["pki.ca_cert_file"]);
    let mut c = base();
    c.pki.ca_validity = c.pki.client_validity();
    assert_eq!(subjects(&c, &HOST), vec!["pki.ca_validity"]);
    let mut c = base();
    c.ca_hash = Some("md5:abc".into());
    assert_eq!(subjects(&c, &HOST), vec!["ca_hash"]);
}

#[test]
fn all_problems_are_reported_together() {
    let mut c = Config {
        bootstrap_expect: 0,
        state_dir: "relative".into(),
        ..Config::default()
    };
    c.ports.client = 0;
    let subjects = subjects(&c, &HOST);
    for s in ["bootstrap_expect", "token", "state_dir", "ports.client"] {
        assert!(
            subjects.contains(&s.to_string()),
            "{s} missing: {subjects:?}"
        );
    }
}

#[test]
fn extra_args_cannot_override_rendered_flags() {
    for bad in [
        "--wal-dir=/ssd/wal",
        "--data-dir",
        "-initial-cluster-state=new",
        "--name=x",
    ] {
        let mut c = base();
        c.etcd.extra_args = vec![bad.into()];
        assert_eq!(subjects(&c, &HOST), vec!["etcd.extra_args"], "{bad}");
    }
    let mut c = base();
    c.etcd.extra_args = vec![
        "--quota-backend-bytes=8589934592".into(),
        "--auto-compaction-retention=1".into(),
    ];
    assert!(validate(&c, &HOST).is_ok());
}

#[test]
fn defrag_min_reclaim_defaults_to_100mib_and_bad_sizes_name_the_key() {
    let v = validate(&base(), &HOST).unwrap();
    assert_eq!(v.settings.maintenance.defrag_min_reclaim, 100 << 20);
    let mut c = base();
    c.maintenance.defrag_min_reclaim = Some(crate::config::SizeText::from("1GiB"));
    let v = validate(&c, &HOST).unwrap();
    assert_eq!(v.settings.maintenance.defrag_min_reclaim, 1 << 30);
    for bad in ["lots", "0", "-5MiB"] {
        let mut c = base();
        c.maintenance.defrag_min_reclaim = Some(crate::config::SizeText::from(bad));
        assert_eq!(
            subjects(&c, &HOST),
            vec!["maintenance.defrag_min_reclaim"],
            "{bad}"
        );
        let e = validate(&c, &HOST).unwrap_err().0[0].to_string();
        assert!(e.contains("100MiB"), "the fix names the default: {e}");
    }
}

#[test]
fn snapshot_defaults_to_six_hourly_28_files_under_the_state_dir() {
    let c = base();
    let v = validate(&c, &HOST).unwrap();
    let s = &v.settings.snapshot;
    assert_eq!(s.schedule_text, "0 */6 * * *");
    assert!(matches!(s.schedule, Some(crate::jobs::Schedule::Cron(_))));
    assert_eq!(s.retain, 28);
    assert_eq!(s.dir, c.state_dir.join("snapshots"));
}

#[test]
fn snapshot_every_off_and_explicit_dir() {
    let mut c = base();
    c.snapshot.schedule = Some("@every 30s".into());
    c.snapshot.retain = Some(2);
    c.snapshot.dir = Some("/var/backups/quorate".into());
    let s = validate(&c, &HOST).unwrap().settings.snapshot;
    assert_eq!(
        s.schedule,
        Some(crate::jobs::Schedule::Every(
            std::time::Duration::from_secs(30)
        ))
    );
    assert_eq!(s.retain, 2);
    assert_eq!(s.dir, std::path::PathBuf::from("/var/backups/quorate"));
    c.snapshot.schedule = Some(String::new());
    assert_eq!(
        validate(&c, &HOST).unwrap().settings.snapshot.schedule,
        None
    );
}

#[test]
fn bad_snapshot_settings_name_the_key_and_the_fix() {
    for bad in ["0 */6 * *", "@every soon", "@every 10ms", "hourly"] {
        let mut c = base();
        c.snapshot.schedule = Some(bad.into());
        assert_eq!(subjects(&c, &HOST), vec!["snapshot.schedule"], "{bad}");
        let e = validate(&c, &HOST).unwrap_err().0[0].to_string();
        assert!(e.contains("0 */6 * * *") && e.contains("@every 30s"), "{e}");
    }
    let mut c = base();
    c.snapshot.retain = Some(0);
    assert_eq!(subjects(&c, &HOST), vec!["snapshot.retain"]);
    let mut c = base();
    c.snapshot.dir = Some("snapshots".into());
    assert_eq!(subjects(&c, &HOST), vec!["snapshot.dir"]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let mut c = base();
    c.snapshot.encryption_key_file = Some(key.clone());
    assert_eq!(subjects(&c, &HOST), vec!["snapshot.encryption_key_file"]);
    let e = validate(&c, &HOST).unwrap_err().0[0].to_string();
    assert!(e.contains("age-keygen -o"), "{e}");
    std::fs::write(&key, "AGE-SECRET-KEY-1 not really\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = validate(&c, &HOST).unwrap_err().0[0].to_string();
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn node_and_client_lifetimes_default_apart_and_the_old_key_still_works_with_a_warning() {
    let v = validate(&base(), &HOST).unwrap();
    assert_eq!(
        v.settings.pki.node_validity(),
        crate::config::DEFAULT_NODE_CERT_VALIDITY
    );
    assert_eq!(
        v.settings.pki.client_validity(),
        crate::config::DEFAULT_CLIENT_CERT_VALIDITY
    );
    assert_eq!(
        crate::config::DEFAULT_NODE_CERT_VALIDITY.as_secs(),
        90 * 86_400
    );
    assert!(v.warnings.iter().all(|w| !w.contains("cert_validity")));
    let week = std::time::Duration::from_secs(7 * 86_400);
    let mut old = base();
    old.pki.cert_validity = Some(week);
    old.pki.client_cert_validity = Some(week * 2);
    let v = validate(&old, &HOST).unwrap();
    assert_eq!(v.settings.pki.node_validity(), week);
    assert_eq!(
        v.settings.pki.client_validity(),
        week * 2,
        "the new key wins"
    );
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("pki.cert_validity is deprecated")
                && w.contains("pki.node_cert_validity")),
        "{:?}",
        v.warnings
    );
    // Errors name the key the lifetime came from.
    let mut short = base();
    short.pki.cert_validity = Some(std::time::Duration::from_secs(5));
    assert!(subjects(&short, &HOST).contains(&"pki.cert_validity".to_owned()));
    let mut short = base();
    short.pki.node_cert_validity = Some(std::time::Duration::from_secs(5));
    assert_eq!(subjects(&short, &HOST), vec!["pki.node_cert_validity"]);
}

#[test]
fn a_pinned_token_pins_the_ca_unless_ca_hash_disagrees() {
    let pin = format!("sha256:{}", "ab".repeat(32));
    let mut c = base();
    c.token = Some(format!("qrt1:{pin}:{TOKEN}"));
    let v = validate(&c, &HOST).unwrap();
    assert_eq!(v.settings.ca_pin.map(|p| p.to_string()), Some(pin.clone()));
    assert_eq!(v.settings.token.primary(), JoinToken::parse(TOKEN).unwrap());
    c.ca_hash = Some(pin.clone());
    assert!(validate(&c, &HOST).is_ok(), "the same pin twice is fine");
    c.ca_hash = Some(format!("sha256:{}", "cd".repeat(32)));
    let e = validate(&c, &HOST).unwrap_err().to_string();
    assert!(
        e.contains("names another CA") && e.contains("drop ca_hash"),
        "{e}"
    );
    let mut weak = base();
    weak.token = Some("qrt1_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into());
    assert_eq!(subjects(&weak, &HOST), vec!["token"]);
}
