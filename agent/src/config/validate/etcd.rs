//! The `[etcd]` section: the binary and its version, and the flags quorate renders beyond the
//! cluster and TLS ones (compaction, quota, the metrics listener). Those used to be set through
//! `etcd.extra_args`; such a configuration keeps working: the flag is taken over into its
//! setting with a warning that names the key to move it to. Setting both is refused, since
//! either choice would silently drop one of the operator's values.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::error::ConfigError;
use super::super::host::HostProbe;
use super::super::settings::EtcdSettings;
use super::super::size::{format_size, parse_size, SizeText};
use super::super::{
    Config, EtcdSection, DEFAULT_COMPACTION_RETENTION, DEFAULT_METRICS_LISTEN, DEFAULT_QUOTA,
};
use crate::etcd::argv::EtcdTuning;
use crate::etcd::version::{self, Verdict, Version};

/// Oldest etcd that quorate drives (learners, zap logger, the flags it renders).
pub const MIN_ETCD_VERSION: Version = version::OLDEST;

/// A retention below this gets a warning.
const SHORT_RETENTION: Duration = Duration::from_secs(5 * 60);

/// etcd's suggested maximum quota; etcd warns at start above it.
const MAX_SUGGESTED_QUOTA: u64 = 8 << 30;

/// Flags quorate renders itself (etcd::argv) that `etcd.extra_args` may not set: an extra
/// argument overriding one of them could point etcd at other data or make it bootstrap a new
/// cluster. The day-2 flags of [`TAKEN_OVER`] are owned too, but taken over rather than refused.
const RESERVED_ETCD_FLAGS: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "listen-peer-urls",
    "initial-advertise-peer-urls",
    "listen-client-urls",
    "advertise-client-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
    "force-new-cluster",
    "discovery",
    "discovery-srv",
    "discovery-token",
    "logger",
    "log-outputs",
    "config-file",
];

/// Owned flags that older configurations set through `etcd.extra_args`, and the key that now
/// holds each.
const TAKEN_OVER: &[(&str, &str)] = &[
    ("auto-compaction-mode", "etcd.compaction_retention"),
    ("auto-compaction-retention", "etcd.compaction_retention"),
    ("quota-backend-bytes", "etcd.quota"),
    ("listen-metrics-urls", "etcd.metrics_listen"),
];

/// What `etcd.extra_args` set of the taken-over flags, as (the argument as written, value).
#[derive(Debug, Default)]
struct FromExtraArgs {
    retention: Option<(String, String)>,
    quota: Option<(String, String)>,
    metrics: Option<(String, String)>,
}

