//! Loading: the TOML file first (its errors carry line and column), then `QUORATE_*`
//! environment variables, each of which overrides one key. An unknown key in the file or an
//! unknown `QUORATE_*` variable is an error, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrors};
use super::{Config, DEFAULT_CONFIG_PATH};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "QUORATE_";

/// Every key that can be set from the environment: `QUORATE_` + the key in upper case with
/// dots as underscores (`etcd.binary` is `QUORATE_ETCD_BINARY`).
pub const ENV_VARS: &[&str] = &[
    "node_name",
    "advertise_addr",
    "bind_addr",
    "seed",
    "bootstrap_expect",
    "join",
    "token",
    "token_file",
    "ca_hash",
    "state_dir",
    "remove_dead_after",
    "restore_from",
    "restore_new_ca",
    "ports.client",
    "ports.peer",
    "ports.gossip",
    "ports.api",
    "etcd.binary",
    "etcd.listen_localhost",
    "etcd.extra_args",
    "etcd.stop_timeout",
    "etcd.compaction_retention",
    "etcd.quota",
    "maintenance.defrag_min_reclaim",
    "etcd.metrics_listen",
    "health.listen",
    "pki.node_cert_validity",
    "pki.client_cert_validity",
    "pki.cert_validity",
    "pki.ca_validity",
    "pki.ca_cert_file",
    "pki.ca_key_file",
    "log.level",
    "log.format",
    "maintenance.defrag_min_reclaim",
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["join", "etcd.extra_args"];
/// Keys whose environment value stays a string even when it looks like a number: durations
/// ("0" turns compaction off) and sizes (bytes).
const STRING_KEYS: &[&str] = &[
    "remove_dead_after",
    "etcd.stop_timeout",
    "etcd.compaction_retention",
    "etcd.quota",
    "etcd.metrics_listen",
    "pki.node_cert_validity",
    "pki.client_cert_validity",
    "pki.cert_validity",
    "pki.ca_validity",
];
/// `QUORATE_*` variables that are not config keys.
const NOT_KEYS: &[&str] = &["QUORATE_CONFIG"];

/// A loaded (not yet validated) configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// The environment variables that overrode file values.
    pub env_overrides: Vec<String>,
}

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

/// Loads the config from `path` (or the default path, which may be absent) and applies `env`.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigErrors> {
    let (mut table, used_path) = read_file(path)?;
    let mut errors = Vec::new();
    let mut overrides = Vec::new();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_KEYS.contains(&k.as_str()))
        .collect();
    env.sort();
    for (var, value) in env {
        let Some(key) = ENV_VARS.iter().find(|k| env_name(k) == var) else {
            errors.push(ConfigError::UnknownEnv {
                var,
                known: ENV_VARS
                    .iter()
                    .map(|k| env_name(k))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
            continue;
        };
        set_path(&mut table, key, env_value(key, &value));
        // Check each override on its own so that the error names the variable.
        if let Err(e) = Config::deserialize_table(&table) {
            errors.push(ConfigError::Env {
                var: var.clone(),
                value,
                message: e,
            });
            remove_path(&mut table, key);
            continue;
        }
        overrides.push(var);
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let config = Config::deserialize_table(&table).map_err(|message| ConfigError::Parse {
        path: used_path.clone().unwrap_or_default(),
        message,
    })?;
    Ok(Loaded {
        config,
        path: used_path,
        env_overrides: overrides,
    })
}

fn read_file(path: Option<&Path>) -> Result<(toml::Table, Option<PathBuf>), ConfigErrors> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok((toml::Table::new(), None));
        }
        Err(source) => return Err(ConfigError::Read { path, source }.into()),
    };
    // Parse straight into Config first: toml's errors then point at the line and key.
    if let Err(e) = toml::from_str::<Config>(&text) {
        return Err(ConfigError::Parse {
            path,
            message: e.to_string().trim_end().replace('\n', "\n      "),
        }
        .into());
    }
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok((table, Some(path)))
}

/// An environment string as a TOML value: lists split on commas, integers and booleans as
/// such (except for [`STRING_KEYS`]), everything else a string.
fn env_value(key: &str, raw: &str) -> toml::Value {
    if STRING_KEYS.contains(&key) {
        return toml::Value::String(raw.to_owned());
    }
    if LIST_KEYS.contains(&key) {
        return toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        );
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

fn remove_path(table: &mut toml::Table, key: &str) {
    match key.split_once('.') {
        None => {
            table.remove(key);
        }
        Some((section, rest)) => {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                remove_path(t, rest);
            }
        }
    }
}

