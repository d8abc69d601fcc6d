//! The shipped Prometheus alert rules are valid (`promtool check rules`) and do what they say
//! (`promtool test rules`: each alert fires in its bad case and stays quiet in a healthy one).

use quorate_tests::prometheus::{alert_rule_tests, alert_rules, promtool};

/// Every alert the rules file defines; the unit tests must cover each.
const ALERTS: &[&str] = &[
    "QuorateCertificateExpiresSoon",
    "QuorateNoQuorum",
    "QuorateMemberDown",
    "QuorateEtcdNoSpace",
    "QuorateEtcdDatabaseNearQuota",
    "QuorateEtcdDatabaseFragmented",
    "QuorateGossipMemberDown",
    "QuorateSnapshotMissing",
    "QuorateSnapshotUploadFailing",
    "QuorateRolesConflict",
    "QuorateNewVoter",
];

fn ok(what: &str, o: std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn shipped_alert_rules_are_valid() {
    let rules = alert_rules();
    let dir = rules.parent().unwrap();
    let out = ok(
        "promtool check rules",
        promtool(dir, &["check", "rules", "quorate-alerts.yml"]),
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{out}"
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    for alert in ALERTS {
        assert!(text.contains(&format!("- alert: {alert}\n")), "{alert}");
    }
    // Each alert has a summary and a runbook anchor that docs/operations.md defines.
    let ops = std::fs::read_to_string(dir.join("../../docs/operations.md")).unwrap();
    assert_eq!(text.matches("summary:").count(), ALERTS.len());
    assert_eq!(text.matches("runbook:").count(), ALERTS.len());
    for alert in ALERTS {
        let anchor = format!("operations.md#{}\"", alert.to_lowercase());
        assert!(text.contains(&anchor), "no runbook {anchor} for {alert}");
        assert!(
            ops.contains(&format!("\n### {alert}\n")),
            "docs/operations.md has no section for {alert}"
        );
    }
}

#[test]
fn every_alert_fires_when_it_should_and_not_when_healthy() {
    let tests = alert_rule_tests();
    let dir = tests.parent().unwrap();
    let out = ok(
        "promtool test rules",
        promtool(dir, &["test", "rules", "quorate-alerts.test.yml"]),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Each alert appears in a firing case (with expected labels) and in a quiet one.
    let text = std::fs::read_to_string(&tests).unwrap();
    for alert in ALERTS {
        let firing = format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels");
        let quiet = format!("alertname: {alert}, exp_alerts: []}}");
        assert!(text.contains(&firing), "no firing case for {alert}");
        assert!(text.contains(&quiet), "no healthy case for {alert}");
    }
}
