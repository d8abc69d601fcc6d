//! Tests of the `[etcd]` day-2 settings: compaction, quota, the metrics listener, and how the
//! flags older configurations set through `etcd.extra_args` are taken over.
use std::time::Duration;

use super::tests::{base, subjects, FakeHost, HOST};
use super::*;
use crate::config::SizeText;
use crate::etcd::argv::EtcdTuning;

fn extra(config: &Config) -> (EtcdTuning, Vec<String>) {
    let v = validate(config, &HOST).unwrap_or_else(|e| panic!("{e}"));
    (v.settings.etcd.tuning, v.warnings)
}

/// The one error of `config`, as shown to the operator.
fn error(config: &Config) -> String {
    let errs = validate(config, &HOST).expect_err("invalid").0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs[0].to_string()
}

fn with_extra_args(args: &[&str]) -> Config {
    let mut c = base();
    c.etcd.extra_args = args.iter().map(|a| a.to_string()).collect();
    c
}

#[test]
fn defaults_compact_hourly_with_etcds_quota_and_loopback_metrics() {
    let (x, warnings) = extra(&base());
    assert_eq!(
        x,
        EtcdTuning {
            compaction_retention: Some(Duration::from_secs(3600)),
            quota_backend_bytes: Some(2 << 30),
            metrics_listen: Some("127.0.0.1:2381".parse().unwrap()),
            corruption_check: true,
            version: (3, 4, 23),
            operator: vec![],
        }
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn compaction_retention() {
    let mut c = base();
    c.etcd.compaction_retention = Some(Duration::from_secs(2 * 3600 + 30 * 60));
    let (x, warnings) = extra(&c);
    assert_eq!(x.compaction_retention, Some(Duration::from_secs(9000)));
    assert!(warnings.is_empty());

    c.etcd.compaction_retention = Some(Duration::ZERO);
    let (x, warnings) = extra(&c);
    assert_eq!(x.compaction_retention, None);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("etcd.compaction_retention") && warnings[0].contains("NOSPACE"),
        "{warnings:?}"
    );

    c.etcd.compaction_retention = Some(Duration::from_secs(3));
    let (x, warnings) = extra(&c);
    assert_eq!(x.compaction_retention, Some(Duration::from_secs(3)));
    assert!(warnings[0].contains("is short"), "{warnings:?}");
}

#[test]
fn quota_sizes() {
    let mut c = base();
    for (text, bytes) in [
        ("512MiB", 512 << 20),
        ("8GiB", 8 << 30),
        ("100MB", 100_000_000),
        ("2147483648", 2 << 30),
    ] {
        c.etcd.quota = Some(SizeText::from(text));
        let (x, warnings) = extra(&c);
        assert_eq!(x.quota_backend_bytes, Some(bytes), "{text}");
        assert!(warnings.is_empty(), "{text}: {warnings:?}");
    }
    c.etcd.quota = Some(SizeText::from("16GiB"));
    let (x, warnings) = extra(&c);
    assert_eq!(x.quota_backend_bytes, Some(16 << 30));
    assert!(
        warnings.len() == 1 && warnings[0].contains("suggested maximum of 8GiB"),
        "{warnings:?}"
    );
}

#[test]
fn bad_quotas_name_the_field_and_the_fix() {
    for (bad, problem) in [
        ("0", "must be more than 0"),
        ("-1", "must be more than 0"),
        ("0GiB", "must be more than 0"),
        ("", "not a size"),
        ("lots", "not a size"),
        ("2 GiBs", "not a size"),
        ("9223372036854775808", "too large"),
        ("8EiB", "too large"),
    ] {
        let mut c = base();
        c.etcd.quota = Some(SizeText::from(bad));
        assert_eq!(subjects(&c, &HOST), vec!["etcd.quota"], "{bad:?}");
        let e = error(&c);
        assert!(
            e.starts_with(&format!("etcd.quota = {bad:?}: {problem}"))
                && e.contains("Fix: write a size such as \"2GiB\""),
            "{e}"
        );
    }
}

#[test]
fn metrics_listener() {
    let mut c = base();
    c.etcd.metrics_listen = Some(String::new());
    assert_eq!(extra(&c).0.metrics_listen, None);
    c.etcd.metrics_listen = Some("[::1]:9381".into());
    let (x, warnings) = extra(&c);
    assert_eq!(x.metrics_listen, Some("[::1]:9381".parse().unwrap()));
    assert!(warnings.is_empty());
    c.etcd.metrics_listen = Some("10.0.0.1:2381".into());
    let (x, warnings) = extra(&c);
    assert_eq!(x.metrics_listen, Some("10.0.0.1:2381".parse().unwrap()));
    assert!(
        warnings.len() == 1 && warnings[0].contains("not a loopback address"),
        "{warnings:?}"
    );
}

#[test]
fn bad_metrics_listeners_name_the_field_and_the_fix() {
    for (bad, problem) in [
        ("localhost:2381", "not an address and port"),
        ("127.0.0.1", "not an address and port"),
        ("http://127.0.0.1:2381", "not an address and port"),
        ("127.0.0.1:0", "port 0"),
        ("127.0.0.1:2379", "the same port as ports.client"),
        ("10.0.0.1:2380", "the same port as ports.peer"),
        ("127.0.0.1:7947", "the same port as health.listen"),
    ] {
        let mut c = base();
        c.etcd.metrics_listen = Some(bad.into());
        assert_eq!(subjects(&c, &HOST), vec!["etcd.metrics_listen"], "{bad:?}");
        let e = error(&c);
        assert!(
            e.starts_with("etcd.metrics_listen = ") && e.contains(problem) && e.contains("Fix: "),
            "{e}"
        );
    }
}

/// The example docs/configuration.md used to give: both flags move to their settings, with a
/// warning naming each new key, and leave etcd.extra_args.
#[test]
fn old_extra_args_are_taken_over_with_a_warning() {
    let c = with_extra_args(&[
        "--quota-backend-bytes=8589934592",
        "--auto-compaction-retention=1",
        "--snapshot-count=50000",
    ]);
    let (x, warnings) = extra(&c);
    assert_eq!(x.quota_backend_bytes, Some(8 << 30));
    assert_eq!(x.compaction_retention, Some(Duration::from_secs(3600)));
    assert_eq!(x.operator, vec!["--snapshot-count=50000"]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains(
            "\"--auto-compaction-retention=1\" is now the setting etcd.compaction_retention"
        ) && warnings[0].contains("etcd.compaction_retention = \"1h\""),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("is now the setting etcd.quota")
            && warnings[1].contains("etcd.quota = \"8GiB\""),
        "{warnings:?}"
    );
}

#[test]
fn other_forms_of_old_extra_args() {
    let c = with_extra_args(&[
        "--quota-backend-bytes",
        "1073741824",
        "-auto-compaction-mode=periodic",
        "--auto-compaction-retention=30m",
        "--listen-metrics-urls=http://127.0.0.1:9381",
    ]);
    let (x, warnings) = extra(&c);
    assert_eq!(x.quota_backend_bytes, Some(1 << 30));
    assert_eq!(x.compaction_retention, Some(Duration::from_secs(1800)));
    assert_eq!(x.metrics_listen, Some("127.0.0.1:9381".parse().unwrap()));
    assert!(x.operator.is_empty(), "{:?}", x.operator);
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("is now set by quorate itself")));
    assert!(warnings.iter().any(|w| w.contains("etcd.metrics_listen")));

    let (x, warnings) = extra(&with_extra_args(&["--auto-compaction-retention=0"]));
    assert_eq!(x.compaction_retention, None);
    assert!(warnings.iter().any(|w| w.contains("compaction is off")));
}

