use super::*;

fn role(name: &str, prefixes: &[&str], access: Access) -> RoleDef {
    RoleDef {
        name: name.into(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        access,
        client_agents: false,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

#[test]
fn members_with_the_same_roles_in_another_order_agree() {
    let a = vec![
        role("app", &["/b/", "/a/"], Access::ReadWrite),
        role("ro", &["/a/"], Access::Read),
    ];
    let b = vec![
        role("ro", &["/a/"], Access::Read),
        role("app", &["/a/", "/b/", "/a/"], Access::ReadWrite),
    ];
    let published = BTreeMap::from([
        ("n1".to_string(), a.clone()),
        ("n2".to_string(), b),
        (
            "gone".to_string(),
            vec![role("old", &["/x/"], Access::Read)],
        ),
    ]);
    match agree(&names(&["n1", "n2"]), &published) {
        Agreement::Agreed(def) => assert_eq!(def, canonical(a)),
        other => panic!("expected agreement, got {other:?}"),
    }
}

#[test]
fn a_member_with_other_roles_is_a_conflict_naming_both_sides() {
    let published = BTreeMap::from([
        (
            "n1".to_string(),
            vec![role("app", &["/a/"], Access::ReadWrite)],
        ),
        (
            "n2".to_string(),
            vec![role("app", &["/a/"], Access::ReadWrite)],
        ),
        ("n3".to_string(), vec![role("app", &["/a/"], Access::Read)]),
    ]);
    let got = agree(&names(&["n1", "n2", "n3"]), &published);
    let Agreement::Conflict(lines) = &got else {
        panic!("expected a conflict, got {got:?}");
    };
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|l| l.starts_with("n1, n2: roles app")));
    assert!(lines.iter().any(|l| l.starts_with("n3: roles app")));
    assert!(got.describe().contains("CONFLICT"), "{}", got.describe());
}

#[test]
fn a_member_that_published_nothing_is_waited_for_and_a_conflict_wins_over_waiting() {
    let mut published = BTreeMap::from([("n1".to_string(), vec![])]);
    assert_eq!(
        agree(&names(&["n1", "n2"]), &published),
        Agreement::Waiting(names(&["n2"]))
    );
    published.insert("n3".into(), vec![role("app", &["/a/"], Access::Read)]);
    assert!(matches!(
        agree(&names(&["n1", "n2", "n3"]), &published),
        Agreement::Conflict(_)
    ));
    assert_eq!(
        agree(&names(&["n1"]), &published),
        Agreement::Agreed(vec![])
    );
}

#[test]
fn prefixes_that_reach_the_agents_keys_are_refused() {
    for bad in ["", "/", "/q", "/quorate", "/quorate/", "/quorate/ca"] {
        assert!(prefix_problem(bad).is_some(), "{bad:?} accepted");
    }
    for good in ["/app/", "/quorate0", "/quorate-data/", "a", "/r"] {
        assert_eq!(prefix_problem(good), None, "{good:?} refused");
    }
}

#[test]
fn a_prefix_becomes_the_range_up_to_its_successor() {
    let r = role("app", &["/a/", "a\u{7f}"], Access::Read);
    let ranges = permissions(&r);
    assert_eq!(ranges[0].key, b"/a/".to_vec());
    assert_eq!(ranges[0].end, b"/a0".to_vec());
    assert_eq!(ranges[1].end, b"a\x80".to_vec());
    assert_eq!(ranges[0].kind, PermissionType::Read as i32);
    assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    assert_eq!(prefix_end(&[0xff]), vec![0]);
}

#[test]
fn the_fingerprint_follows_the_content() {
    let a = vec![role("app", &["/a/"], Access::Read)];
    let b = vec![role("app", &["/a/"], Access::ReadWrite)];
    assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    assert_ne!(fingerprint(&a), fingerprint(&b));
    assert_eq!(fingerprint(&a).len(), 8);
}
