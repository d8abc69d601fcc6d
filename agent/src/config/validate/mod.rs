//! Validation: the rules a configuration must satisfy, checked against the host through
//! [`HostProbe`]. All problems are collected, so the operator fixes them in one round; things
//! that work but are unwise (an even cluster size) come back as warnings.

use std::net::IpAddr;

use super::error::{ConfigError, ConfigErrors};
use super::host::HostProbe;
use super::settings::{JoinTarget, MaintenanceSettings, Settings, SnapshotSettings};
use super::size::{parse_size, SizeText};
use super::{Config, DEFAULT_DEFRAG_MIN_RECLAIM, DEFAULT_SNAPSHOT_RETAIN};
use crate::pki::CaHash;
use crate::token::JoinToken;

mod client;
mod etcd;
mod roles;
mod s3;

pub use etcd::{parse_etcd_version, MIN_ETCD_VERSION};

/// Settings plus the warnings to show at start.
#[derive(Debug)]
pub struct Validated {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

/// Checks `config` against the host and resolves it into [`Settings`].
pub fn validate(config: &Config, host: &dyn HostProbe) -> Result<Validated, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let name = resolve_name(config, host, &mut errors);
    let advertise = resolve_advertise(config, host, &mut errors);
    let bind = config.bind_addr.or(advertise);
    if let Some(bind) = config.bind_addr {
        if !bind.is_unspecified() && !host.is_local_address(bind) {
            errors.push(ConfigError::invalid(
                "bind_addr",
                bind,
                "this address is not on this host",
                "use one of this host's addresses, or 0.0.0.0 / :: for all of them",
            ));
        }
    }

    match config.bootstrap_expect {
        0 => errors.push(ConfigError::invalid(
            "bootstrap_expect",
            0,
            "a cluster needs at least one member",
            "set it to the number of hosts that form the cluster, usually 3 or 5",
        )),
        n if n % 2 == 0 => warnings.push(format!(
            "bootstrap_expect = {n} is even: {n} members tolerate no more failures than {}; \
             3 or 5 is the usual choice",
            n - 1
        )),
        n if n > 9 => warnings.push(format!(
            "bootstrap_expect = {n}: etcd clusters larger than 7 voting members slow down writes \
             without adding useful fault tolerance"
        )),
        _ => {}
    }

    let join = resolve_join(config, &mut errors);
    let (token, token_pin) = resolve_token(config, host, &mut errors).unzip();
    let token_pin = token_pin.flatten();
    let ca_pin = config.ca_hash.as_deref().and_then(|raw| {
        raw.parse::<CaHash>()
            .map_err(|e| {
                errors.push(ConfigError::invalid(
                    "ca_hash",
                    raw,
                    e.to_string(),
                    "copy the value printed as `ca_hash` by `quorate status` on a member, \
                     e.g. sha256:3f2a...",
                ))
            })
            .ok()
    });
    // The pinned token form carries the CA hash: it pins like ca_hash, and the two must agree.
    let ca_pin = match (ca_pin, token_pin) {
        (Some(a), Some(b)) if a != b => {
            errors.push(ConfigError::invalid(
                "ca_hash",
                a,
                format!("the pinned join token names another CA, {b}"),
                "drop ca_hash (the token carries the pin), or use the token of this cluster",
            ));
            Some(a)
        }
        (a, b) => a.or(b),
    };

