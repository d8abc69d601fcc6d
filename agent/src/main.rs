//! The `quorate` binary: parses the command line, loads and validates the configuration (a bad
//! one exits with status 2 and a message naming each field and its fix), sets up logging, and
//! dispatches.

use std::process::ExitCode;

use clap::Parser;
use quorate::cli::{
    self, CertCommand, Cli, Command, ConfigCommand, EtcdCommand, SnapshotCommand, TokenCommand,
};
use quorate::config::{self, LogFormat, SystemHost, Validated};
use quorate::token::JoinToken;

/// Exit status for configuration errors (the unit does not restart on it).
const EXIT_CONFIG: u8 = 2;

fn load_config(cli: &Cli) -> Result<(Validated, Option<std::path::PathBuf>), ExitCode> {
    let loaded = config::load(cli.config.as_deref(), std::env::vars()).map_err(|e| {
        eprintln!("quorate: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let validated = config::validate(&loaded.config, &SystemHost).map_err(|e| {
        let source = loaded
            .path
            .as_ref()
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_else(|| " (no config file; defaults and QUORATE_* variables)".into());
        eprintln!("quorate: {e}  (configuration{source})");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((validated, loaded.path))
}

fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // journald adds its own timestamps.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journald) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Token {
        command: TokenCommand::Generate,
    } = cli.command
    {
        println!("{}", JoinToken::generate().expose());
        return ExitCode::SUCCESS;
    }
    let (validated, path) = match load_config(&cli) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Command::Config {
        command: ConfigCommand::Check,
    } = cli.command
    {
        cli::config_check(&validated, path.as_deref());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quorate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Validated {
        mut settings,
        mut warnings,
    } = validated;
    // A member runs with the join tokens kept in its state directory when a rotation left
    // some there (the config, read-only to the service, may name an older one).
    let kept_ring = match settings.client {
        Some(_) => Ok(None),
        None => settings.apply_kept_ring().map(|origin| {
            let ring = settings.token.ring();
            origin.note(&settings.state_dir, &ring)
        }),
    };
    match kept_ring {
        Ok(note) => warnings.extend(note),
        // The agent, and `token show` (it must not print a token that was rotated away).
        Err(e) if matches!(cli.command, Command::Run | Command::Token { .. }) => {
            let hint = match e {
                quorate::keyring::KeyringError::Read { .. } => {
                    " (run this as root or the service user)"
                }
                _ => "",
            };
            eprintln!("quorate: {e}{hint}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) if matches!(cli.command, Command::Cert { .. }) => {
            eprintln!("quorate: warning: {e}; using the config's join token")
        }
        // The other commands do not use the join token.
        Err(_) => {}
    }
    let mut restart = false;
    let mut bad_config = false;
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Run => {
                init_logging(&settings.log.level, settings.log.format);
                for w in &warnings {
                    tracing::warn!("configuration: {w}");
                }
                if settings.client.is_some() {
                    if let Err(e) = quorate::client::run(settings).await {
                        tracing::error!("{e}");
                        if matches!(e, quorate::client::ClientError::Dir { .. }) {
                            // Like an invalid configuration: restarting would not help.
                            bad_config = true;
                        }
                        return Err(e.into());
                    }
                    return Ok(());
                }
                if quorate::agent::run(settings).await? == quorate::agent::Exit::Restart {
                    restart = true;
                }
                Ok(())
            }
            Command::Status { json } => cli::status(&settings, json).await,
            Command::Env => cli::env(&settings).await,
            Command::Leave { force } => cli::leave(&settings, force).await,
            Command::Defrag { force } => cli::defrag(&settings, force).await,
            Command::Etcd {
                command: EtcdCommand::Restart { rolling },
            } => cli::etcd_restart(&settings, rolling).await,
            Command::Restart => cli::agent_restart(&settings).await,
            Command::Restore { source, yes } => cli::restore(&settings, &source, yes).await,
            Command::Cert {
                command:
                    CertCommand::Client {
                        name,
                        out,
                        force,
                        role,
                    },
            } => cli::client_cert(&settings, &name, &out, force, role.as_deref()).await,
            Command::Cert {
                command: CertCommand::Revoke { serial, name },
            } => cli::revoke(&settings, serial.as_deref(), name.as_deref()).await,
            Command::Snapshot {
                command: SnapshotCommand::List { json },
            } => cli::snapshot_list(&settings, json).await,
            Command::Snapshot {
                command: SnapshotCommand::Save { out, force },
            } => cli::snapshot_save(&settings, out.as_deref(), force).await,
            Command::Token {
                command: TokenCommand::Show { client },
            } => cli::token_show(&settings, client),
            Command::Token {
                command: TokenCommand::Create { replace, .. },
            } => cli::client_token_create(&settings, replace).await,
            Command::Token {
                command: TokenCommand::Rotate { token_file },
            } => cli::token_rotate(&settings, token_file.as_deref()).await,
            Command::Token { .. } | Command::Config { .. } => Ok(()),
        }
    });
    if restart && result.is_ok() {
        // Every task has stopped (etcd too); the sockets close on exec.
        runtime.shutdown_timeout(std::time::Duration::from_secs(2));
        let e = quorate::agent::reexec();
        eprintln!("quorate: cannot re-execute the installed binary: {e}; exiting (systemd restarts the agent)");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quorate: {e:#}");
            if bad_config {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
