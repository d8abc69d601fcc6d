//! Client mode's rules: no etcd needed, no address needed, a directory and members needed.
use std::path::{Path, PathBuf};

use super::tests::{base, TOKEN};
use super::*;
use crate::config::{ClientSection, Mode};

/// A consumer host: loopback only, no etcd installed.
struct ConsumerHost;

impl HostProbe for ConsumerHost {
    fn hostname(&self) -> Option<String> {
        Some("app-1".into())
    }
    fn detect_address(&self) -> Option<IpAddr> {
        None
    }
    fn is_local_address(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
    }
    fn find_executable(&self, _: &Path) -> Option<PathBuf> {
        None
    }
    fn etcd_version_output(&self, _: &Path) -> Result<String, String> {
        Err("no etcd".into())
    }
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn file_mode(&self, _: &Path) -> Option<u32> {
        None
    }
}

fn client(dir: Option<&str>) -> Config {
    Config {
        seed: false,
        token: Some(TOKEN.into()),
        join: vec!["10.0.0.1".into()],
        mode: Mode::Client,
        client: Some(ClientSection {
            dir: dir.map(PathBuf::from),
            ..ClientSection::default()
        }),
        ..base()
    }
}

fn subjects(config: &Config) -> Vec<String> {
    match validate(config, &ConsumerHost) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.subject()).collect(),
    }
}

#[test]
fn a_consumer_host_needs_no_etcd_and_no_address() {
    let v = validate(&client(Some("/etc/quorate/client")), &ConsumerHost).unwrap();
    let c = v.settings.client.unwrap();
    assert_eq!(c.name, "app-1", "the node name by default");
    assert_eq!(c.dir, PathBuf::from("/etc/quorate/client"));
    assert!(v.settings.bind.is_unspecified());
}

#[test]
fn a_client_that_would_seed_or_has_nowhere_to_write_is_refused() {
    let seeding = Config {
        seed: true,
        ..client(Some("/etc/quorate/client"))
    };
    assert_eq!(subjects(&seeding), ["seed"]);
    assert_eq!(subjects(&client(None)), ["client.dir"]);
    assert_eq!(subjects(&client(Some("relative/dir"))), ["client.dir"]);
    let alone = Config {
        join: vec![],
        ..client(Some("/etc/quorate/client"))
    };
    assert_eq!(subjects(&alone), ["join"]);
    let mut reserved = client(Some("/etc/quorate/client"));
    reserved.client.as_mut().unwrap().name = Some("quorate-x".into());
    assert_eq!(subjects(&reserved), ["client.name"]);
    let mut empty_hook = client(Some("/etc/quorate/client"));
    empty_hook.client.as_mut().unwrap().on_change = Some("  ".into());
    assert_eq!(subjects(&empty_hook), ["client.on_change"]);
}

#[test]
fn a_member_with_a_client_section_is_told_to_pick_one() {
    let member = Config {
        client: Some(ClientSection::default()),
        ..base()
    };
    assert_eq!(
        super::tests::subjects(&member, &super::tests::HOST),
        ["client"]
    );
}

#[test]
fn a_client_role_must_be_a_role_name_and_roles_belong_to_members() {
    let mut with_role = client(Some("/etc/quorate/client"));
    with_role.client.as_mut().unwrap().role = Some("dashboard".into());
    let v = validate(&with_role, &ConsumerHost).unwrap();
    assert_eq!(
        v.settings.client.unwrap().role.as_deref(),
        Some("dashboard")
    );
    for bad in ["root", "quorate-client", "", "a b"] {
        let mut c = client(Some("/etc/quorate/client"));
        c.client.as_mut().unwrap().role = Some(bad.into());
        assert_eq!(subjects(&c), ["client.role"], "{bad:?}");
    }
    let defining = Config {
        roles: vec![crate::etcd::roles::RoleDef {
            name: "app".into(),
            prefixes: vec!["/app/".into()],
            access: crate::etcd::roles::Access::Read,
            client_agents: false,
        }],
        ..client(Some("/etc/quorate/client"))
    };
    assert_eq!(subjects(&defining), ["roles"]);
}