    check_ports(config, &mut errors);
    check_pki(config, &mut errors);
    if config.pki.cert_validity.is_some() {
        warnings.push(
            "pki.cert_validity is deprecated: it still sets the lifetime of node and client \
             certificates where pki.node_cert_validity and pki.client_cert_validity are not \
             set. Fix: replace it with those two (defaults 90days and 1year)"
                .to_owned(),
        );
    }
    if let Some(key) = &config.pki.ca_key_file {
        private_file("pki.ca_key_file", key, host, &mut errors);
    }
    if !config.state_dir.is_absolute() {
        errors.push(ConfigError::invalid(
            "state_dir",
            config.state_dir.display(),
            "must be an absolute path",
            "use an absolute path such as /var/lib/quorate",
        ));
    }
    if let Some(d) = config.remove_dead_after {
        if d.as_secs() < 60 {
            errors.push(ConfigError::invalid(
                "remove_dead_after",
                humantime::format_duration(d),
                "too short: a host that reboots would be removed from the cluster",
                "use at least a few minutes (e.g. \"30m\"), or remove the setting",
            ));
        }
    }
    if tracing_subscriber::EnvFilter::try_new(&config.log.level).is_err() {
        errors.push(ConfigError::invalid(
            "log.level",
            &config.log.level,
            "not a log filter",
            "use error, warn, info, debug or trace (or a filter like quorate=debug,etcd=warn)",
        ));
    }
    let client = client::resolve_client(config, name.as_deref(), &mut errors);
    let roles = roles::resolve_roles(config, &mut errors);
    // A client host runs no etcd, so it needs no binary.
    let etcd = if config.mode == super::Mode::Client {
        Some(super::EtcdSettings::not_run())
    } else {
        etcd::resolve_etcd(config, host, &mut errors, &mut warnings)
    };
    let maintenance = resolve_maintenance(config, &mut errors);
    let snapshot = resolve_snapshot(config, host, &mut errors);

    match (name, advertise, bind, token, etcd, maintenance, snapshot) {
        (
            Some(name),
            Some(advertise),
            Some(bind),
            Some(token),
            Some(etcd),
            Some(maintenance),
            Some(snapshot),
        ) if errors.is_empty() => {
            if advertise.is_ipv4() != bind.is_ipv4() && !bind.is_unspecified() {
                return Err(ConfigError::invalid(
                    "bind_addr",
                    bind,
                    format!("its address family differs from advertise_addr {advertise}"),
                    "bind an address of the same family, or :: / 0.0.0.0",
                )
                .into());
            }
            Ok(Validated {
                settings: Settings {
                    name,
                    advertise,
                    bind,
                    seed: config.seed,
                    bootstrap_expect: config.bootstrap_expect,
                    join,
                    token: crate::keyring::TokenKeys::fixed(crate::keyring::Keyring::single(
                        token.clone(),
                    )),
                    config_token: token,
                    ca_pin,
                    state_dir: config.state_dir.clone(),
                    remove_dead_after: config.remove_dead_after,
                    ports: config.ports,
                    etcd,
                    health_listen: config.health.listen,
                    pki: config.pki.clone(),
                    log: config.log.clone(),
                    maintenance,
                    snapshot,
                    restore_from: config.restore_from.clone(),
                    restore_new_ca: config.restore_new_ca,
                    client,
                    roles,
                },
                warnings,
            })
        }
        _ => Err(ConfigErrors(errors)),
    }
}

/// Resolves the `[maintenance]` section.
fn resolve_maintenance(
    config: &Config,
    errors: &mut Vec<ConfigError>,
) -> Option<MaintenanceSettings> {
    const KEY: &str = "maintenance.defrag_min_reclaim";
    let text = config
        .maintenance
        .defrag_min_reclaim
        .clone()
        .unwrap_or_else(|| SizeText::from(DEFAULT_DEFRAG_MIN_RECLAIM));
    match parse_size(&text.0) {
        Ok(defrag_min_reclaim) => Some(MaintenanceSettings { defrag_min_reclaim }),
        Err(problem) => {
            errors.push(ConfigError::invalid(
                KEY,
                text,
                problem.to_string(),
                "write a size such as \"100MiB\" (the default), \"1GiB\" or a number of \
                 bytes: the least a fragmented member must give back to be defragmented",
            ));
            None
        }
    }
}