impl Config {
    fn deserialize_table(table: &toml::Table) -> Result<Config, String> {
        use serde::Deserialize;
        Config::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| e.to_string().trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn file_then_env() {
        let f = file("node_name = \"a\"\nbootstrap_expect = 5\n[etcd]\nbinary = \"/x/etcd\"\n");
        let loaded = load(
            Some(f.path()),
            env(&[
                ("QUORATE_BOOTSTRAP_EXPECT", "3"),
                ("QUORATE_JOIN", "10.0.0.1, 10.0.0.2:7000"),
                ("QUORATE_ETCD_LISTEN_LOCALHOST", "false"),
                ("QUORATE_PKI_CERT_VALIDITY", "90s"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.node_name.as_deref(), Some("a"));
        assert_eq!(c.bootstrap_expect, 3);
        assert_eq!(c.join, vec!["10.0.0.1", "10.0.0.2:7000"]);
        assert!(!c.etcd.listen_localhost);
        assert_eq!(c.etcd.binary, PathBuf::from("/x/etcd"));
        assert_eq!(
            c.pki.cert_validity,
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(loaded.env_overrides.len(), 4);
    }

    #[test]
    fn day2_etcd_keys_from_file_and_env() {
        let f = file("[etcd]\nquota = 8589934592\ncompaction_retention = \"2h30m\"\n");
        let c = load(Some(f.path()), env(&[])).unwrap().config;
        assert_eq!(c.etcd.quota, Some("8589934592".into()));
        assert_eq!(
            c.etcd.compaction_retention,
            Some(std::time::Duration::from_secs(9000))
        );
        assert_eq!(c.etcd.metrics_listen, None);
        let loaded = load(
            Some(f.path()),
            env(&[
                ("QUORATE_ETCD_COMPACTION_RETENTION", "0"),
                ("QUORATE_ETCD_QUOTA", "512MiB"),
                ("QUORATE_ETCD_METRICS_LISTEN", ""),
            ]),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.etcd.compaction_retention, Some(std::time::Duration::ZERO));
        assert_eq!(c.etcd.quota, Some("512MiB".into()));
        assert_eq!(c.etcd.metrics_listen.as_deref(), Some(""));
        assert_eq!(loaded.env_overrides.len(), 3);
        let c = load(
            Some(f.path()),
            env(&[
                ("QUORATE_ETCD_QUOTA", "1073741824"),
                ("QUORATE_ETCD_METRICS_LISTEN", "127.0.0.5:2381"),
            ]),
        )
        .unwrap()
        .config;
        assert_eq!(c.etcd.quota, Some("1073741824".into()));
        assert_eq!(c.etcd.metrics_listen.as_deref(), Some("127.0.0.5:2381"));
        let err = load(
            Some(f.path()),
            env(&[("QUORATE_ETCD_COMPACTION_RETENTION", "1 fortnight")]),
        )
        .unwrap_err();
        assert_eq!(err.0[0].subject(), "QUORATE_ETCD_COMPACTION_RETENTION");
    }

    #[test]
    fn unknown_key_in_file_names_key_and_line() {
        let f = file("node_name = \"a\"\nbootstrap_expected = 3\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("bootstrap_expected"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_in_file() {
        let f = file("[ports]\nclient = \"high\"\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("client"), "{err}");
    }

    #[test]
    fn unknown_and_bad_env_are_named() {
        let f = file("");
        let errs = load(
            Some(f.path()),
            env(&[("QUORATE_BOOTSTRAP", "3"), ("QUORATE_PORTS_CLIENT", "many")]),
        )
        .unwrap_err();
        let subjects: Vec<_> = errs.0.iter().map(|e| e.subject()).collect();
        assert_eq!(subjects, vec!["QUORATE_BOOTSTRAP", "QUORATE_PORTS_CLIENT"]);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/q.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/q.toml"));
    }

    #[test]
    fn every_env_key_is_a_real_key() {
        // Setting each documented key from the environment must reach a field (no
        // "unknown field" errors), so ENV_VARS cannot drift from the Config struct.
        for key in ENV_VARS {
            let sample = match *key {
                "seed" | "etcd.listen_localhost" | "restore_new_ca" => "true",
                "bootstrap_expect" | "ports.client" | "ports.peer" | "ports.gossip"
                | "ports.api" => "1",
                "advertise_addr" | "bind_addr" => "10.0.0.1",
                "health.listen" => "127.0.0.1:1",
                "remove_dead_after"
                | "etcd.stop_timeout"
                | "pki.cert_validity"
                | "pki.node_cert_validity"
                | "pki.client_cert_validity"
                | "pki.ca_validity"
                | "etcd.compaction_retention" => "1m",
                "log.format" => "json",
                _ => "x",
            };
            let f = file("");
            load(Some(f.path()), env(&[(&env_name(key), sample)]))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any file content loads or is refused with a message; never a panic.
            #[test]
            fn any_file_loads_or_names_the_problem(text in any::<String>()) {
                let f = file(&text);
                if let Err(e) = load(Some(f.path()), env(&[])) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }

            /// Any value of any documented variable loads or names that variable.
            #[test]
            fn any_environment_value_loads_or_names_its_variable(
                key in proptest::sample::select(ENV_VARS),
                value in any::<String>(),
            ) {
                let f = file("");
                let name = env_name(key);
                if let Err(e) = load(Some(f.path()), env(&[(&name, &value)])) {
                    let text = e.to_string();
                    prop_assert!(text.contains(&name) || text.contains(key), "{}", text);
                }
            }
        }
    }
}