/// Splits `etcd.extra_args` into the operator's own flags and the taken-over ones; reserved
/// flags are errors.
fn split_extra_args(
    section: &EtcdSection,
    version: Version,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> (Vec<String>, FromExtraArgs) {
    let mut operator = Vec::new();
    let mut taken = FromExtraArgs::default();
    let mut args = section.extra_args.iter();
    while let Some(arg) = args.next() {
        let name = arg.trim_start_matches('-');
        let (flag, inline_value) = match name.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (name, None),
        };
        if RESERVED_ETCD_FLAGS.contains(&flag) {
            errors.push(ConfigError::invalid(
                "etcd.extra_args",
                format!("{arg:?}"),
                format!("--{flag} is set by quorate itself"),
                "remove it; data locations, URLs, TLS and the bootstrap flags are derived from \
                 the rest of the configuration (see docs/configuration.md)",
            ));
            continue;
        }
        match version::check_operator_flag(version, flag) {
            Ok(None) => {}
            Ok(Some(warning)) => warnings.push(warning),
            Err((problem, fix)) => {
                errors.push(ConfigError::invalid(
                    "etcd.extra_args",
                    format!("{arg:?}"),
                    problem,
                    fix,
                ));
                continue;
            }
        }
        let Some((_, key)) = TAKEN_OVER.iter().find(|(f, _)| *f == flag) else {
            operator.push(arg.clone());
            continue;
        };
        // etcd (Go's flag package) also reads `--flag value` as two arguments.
        let (written, value) = match inline_value {
            Some(v) => (arg.clone(), v.to_owned()),
            None => match args.next() {
                Some(v) => (format!("{arg} {v}"), v.clone()),
                None => {
                    errors.push(ConfigError::invalid(
                        "etcd.extra_args",
                        format!("{arg:?}"),
                        format!("--{flag} has no value"),
                        format!("remove it and set {key} instead"),
                    ));
                    continue;
                }
            },
        };
        let slot = match flag {
            "auto-compaction-mode" => {
                if value == "periodic" {
                    warnings.push(format!(
                        "etcd.extra_args: {written:?} is now set by quorate itself (periodic \
                         compaction, see {key}), which dropped it; remove it from \
                         etcd.extra_args"
                    ));
                } else {
                    errors.push(ConfigError::invalid(
                        "etcd.extra_args",
                        format!("{written:?}"),
                        "quorate runs etcd's periodic compaction and has no revision mode",
                        format!("remove it and set {key} to how much history to keep, e.g. \"1h\""),
                    ));
                }
                continue;
            }
            "auto-compaction-retention" => &mut taken.retention,
            "quota-backend-bytes" => &mut taken.quota,
            _ => &mut taken.metrics,
        };
        if let Some((first, _)) = slot {
            errors.push(ConfigError::invalid(
                "etcd.extra_args",
                format!("{written:?}"),
                format!("--{flag} is given twice (also as {first:?})"),
                format!("remove both and set {key} instead"),
            ));
            continue;
        }
        *slot = Some((written, value));
    }
    (operator, taken)
}

/// The warning for a flag taken over from `etcd.extra_args`.
fn taken_over(written: &str, key: &str, value: &str) -> String {
    format!(
        "etcd.extra_args: {written:?} is now the setting {key}; quorate took it over as \
         {key} = {value:?}. Set {key} in the configuration and remove the flag from \
         etcd.extra_args (setting both is an error)"
    )
}

/// The error for a flag in `etcd.extra_args` whose setting is also set.
fn set_twice(written: &str, key: &str) -> ConfigError {
    ConfigError::invalid(
        "etcd.extra_args",
        format!("{written:?}"),
        format!("sets the same thing as {key}, which is set too"),
        format!("keep {key} and remove the flag from etcd.extra_args"),
    )
}

