//! Roles in client requests: only the ones the issuer's config defines, never for a node.
use super::*;

#[test]
fn a_client_may_ask_a_defined_role_and_a_node_none() {
    let v = three_nodes();
    let roles = vec!["app".to_string(), "ro".to_string()];
    let with_roles = SignContext {
        roles: &roles,
        ..ctx(&v)
    };
    let ask = |name: &str, kind: CertKind, role: Option<&str>| {
        let req = SignRequest {
            role: role.map(str::to_owned),
            ..request(name, kind)
        };
        decide_req(&with_roles, &req)
    };
    let granted = ask("omni", CertKind::Client, Some("ro")).unwrap();
    assert_eq!(granted.role.as_deref(), Some("ro"));
    assert_eq!(ask("omni", CertKind::Client, None).unwrap().role, None);
    let unknown = ask("omni", CertKind::Client, Some("admin")).unwrap_err();
    assert_eq!(
        unknown,
        Refusal::UnknownRole {
            role: "admin".into(),
            known: roles.clone(),
        }
    );
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.to_string().contains("(app, ro)"), "{unknown}");
    assert_eq!(
        ask("etcd-2", CertKind::Node, Some("app")).unwrap_err(),
        Refusal::RoleForNode
    );
    // With no roles defined, every role is unknown, and the answer says so.
    let none = decide_req(
        &ctx(&v),
        &SignRequest {
            role: Some("app".into()),
            ..request("omni", CertKind::Client)
        },
    )
    .unwrap_err();
    assert!(none.to_string().contains("none is defined"), "{none}");
}
