//! The `mode` and `[client]` rules: a client-mode agent keeps a consumer host's certificate and
//! endpoint files fresh, so it needs a directory and the members to ask, and may not seed.

use super::super::settings::ClientSettings;
use super::super::{Config, Mode};
use super::ConfigError;
use crate::etcd::roles::role_name_problem;

/// The resolved `[client]` section in client mode (None for a member, or on errors).
pub(super) fn resolve_client(
    config: &Config,
    node_name: Option<&str>,
    errors: &mut Vec<ConfigError>,
) -> Option<ClientSettings> {
    if config.mode == Mode::Member {
        if config.client.is_some() {
            errors.push(ConfigError::invalid(
                "client",
                "[client]",
                "the [client] section is for client-mode agents, and mode is \"member\"",
                "set mode = \"client\" on a consumer host, or remove [client] on a member",
            ));
        }
        return None;
    }
    let before = errors.len();
    if config.seed {
        errors.push(ConfigError::invalid(
            "seed",
            true,
            "a client-mode agent never runs etcd, so it cannot seed a cluster",
            "remove seed = true (the seed is one of the members), or set mode = \"member\"",
        ));
    }
    if config.join.is_empty() {
        errors.push(ConfigError::invalid(
            "join",
            "[]",
            "a client-mode agent finds the cluster only through the members it is given",
            "list one or more members' addresses, e.g. join = [\"10.0.0.1\", \"10.0.0.2\"]",
        ));
    }
    let section = config.client.clone().unwrap_or_default();
    let dir = match section.dir {
        None => {
            errors.push(ConfigError::invalid(
                "client.dir",
                "(unset)",
                "a client-mode agent needs a directory for the certificate, key and endpoints",
                "set client.dir, e.g. dir = \"/etc/quorate/client\" in [client]",
            ));
            None
        }
        Some(dir) if !dir.is_absolute() => {
            errors.push(ConfigError::invalid(
                "client.dir",
                dir.display(),
                "must be an absolute path",
                "use an absolute path such as /etc/quorate/client",
            ));
            None
        }
        Some(dir) => Some(dir),
    };
    let name = section.name.or(node_name.map(str::to_owned));
    if let Some(n) = &name {
        if let Some(problem) = crate::api::sign::client_name_problem(n) {
            errors.push(ConfigError::invalid(
                "client.name",
                format!("{n:?}"),
                problem,
                "set client.name to the name the consumer should have in etcd, e.g. \"omni\"",
            ));
        }
    }
    if let Some(problem) = section.role.as_deref().and_then(role_name_problem) {
        errors.push(ConfigError::invalid(
            "client.role",
            format!("{:?}", section.role.as_deref().unwrap_or_default()),
            problem,
            "set client.role to one of the members' [[roles]] names, or remove it for the \
             default role (everything outside /quorate/)",
        ));
    }
    if matches!(&section.on_change, Some(c) if c.trim().is_empty()) {
        errors.push(ConfigError::invalid(
            "client.on_change",
            "\"\"",
            "an empty command",
            "remove on_change, or give a command such as \"systemctl reload omni\"",
        ));
    }
    match (name, dir) {
        (Some(name), Some(dir)) if errors.len() == before => Some(ClientSettings {
            name,
            dir,
            on_change: section.on_change,
            role: section.role,
        }),
        _ => None,
    }
}