/// Resolves the `[snapshot]` section.
fn resolve_snapshot(
    config: &Config,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<SnapshotSettings> {
    let text = config
        .snapshot
        .schedule
        .clone()
        .unwrap_or_else(|| crate::snapshot::schedule::DEFAULT_SCHEDULE.to_owned());
    let schedule = match crate::snapshot::schedule::parse(&text) {
        Ok(schedule) => Some(schedule),
        Err(problem) => {
            errors.push(ConfigError::invalid(
                "snapshot.schedule",
                format!("{text:?}"),
                problem.to_string(),
                "write a 5-field cron expression in UTC such as \"0 */6 * * *\" (the default), \
                 \"@every 30s\", or \"\" to turn snapshots off",
            ));
            None
        }
    };
    let retain = config.snapshot.retain.unwrap_or(DEFAULT_SNAPSHOT_RETAIN);
    if retain == 0 {
        errors.push(ConfigError::invalid(
            "snapshot.retain",
            retain,
            "at least the newest snapshot is always kept",
            "set retain to 1 or more (default 28), or schedule = \"\" to take none",
        ));
        return None;
    }
    let explicit = config.snapshot.dir.clone();
    let dir = explicit
        .clone()
        .unwrap_or_else(|| config.state_dir.join("snapshots"));
    if explicit.is_some() && !dir.is_absolute() {
        errors.push(ConfigError::invalid(
            "snapshot.dir",
            dir.display(),
            "not an absolute path",
            "write an absolute directory, or leave it unset for <state_dir>/snapshots",
        ));
        return None;
    }
    let s3 = match &config.snapshot.s3 {
        Some(section) => Some(s3::resolve_s3(section, retain, host, errors)?),
        None => None,
    };
    let encryption_key_file = config.snapshot.encryption_key_file.clone();
    if let Some(path) = &encryption_key_file {
        if let Some(problem) = crate::snapshot::key_check::problem(path) {
            errors.push(ConfigError::invalid(
                "snapshot.encryption_key_file",
                path.display(),
                problem.what,
                problem.fix,
            ));
            return None;
        }
    }
    Some(SnapshotSettings {
        schedule: schedule?,
        schedule_text: text,
        retain: retain as usize,
        dir,
        s3,
        encryption_key_file,
    })
}

fn valid_node_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn resolve_name(
    config: &Config,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let name = match &config.node_name {
        Some(n) => n.clone(),
        None => match host.hostname() {
            Some(h) => h,
            None => {
                errors.push(ConfigError::invalid(
                    "node_name",
                    "(unset)",
                    "the host name could not be read",
                    "set node_name to a unique name for this host",
                ));
                return None;
            }
        },
    };
    if !valid_node_name(&name) {
        errors.push(ConfigError::invalid(
            "node_name",
            format!("{name:?}"),
            "must be 1-63 characters of letters, digits, '-', '_' or '.', starting with a \
             letter or digit",
            "set node_name to a simple unique name such as etcd-1",
        ));
        return None;
    }
    Some(name)
}

fn resolve_advertise(
    config: &Config,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<IpAddr> {
    let detected = config.advertise_addr.or_else(|| host.detect_address());
    // A client-mode agent advertises nothing: without a detected address it asks from any.
    if detected.is_none() && config.mode == super::Mode::Client {
        return Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    }
    let Some(ip) = detected else {
        errors.push(ConfigError::invalid(
            "advertise_addr",
            "(unset)",
            "no usable address was found on this host's interfaces",
            "set advertise_addr to the address the other hosts reach this one at",
        ));
        return None;
    };
    if ip.is_unspecified() || ip.is_multicast() {
        errors.push(ConfigError::invalid(
            "advertise_addr",
            ip,
            "other hosts cannot reach an unspecified or multicast address",
            "set advertise_addr to this host's address on the cluster network",
        ));
        return None;
    }
    if !host.is_local_address(ip) {
        errors.push(ConfigError::invalid(
            "advertise_addr",
            ip,
            "this address is not on this host",
            "use an address shown by `ip addr` on this host",
        ));
        return None;
    }
    Some(ip)
}

fn resolve_join(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<JoinTarget> {
    let mut targets = Vec::new();
    for raw in &config.join {
        match raw.parse::<JoinTarget>() {
            Ok(t) => targets.push(t),
            Err(problem) => errors.push(ConfigError::invalid(
                "join",
                format!("{raw:?}"),
                problem,
                "list other agents as \"10.0.0.1\", \"10.0.0.1:7946\", \"[fd00::1]:7946\" or \
                 \"host.example\"",
            )),
        }
    }
    if targets.is_empty()
        && !config.seed
        && config.bootstrap_expect > 1
        && config.mode == super::Mode::Member
    {
        errors.push(ConfigError::invalid(
            "join",
            "[]",
            "this agent is not the seed and knows no other agent to contact",
            "add the seed's address (or any member's) to join, e.g. join = [\"10.0.0.1\"]",
        ));
    }
    targets
}

/// The join token and, for its pinned form, the CA hash it carries.
fn resolve_token(
    config: &Config,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) -> Option<(JoinToken, Option<CaHash>)> {
    let (raw, origin) = match (&config.token, &config.token_file) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::TokenAmbiguous);
            return None;
        }
        (Some(t), None) => (t.clone(), "token".to_owned()),
        (None, Some(path)) => match host.read_file(path) {
            Ok(t) => {
                private_file("token_file", path, host, errors);
                (t, format!("token_file {}", path.display()))
            }
            Err(source) => {
                errors.push(ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                });
                return None;
            }
        },
        (None, None) => {
            errors.push(ConfigError::MissingToken);
            return None;
        }
    };
    JoinToken::parse_pinned(&raw)
        .map_err(|source| errors.push(ConfigError::Token { origin, source }))
        .ok()
}

