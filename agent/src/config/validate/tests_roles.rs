//! `[[roles]]`: names, uniqueness and prefixes that stay out of /quorate/, from TOML.
use super::tests::{base, subjects, HOST};
use super::*;
use crate::etcd::roles::{Access, RoleDef};

fn with_roles(toml_roles: &str) -> Config {
    let parsed: Config = toml::from_str(toml_roles).expect("roles parse");
    Config {
        roles: parsed.roles,
        ..base()
    }
}

#[test]
fn roles_from_toml_come_out_in_canonical_order() {
    let config = with_roles(
        r#"
        [[roles]]
        name = "omni"
        prefixes = ["/omni/", "/talos/", "/omni/"]
        access = "readwrite"

        [[roles]]
        name = "audit"
        prefixes = ["/omni/"]
        access = "read"
        "#,
    );
    let v = validate(&config, &HOST).unwrap();
    assert_eq!(
        v.settings.roles,
        vec![
            RoleDef {
                name: "audit".into(),
                prefixes: vec!["/omni/".into()],
                access: Access::Read,
                client_agents: false,
            },
            RoleDef {
                name: "omni".into(),
                prefixes: vec!["/omni/".into(), "/talos/".into()],
                access: Access::ReadWrite,
                client_agents: false,
            },
        ]
    );
}

#[test]
fn bad_roles_are_refused_naming_the_field() {
    let role = |name: &str, prefixes: &[&str]| RoleDef {
        name: name.into(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        access: Access::Read,
        client_agents: false,
    };
    for (roles, want) in [
        (vec![role("root", &["/a/"])], vec!["roles.name"]),
        (vec![role("quorate-x", &["/a/"])], vec!["roles.name"]),
        (
            vec![role("a", &["/a/"]), role("a", &["/b/"])],
            vec!["roles.name"],
        ),
        (vec![role("a", &[])], vec!["roles.prefixes"]),
        (vec![role("a", &["/"])], vec!["roles.prefixes"]),
        (vec![role("a", &["/quorate/ca"])], vec!["roles.prefixes"]),
        (vec![role("a", &["", "/ok/"])], vec!["roles.prefixes"]),
    ] {
        let config = Config {
            roles: roles.clone(),
            ..base()
        };
        assert_eq!(subjects(&config, &HOST), want, "{roles:?}");
    }
}

#[test]
fn an_unknown_access_or_field_is_a_parse_error() {
    for bad in [
        "[[roles]]\nname = \"a\"\nprefixes = [\"/a/\"]\naccess = \"write\"\n",
        "[[roles]]\nname = \"a\"\nprefixes = [\"/a/\"]\n",
        "[[roles]]\nname = \"a\"\nprefix = [\"/a/\"]\naccess = \"read\"\n",
    ] {
        assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
    }
}
