//! Validation of `restore_from` / `restore_new_ca` (the seed forms the cluster from a
//! snapshot, see `restore::seed`). Kept here so that the config module only calls it.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::snapshot::remote::S3Source;

/// Adds an error for each misuse of the restore settings.
pub fn check(config: &Config, errors: &mut Vec<ConfigError>) {
    if let Some(source) = &config.restore_from {
        let value = source.clone();
        if !config.seed {
            errors.push(ConfigError::invalid(
                "restore_from",
                value.clone(),
                "only the seed forms the cluster from a snapshot; the others join it",
                "set restore_from in the seed's config only",
            ));
        }
        if source.starts_with("s3://") {
            if let Err(e) = source.parse::<S3Source>() {
                errors.push(ConfigError::invalid(
                    "restore_from",
                    value.clone(),
                    e.problem,
                    "write it as s3://BUCKET/KEY (quorate snapshot list shows the keys)",
                ));
            }
            if config.snapshot.s3.is_none() {
                errors.push(ConfigError::invalid(
                    "restore_from",
                    value.clone(),
                    "an s3:// source is fetched through [snapshot.s3], which is not set",
                    "add [snapshot.s3] (endpoint, region, credentials) to the seed's config",
                ));
            }
        } else if !Path::new(source).is_absolute() {
            errors.push(ConfigError::invalid(
                "restore_from",
                value.clone(),
                "the path must be absolute",
                "give the snapshot's absolute path, or s3://BUCKET/KEY",
            ));
        }
        if config.pki.ca_cert_file.is_some() {
            errors.push(ConfigError::invalid(
                "restore_from",
                value,
                "the CA comes from the snapshot, so pki.ca_cert_file cannot be used with it",
                "remove pki.ca_cert_file and pki.ca_key_file (or restore_from)",
            ));
        }
    } else if config.restore_new_ca {
        errors.push(ConfigError::invalid(
            "restore_new_ca",
            "true",
            "it only applies to a restore from a snapshot",
            "set restore_from too, or remove restore_new_ca",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(config: &Config) -> Vec<String> {
        let mut e = Vec::new();
        check(config, &mut e);
        e.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn restore_from_belongs_to_the_seed_and_is_absolute() {
        let mut c = Config {
            restore_from: Some("/var/backups/s.db".into()),
            seed: true,
            ..Config::default()
        };
        assert!(errors(&c).is_empty());
        c.seed = false;
        assert!(errors(&c)[0].contains("only the seed"), "{:?}", errors(&c));
        c.seed = true;
        c.restore_from = Some("s.db".into());
        assert!(errors(&c)[0].contains("absolute"), "{:?}", errors(&c));
        c.restore_from = Some("s3://backups/quorate/s.db".into());
        assert!(
            errors(&c)[0].contains("[snapshot.s3], which is not set"),
            "{:?}",
            errors(&c)
        );
        c.restore_from = Some("s3://backups".into());
        assert!(errors(&c)[0].contains("no key"), "{:?}", errors(&c));
        c.restore_from = None;
        c.restore_new_ca = true;
        assert!(errors(&c)[0].contains("restore_new_ca"), "{:?}", errors(&c));
    }
}