/// A secret file must be readable by its owner only: anyone who can read the join token can
/// join the cluster, anyone who can read the CA key can sign for it.
fn private_file(
    field: &'static str,
    path: &std::path::Path,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(mode) = host.file_mode(path).filter(|m| m & 0o077 != 0) {
        errors.push(ConfigError::invalid(
            field,
            path.display(),
            format!("the file is readable by others than its owner (mode {mode:04o})"),
            format!(
                "chmod 600 {0} (and chown quorate:quorate {0} for the packaged service)",
                path.display()
            ),
        ));
    }
}

fn check_ports(config: &Config, errors: &mut Vec<ConfigError>) {
    let p = config.ports;
    for (field, port) in [
        ("ports.client", p.client),
        ("ports.peer", p.peer),
        ("ports.gossip", p.gossip),
        ("ports.api", p.api),
    ] {
        if port == 0 {
            errors.push(ConfigError::invalid(
                field,
                0,
                "port 0 is not a fixed port",
                "use a fixed port number; the defaults are client 2379, peer 2380, gossip and \
                 api 7946",
            ));
        }
    }
    let tcp = [
        ("ports.client", p.client),
        ("ports.peer", p.peer),
        ("ports.api", p.api),
    ];
    for (i, (a, pa)) in tcp.iter().enumerate() {
        for (b, pb) in &tcp[i + 1..] {
            if pa == pb && *pa != 0 {
                errors.push(ConfigError::invalid(
                    b,
                    pb,
                    format!("the same TCP port as {a}"),
                    "give each TCP service its own port",
                ));
            }
        }
    }
}

fn check_pki(config: &Config, errors: &mut Vec<ConfigError>) {
    let pki = &config.pki;
    for (field, set, lifetime) in [
        (
            "pki.node_cert_validity",
            pki.node_cert_validity,
            pki.node_validity(),
        ),
        (
            "pki.client_cert_validity",
            pki.client_cert_validity,
            pki.client_validity(),
        ),
    ] {
        // Name the field the lifetime came from.
        let field = match (set, pki.cert_validity) {
            (None, Some(_)) => "pki.cert_validity",
            _ => field,
        };
        if lifetime.as_secs() < 10 {
            errors.push(ConfigError::invalid(
                field,
                humantime::format_duration(lifetime),
                "too short to be renewed in time",
                "use a lifetime such as \"90days\" or \"1year\"",
            ));
        }
        if pki.ca_validity <= lifetime {
            errors.push(ConfigError::invalid(
                "pki.ca_validity",
                humantime::format_duration(pki.ca_validity),
                "the CA must outlive the certificates it signs",
                format!("make pki.ca_validity longer than {field}"),
            ));
        }
    }
    match (&pki.ca_cert_file, &pki.ca_key_file) {
        (Some(_), None) | (None, Some(_)) => errors.push(ConfigError::invalid(
            "pki.ca_cert_file",
            pki.ca_cert_file
                .as_ref()
                .or(pki.ca_key_file.as_ref())
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "an operator-supplied CA needs both its certificate and its key",
            "set both pki.ca_cert_file and pki.ca_key_file, or neither",
        )),
        (Some(_), Some(_)) if !config.seed => errors.push(ConfigError::invalid(
            "pki.ca_cert_file",
            "(set)",
            "only the seed holds the CA",
            "move pki.ca_cert_file and pki.ca_key_file to the seed's config",
        )),
        _ => {}
    }
    crate::restore::from_config::check(config, errors);
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_client;
#[cfg(test)]
mod tests_etcd;
#[cfg(test)]
mod tests_roles;
#[cfg(test)]
mod tests_s3;
