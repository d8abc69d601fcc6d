//! The `[[roles]]` rules: names etcd can hold and quorate does not use, unique, and prefixes
//! that never reach the agents' own keys (/quorate/).

use std::collections::BTreeSet;

use super::super::{Config, Mode};
use super::ConfigError;
use crate::etcd::roles::{canonical, prefix_problem, role_name_problem, RoleDef};

/// The roles in canonical order (empty on errors).
pub(super) fn resolve_roles(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<RoleDef> {
    let before = errors.len();
    if config.mode == Mode::Client && !config.roles.is_empty() {
        errors.push(ConfigError::invalid(
            "roles",
            format!("{} role(s)", config.roles.len()),
            "roles are defined by the members, and this agent is in client mode",
            "remove [[roles]] here and define them on every member; pick one with client.role",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, role) in config.roles.iter().enumerate() {
        let at = format!("[[roles]] #{}", i + 1);
        if let Some(problem) = role_name_problem(&role.name) {
            errors.push(ConfigError::invalid(
                "roles.name",
                format!("{:?} ({at})", role.name),
                problem,
                "name the role after what uses it, e.g. name = \"omni\"",
            ));
        } else if !seen.insert(role.name.clone()) {
            errors.push(ConfigError::invalid(
                "roles.name",
                format!("{:?} ({at})", role.name),
                "another [[roles]] entry has this name",
                "give each role its own name, or merge the two entries' prefixes",
            ));
        }
        if role.prefixes.is_empty() {
            errors.push(ConfigError::invalid(
                "roles.prefixes",
                format!("[] ({at}, {:?})", role.name),
                "a role without prefixes can reach no key",
                "list the key prefixes it may use, e.g. prefixes = [\"/omni/\"]",
            ));
        }
        for prefix in &role.prefixes {
            if let Some(problem) = prefix_problem(prefix) {
                errors.push(ConfigError::invalid(
                    "roles.prefixes",
                    format!("{prefix:?} ({at}, {:?})", role.name),
                    problem,
                    "use a prefix of the application's own keys, e.g. \"/omni/\" (for \
                     everything outside /quorate/, issue the certificate without a role)",
                ));
            }
        }
    }
    if errors.len() == before {
        canonical(config.roles.clone())
    } else {
        Vec::new()
    }
}
