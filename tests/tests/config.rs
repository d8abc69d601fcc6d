//! Bad configuration stops the agent at start with a message naming the field and the fix.

use std::process::Command;
use std::time::Duration;

use quorate::config::ConfigBuilder;
use quorate::token::JoinToken;
use quorate_tests::quorate_bin;

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs `quorate run` with `config` (TOML text); it must exit by itself.
fn run_with(config: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(quorate_bin())
        .args(["--config", path.to_str().unwrap(), "run"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Outcome {
                code: status.code(),
                stderr,
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("quorate run did not exit on a bad config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn good(dir: &std::path::Path) -> ConfigBuilder {
    ConfigBuilder::new("n1", "127.0.0.1".parse().unwrap())
        .token(JoinToken::generate().expose())
        .seed(true)
        .state_dir(dir)
}

/// A client-mode config that keeps its files in `out`.
fn client(dir: &std::path::Path, out: Option<std::path::PathBuf>) -> ConfigBuilder {
    good(dir)
        .seed(false)
        .join(["127.0.0.1".to_owned()])
        .with(move |c| {
            c.mode = quorate::config::Mode::Client;
            c.client = Some(quorate::config::ClientSection {
                dir: out,
                ..Default::default()
            });
        })
}

#[test]
fn bad_configs_fail_fast_naming_field_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, &[&str])> = vec![
        (
            good(dir.path()).with(|c| c.token = None).to_toml(),
            &["token", "quorate token generate"],
        ),
        (
            format!("{}\nbootstrap_expected = 3\n", good(dir.path()).to_toml()),
            &["bootstrap_expected", "line"],
        ),
        (
            good(dir.path()).bootstrap_expect(0).to_toml(),
            &["bootstrap_expect", "Fix"],
        ),
        (
            good(dir.path())
                .with(|c| c.advertise_addr = Some("192.0.2.1".parse().unwrap()))
                .to_toml(),
            &["advertise_addr", "not on this host"],
        ),
        (
            good(dir.path()).etcd_binary("/nonexistent/etcd").to_toml(),
            &["etcd.binary", "apt-get install etcd-server"],
        ),
        (good(dir.path()).seed(false).to_toml(), &["join", "seed"]),
        (good(dir.path()).token("short").to_toml(), &["token", "32"]),
        (
            good(dir.path()).quota("0").to_toml(),
            &["etcd.quota = \"0\"", "Fix: write a size"],
        ),
        (
            good(dir.path()).quota("lots").to_toml(),
            &["etcd.quota = \"lots\": not a size", "Fix"],
        ),
        (
            good(dir.path())
                .with(|c| c.etcd.metrics_listen = Some("localhost".into()))
                .to_toml(),
            &["etcd.metrics_listen", "Fix: write ip:port"],
        ),
        // Client mode: it may not seed, needs a directory, and one it can write.
        (
            client(dir.path(), Some(dir.path().join("out")))
                .seed(true)
                .to_toml(),
            &["seed = true", "client-mode agent never runs etcd", "Fix"],
        ),
        (
            client(dir.path(), None).to_toml(),
            &["client.dir", "Fix: set client.dir"],
        ),
        (
            client(dir.path(), Some(dir.path().join("a-file/out"))).to_toml(),
            &["client.dir", "Fix"],
        ),
        (
            client(dir.path(), Some(dir.path().join("out")))
                .with(|c| c.client.as_mut().unwrap().name = Some("root".into()))
                .to_toml(),
            &["client.name", "reserved"],
        ),
        (
            good(dir.path())
                .with(|c| c.client = Some(Default::default()))
                .to_toml(),
            &["[client]", "mode = \"client\""],
        ),
    ];
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    for (config, expected) in cases {
        let out = run_with(&config);
        assert_eq!(
            out.code,
            Some(2),
            "exit code for:\n{config}\nstderr: {}",
            out.stderr
        );
        for e in expected {
            assert!(out.stderr.contains(e), "{e:?} not in:\n{}", out.stderr);
        }
    }
}

#[test]
fn too_old_etcd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("etcd");
    std::fs::write(&fake, "#!/bin/sh\necho 'etcd Version: 3.3.25'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_with(&good(dir.path()).etcd_binary(&fake).to_toml());
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("3.3.25 is too old"), "{}", out.stderr);
}

/// `quorate config check` on `path`, which must succeed; its standard output.
fn config_check_ok(path: &std::path::Path) -> String {
    let o = Command::new(quorate_bin())
        .args(["--config", path.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

#[test]
fn config_check_and_token_generate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.toml");
    std::fs::write(&path, good(dir.path()).bootstrap_expect(4).to_toml()).unwrap();
    let stdout = config_check_ok(&path);
    assert!(
        stdout.contains("configuration OK")
            && stdout.contains("warning: bootstrap_expect = 4 is even"),
        "{stdout}"
    );

    let a = Command::new(quorate_bin())
        .args(["token", "generate"])
        .output()
        .unwrap();
    let b = Command::new(quorate_bin())
        .args(["token", "generate"])
        .output()
        .unwrap();
    let (a, b) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    assert_ne!(a, b);
    assert!(JoinToken::parse(a.trim()).is_ok(), "{a}");
}

/// `etcd.extra_args` from before etcd.quota existed: `config check` shows the flag taken over
/// with a warning naming the new key; the key and the flag together stop the agent.
#[test]
fn quota_in_extra_args_is_taken_over_and_refused_alongside_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = good(dir.path())
        .with(|c| c.etcd.extra_args = vec!["--quota-backend-bytes=8589934592".into()]);
    let path = dir.path().join("q.toml");
    std::fs::write(&path, old.to_toml()).unwrap();
    let stdout = config_check_ok(&path);
    assert!(
        stdout.contains(
            "warning: etcd.extra_args: \"--quota-backend-bytes=8589934592\" is now the setting \
             etcd.quota; quorate took it over as etcd.quota = \"8GiB\""
        ) && stdout.contains("etcd quota:       8GiB (8589934592 bytes)"),
        "{stdout}"
    );

    let out = run_with(&old.quota("8GiB").to_toml());
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("etcd.extra_args = \"--quota-backend-bytes=8589934592\"")
            && out.stderr.contains("etcd.quota, which is set too")
            && out.stderr.contains("Fix: keep etcd.quota"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_shipped_default_config_is_valid() {
    // packaging/quorate.toml has no token (the operator adds one); everything else must load.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/quorate.toml");
    let env = vec![
        (
            "QUORATE_TOKEN".to_string(),
            JoinToken::generate().expose().to_string(),
        ),
        ("QUORATE_SEED".to_string(), "true".to_string()),
        (
            "QUORATE_ADVERTISE_ADDR".to_string(),
            "127.0.0.1".to_string(),
        ),
    ];
    let loaded = quorate::config::load(Some(&path), env).expect("the default config loads");
    quorate::config::validate(&loaded.config, &quorate::config::SystemHost)
        .expect("the default config validates");
}