#[test]
fn a_setting_and_its_old_extra_arg_together_are_refused() {
    let mut c = with_extra_args(&["--quota-backend-bytes=8589934592"]);
    c.etcd.quota = Some(SizeText::from("8GiB"));
    let e = error(&c);
    assert!(
        e.starts_with("etcd.extra_args = \"--quota-backend-bytes=8589934592\"")
            && e.contains("etcd.quota, which is set too")
            && e.contains("Fix: keep etcd.quota and remove the flag from etcd.extra_args"),
        "{e}"
    );
    let mut c = with_extra_args(&["--auto-compaction-retention=1"]);
    c.etcd.compaction_retention = Some(Duration::from_secs(3600));
    assert!(error(&c).contains("etcd.compaction_retention, which is set too"));
    let mut c = with_extra_args(&["--listen-metrics-urls=http://127.0.0.1:2381"]);
    c.etcd.metrics_listen = Some("127.0.0.1:2381".into());
    assert!(error(&c).contains("etcd.metrics_listen, which is set too"));
}

#[test]
fn old_extra_args_that_cannot_be_taken_over() {
    for (args, problem) in [
        (&["--auto-compaction-mode=revision"][..], "no revision mode"),
        (&["--auto-compaction-retention=soon"], "not a retention"),
        (&["--auto-compaction-retention"], "has no value"),
        (&["--quota-backend-bytes=0"], "more than 0 bytes"),
        (&["--quota-backend-bytes=-1"], "more than 0 bytes"),
        (
            &["--quota-backend-bytes=1", "--quota-backend-bytes=2"],
            "given twice",
        ),
        (
            &["--listen-metrics-urls=https://127.0.0.1:2381"],
            "single plain-HTTP",
        ),
        (
            &["--listen-metrics-urls=http://127.0.0.1:2381,http://10.0.0.1:2381"],
            "single plain-HTTP",
        ),
    ] {
        let c = with_extra_args(args);
        assert_eq!(subjects(&c, &HOST), vec!["etcd.extra_args"], "{args:?}");
        let e = error(&c);
        assert!(e.contains(problem) && e.contains("Fix: "), "{args:?}: {e}");
    }
}