/// Resolves `--auto-compaction-retention`: `None` means compaction off.
fn resolve_retention(
    section: &EtcdSection,
    from_args: Option<(String, String)>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<Duration> {
    const KEY: &str = "etcd.compaction_retention";
    let retention = match (section.compaction_retention, from_args) {
        (Some(_), Some((written, _))) => {
            errors.push(set_twice(&written, KEY));
            return None;
        }
        (Some(d), None) => d,
        (None, Some((written, value))) => {
            // etcd reads a bare integer as hours (periodic mode), anything else as a Go
            // duration, which humantime reads alike for the units etcd users write.
            let parsed = match value.parse::<u64>() {
                Ok(hours) => hours.checked_mul(3600).map(Duration::from_secs),
                Err(_) => humantime::parse_duration(&value).ok(),
            };
            let Some(d) = parsed else {
                errors.push(ConfigError::invalid(
                    "etcd.extra_args",
                    format!("{written:?}"),
                    "not a retention etcd reads",
                    format!("remove it and set {KEY} to a duration such as \"1h\" or \"30m\""),
                ));
                return None;
            };
            warnings.push(taken_over(
                &written,
                KEY,
                &humantime::format_duration(d).to_string(),
            ));
            d
        }
        (None, None) => DEFAULT_COMPACTION_RETENTION,
    };
    if retention.is_zero() {
        warnings.push(format!(
            "{KEY} = \"0\": compaction is off, so etcd keeps every revision and its database \
             grows until it reaches etcd.quota, where etcd raises the NOSPACE alarm and refuses \
             writes; set {KEY} (e.g. \"1h\") unless something else compacts this cluster"
        ));
        return None;
    }
    if retention < SHORT_RETENTION {
        warnings.push(format!(
            "{KEY} = {:?} is short: a watcher or client that falls further behind than that \
             gets \"required revision has been compacted\" and has to read everything again; \
             minutes to hours are usual (the default is \"1h\")",
            humantime::format_duration(retention).to_string()
        ));
    }
    Some(retention)
}

/// Resolves `--quota-backend-bytes`.
fn resolve_quota(
    section: &EtcdSection,
    from_args: Option<(String, String)>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<u64> {
    const KEY: &str = "etcd.quota";
    const FIX: &str = "write a size such as \"2GiB\" (the default), \"512MiB\", \"8GiB\" or \
                       a number of bytes; etcd suggests at most 8GiB";
    let (origin, text) = match (&section.quota, from_args) {
        (Some(_), Some((written, _))) => {
            errors.push(set_twice(&written, KEY));
            return None;
        }
        (Some(q), None) => (None, q.clone()),
        (None, Some((written, value))) => (Some(written), SizeText(value)),
        (None, None) => (None, SizeText::from(DEFAULT_QUOTA)),
    };
    let bytes = match parse_size(&text.0) {
        Ok(bytes) => bytes,
        Err(problem) => {
            errors.push(match origin {
                Some(written) => ConfigError::invalid(
                    "etcd.extra_args",
                    format!("{written:?}"),
                    format!("cannot be taken over into {KEY}: {problem}"),
                    format!("remove it and set {KEY}: {FIX}"),
                ),
                None => ConfigError::invalid(KEY, text, problem.to_string(), FIX),
            });
            return None;
        }
    };
    if let Some(written) = origin {
        warnings.push(taken_over(&written, KEY, &format_size(bytes)));
    }
    if bytes > MAX_SUGGESTED_QUOTA {
        warnings.push(format!(
            "{KEY} = {:?} is above etcd's suggested maximum of 8GiB: etcd warns at start, \
             and a larger database takes longer to snapshot, defragment, restore and send to a \
             new member",
            format_size(bytes)
        ));
    }
    Some(bytes)
}

/// Resolves `--listen-metrics-urls`: `None` means no metrics listener.
fn resolve_metrics(
    config: &Config,
    from_args: Option<(String, String)>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<SocketAddr> {
    const KEY: &str = "etcd.metrics_listen";
    let text = match (&config.etcd.metrics_listen, from_args) {
        (Some(_), Some((written, _))) => {
            errors.push(set_twice(&written, KEY));
            return None;
        }
        (Some(t), None) => t.trim().to_owned(),
        (None, Some((written, value))) => {
            let Some(addr) = value
                .strip_prefix("http://")
                .and_then(|a| a.parse::<SocketAddr>().ok())
            else {
                errors.push(ConfigError::invalid(
                    "etcd.extra_args",
                    format!("{written:?}"),
                    "quorate renders a single plain-HTTP metrics listener",
                    format!(
                        "remove it and set {KEY} = \"host:port\", e.g. \"127.0.0.1:2381\" \
                         (etcd's metrics over TLS stay available on the client URLs)"
                    ),
                ));
                return None;
            };
            warnings.push(taken_over(&written, KEY, &addr.to_string()));
            addr.to_string()
        }
        (None, None) => DEFAULT_METRICS_LISTEN.to_string(),
    };
    if text.is_empty() {
        return None;
    }
    let Ok(addr) = text.parse::<SocketAddr>() else {
        errors.push(ConfigError::invalid(
            KEY,
            format!("{text:?}"),
            "not an address and port",
            "write ip:port such as \"127.0.0.1:2381\" (\"[::1]:2381\" for IPv6), or \"\" to \
             turn etcd's plain-HTTP metrics off",
        ));
        return None;
    };
    if addr.port() == 0 {
        errors.push(ConfigError::invalid(
            KEY,
            addr,
            "port 0 is not a fixed port",
            "use a fixed port; the default is 2381",
        ));
        return None;
    }
    let ports = config.ports;
    let clash = [("ports.client", ports.client), ("ports.peer", ports.peer)]
        .into_iter()
        .find(|(_, p)| *p == addr.port())
        .map(|(field, _)| field)
        .or((addr == config.health.listen).then_some("health.listen"));
    if let Some(other) = clash {
        errors.push(ConfigError::invalid(
            KEY,
            addr,
            format!("the same port as {other}"),
            "give etcd's metrics their own port; the default is 2381",
        ));
        return None;
    }
    if !addr.ip().is_loopback() {
        warnings.push(format!(
            "{KEY} = {addr} is not a loopback address: anyone who reaches it reads etcd's \
             metrics without a certificate (no keys or values, but member names, sizes and \
             request rates); keep it on 127.0.0.1 or firewall the port"
        ));
    }
    Some(addr)
}

/// The flags after the cluster and TLS ones, from the `[etcd]` section, for etcd `version`.
fn resolve_extra_args(
    config: &Config,
    version: Version,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> EtcdTuning {
    let (operator, taken) = split_extra_args(&config.etcd, version, errors, warnings);
    EtcdTuning {
        compaction_retention: resolve_retention(&config.etcd, taken.retention, errors, warnings),
        quota_backend_bytes: resolve_quota(&config.etcd, taken.quota, errors, warnings),
        metrics_listen: resolve_metrics(config, taken.metrics, errors, warnings),
        corruption_check: config.etcd.corruption_check,
        version,
        operator,
    }
}

/// Parses `etcd --version` output ("etcd Version: 3.4.23").
pub fn parse_etcd_version(output: &str) -> Option<(u32, u32, u32)> {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("etcd Version:"))?;
    let mut parts = line.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    Some((major, minor, patch))
}

/// Finds the etcd binary, checks its version and resolves the flags.
pub(super) fn resolve_etcd(
    config: &Config,
    host: &dyn HostProbe,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<EtcdSettings> {
    let wanted = &config.etcd.binary;
    let Some(binary) = host.find_executable(wanted) else {
        errors.push(ConfigError::invalid(
            "etcd.binary",
            wanted.display(),
            "not found (or not executable)",
            "install etcd (Debian/Ubuntu: apt-get install etcd-server) or set etcd.binary to \
             the path of an etcd >= 3.4 binary",
        ));
        return None;
    };
    let version = match host.etcd_version_output(&binary) {
        Ok(out) => parse_etcd_version(&out),
        Err(e) => {
            errors.push(ConfigError::invalid(
                "etcd.binary",
                binary.display(),
                format!("could not run it: {e}"),
                "point etcd.binary at a working etcd >= 3.4 binary",
            ));
            return None;
        }
    };
    let Some(version) = version else {
        errors.push(ConfigError::invalid(
            "etcd.binary",
            binary.display(),
            "`--version` did not print an etcd version",
            "point etcd.binary at an etcd server binary (not etcdctl)",
        ));
        return None;
    };
    match version::classify(version) {
        Verdict::Supported(_) => {}
        Verdict::Warn(_, warning) => warnings.push(format!("etcd.binary: {warning}")),
        Verdict::Refused { problem, fix } => {
            errors.push(ConfigError::invalid(
                "etcd.binary",
                binary.display(),
                problem,
                fix,
            ));
            return None;
        }
    }
    let extra_args = resolve_extra_args(config, version, errors, warnings);
    Some(EtcdSettings {
        binary,
        version,
        listen_localhost: config.etcd.listen_localhost,
        tuning: extra_args,
        stop_timeout: config.etcd.stop_timeout,
    })
}
