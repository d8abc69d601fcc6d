//! Configuration errors. Each names the field (or file, or environment variable), what is wrong
//! with it, and how to fix it; all problems of a config are collected and shown together.

use std::fmt;
use std::path::PathBuf;

use crate::token::TokenError;

/// One problem with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Fix: check the path given with --config or QUORATE_CONFIG")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "environment variable {var} is not a known setting. Fix: unset it, or use one of: {known}"
    )]
    UnknownEnv { var: String, known: String },
    #[error("environment variable {var}={value:?} is not valid: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("no join token. Fix: set `token_file` (or `token`) in the config or QUORATE_TOKEN_FILE / QUORATE_TOKEN; make one with `quorate token generate` and use the same token on every host")]
    MissingToken,
    #[error("both `token` and `token_file` are set. Fix: keep only one of them")]
    TokenAmbiguous,
    #[error("token_file {path}: {source}. Fix: create the file with the cluster's join token, readable by the agent")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {source}")]
    Token {
        origin: String,
        #[source]
        source: TokenError,
    },
    #[error("{field} = {value}: {problem}. Fix: {fix}")]
    Invalid {
        field: &'static str,
        value: String,
        problem: String,
        fix: String,
    },
}

impl ConfigError {
    /// Shorthand for the common case of one bad field.
    pub fn invalid(
        field: &'static str,
        value: impl fmt::Display,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field,
            value: value.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The field, file or variable the error is about, for tests and structured logs.
    pub fn subject(&self) -> String {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Parse { path, .. } => {
                path.display().to_string()
            }
            ConfigError::UnknownEnv { var, .. } | ConfigError::Env { var, .. } => var.clone(),
            ConfigError::MissingToken | ConfigError::TokenAmbiguous => "token".into(),
            ConfigError::TokenFile { .. } => "token_file".into(),
            ConfigError::Token { origin, .. } => origin.clone(),
            ConfigError::Invalid { field, .. } => (*field).into(),
        }
    }
}

/// All problems found in one configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}