/// The launch's flags after the cluster, TLS and logger ones, as rendered for etcd `version`.
fn day2_flags_on(version: &'static str, config: &Config) -> (Vec<String>, Vec<String>) {
    let host = FakeHost {
        etcd_version: version,
    };
    let v = validate(config, &host).unwrap_or_else(|e| panic!("{version}: {e}"));
    let mut launch = crate::etcd::argv::tests::launch(crate::etcd::ClusterState::New);
    launch.tuning = v.settings.etcd.tuning;
    let args = crate::etcd::render_args(&launch);
    let after = args
        .iter()
        .position(|a| a == "--log-outputs=stderr")
        .unwrap()
        + 1;
    (args[after..].to_vec(), v.warnings)
}

/// Golden per etcd line: 3.4 has no cheap corruption check, 3.5 spells it as an experimental
/// flag, 3.6 as a feature gate; everything else is the same.
#[test]
fn golden_flags_per_etcd_version() {
    let common = "--auto-compaction-mode=periodic\n--auto-compaction-retention=1h\n\
                  --quota-backend-bytes=2147483648\n--listen-metrics-urls=http://127.0.0.1:2381";
    for (version, extra) in [
        ("3.4.23", ""),
        ("3.5.16", "\n--experimental-compact-hash-check-enabled=true"),
        ("3.5.30", "\n--experimental-compact-hash-check-enabled=true"),
        ("3.6.5", "\n--feature-gates=CompactHashCheck=true"),
    ] {
        let (flags, warnings) = day2_flags_on(version, &base());
        assert_eq!(
            flags.join("\n"),
            format!("{common}{extra}"),
            "etcd {version}"
        );
        assert!(warnings.is_empty(), "{version}: {warnings:?}");
    }
    let mut c = base();
    c.etcd.corruption_check = false;
    let (flags, _) = day2_flags_on("3.6.5", &c);
    assert_eq!(flags.join("\n"), common);
}

#[test]
fn extra_args_are_checked_against_the_etcd_version() {
    // 3.6's spelling on 3.5: refused, naming the 3.5 spelling.
    let c = with_extra_args(&["--compaction-batch-limit=500"]);
    let host = FakeHost {
        etcd_version: "3.5.30",
    };
    let errs = validate(&c, &host).expect_err("3.6 flag on 3.5").0;
    let msg = errs[0].to_string();
    assert!(
        msg.contains("etcd.extra_args") && msg.contains("--experimental-compaction-batch-limit"),
        "{msg}"
    );
    // The old spelling on 3.6: taken, with a warning naming the new one.
    let c = with_extra_args(&["--experimental-compaction-batch-limit=500"]);
    let (flags, warnings) = day2_flags_on("3.6.5", &c);
    assert_eq!(
        flags.last().unwrap(),
        "--experimental-compaction-batch-limit=500"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("--compaction-batch-limit")),
        "{warnings:?}"
    );
    // What 3.6 removed: refused there, fine on 3.5.
    let c = with_extra_args(&["--enable-v2=true"]);
    let host = FakeHost {
        etcd_version: "3.6.0",
    };
    let msg = validate(&c, &host).expect_err("removed in 3.6").to_string();
    assert!(msg.contains("removed --enable-v2"), "{msg}");
    assert!(day2_flags_on("3.5.16", &c).1.is_empty());
}

#[test]
fn versions_quorate_does_not_know_are_refused_and_newer_patches_warned() {
    for (version, wanted) in [
        ("3.3.25", "too old"),
        ("3.7.0", "newer than the newest etcd this quorate knows"),
    ] {
        let host = FakeHost {
            etcd_version: version,
        };
        let msg = validate(&base(), &host).expect_err(version).to_string();
        assert!(msg.contains("etcd.binary") && msg.contains(wanted), "{msg}");
    }
    let (_, warnings) = day2_flags_on("3.6.99", &base());
    assert!(
        warnings.iter().any(|w| w.contains("newer patch")),
        "{warnings:?}"
    );
}
