//! What the client token admits: client certificates under names no agent uses, nothing else.
use super::*;

const CLIENT_KEY: [u8; 32] = [9; 32];

fn with_client_token<'a>(ctx: &SignContext<'a>) -> SignContext<'a> {
    SignContext {
        client_proof_key: Some(&CLIENT_KEY),
        ..*ctx
    }
}

/// A refusal answered 403 and counted in `api_rejected_identity`.
#[track_caller]
fn assert_forbidden_and_counted_as_identity(refusal: &Refusal) {
    assert_eq!(refusal.status(), StatusCode::FORBIDDEN, "{refusal:?}");
    let counters = Counters::default();
    refusal.count(&counters);
    assert_eq!(
        counters
            .api_rejected_identity
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "{refusal:?}"
    );
}

/// Decides `req` proved with the client token.
fn by_client(ctx: &SignContext<'_>, req: &SignRequest) -> Result<Grant, Refusal> {
    let body = serde_json::to_vec(req).unwrap();
    decide(ctx, &body, &proof::sign(&CLIENT_KEY, &body))
}

#[test]
fn the_client_token_gets_client_certificates() {
    let v = three_nodes();
    let ctx = with_client_token(&ctx(&v));
    let grant = by_client(&ctx, &request("omni", CertKind::Client)).unwrap();
    assert_eq!(grant.spec.common_name, "omni");
    assert!(grant.spec.client_auth && !grant.spec.server_auth);
    assert!(grant.spec.ips.is_empty() && grant.spec.dns_names.is_empty());
    // The join token still works beside it.
    assert!(decide_req(&ctx, &request("omni", CertKind::Client)).is_ok());
}

#[test]
fn the_client_token_never_gets_a_node_certificate() {
    let v = three_nodes();
    let ctx = with_client_token(&ctx(&v));
    // Not a live member's name, not a free name, not from the right address.
    for name in ["etcd-2", "new-node", "etcd-1"] {
        let refusal = by_client(&ctx, &request(name, CertKind::Node)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::NodeWithClientToken {
                name: name.to_owned()
            }
        );
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert!(refusal.is_invalid());
        assert!(refusal.to_string().contains("join token"), "{refusal}");
    }
}

#[test]
fn the_client_token_cannot_take_the_agents_names() {
    let v = three_nodes();
    let ctx = with_client_token(&ctx(&v));
    for name in [
        "root",
        "ROOT",
        "quorate",
        "quorate-agent",
        "Quorate-x",
        "etcd-1",
        "node_3",
    ] {
        let refusal = by_client(&ctx, &request(name, CertKind::Client)).unwrap_err();
        assert!(
            matches!(&refusal, Refusal::ReservedName { name: n, .. } if n == name),
            "{name}: {refusal:?}"
        );
        assert_forbidden_and_counted_as_identity(&refusal);
    }
    // Names that only contain those words are fine.
    assert!(by_client(&ctx, &request("app-quorate", CertKind::Client)).is_ok());
    assert!(by_client(&ctx, &request("rooted", CertKind::Client)).is_ok());
}

#[test]
fn without_a_client_token_in_the_cluster_its_proof_proves_nothing() {
    let v = three_nodes();
    let ctx = ctx(&v);
    assert_eq!(
        by_client(&ctx, &request("omni", CertKind::Client)),
        Err(Refusal::Unauthenticated)
    );
    // Nor does another client token's.
    let other = [10u8; 32];
    let ctx = SignContext {
        client_proof_key: Some(&other),
        ..ctx
    };
    assert_eq!(
        by_client(&ctx, &request("omni", CertKind::Client)),
        Err(Refusal::Unauthenticated)
    );
}

#[test]
fn the_client_token_gets_only_the_roles_open_to_client_agents() {
    let v = three_nodes();
    let roles = vec!["app".to_string(), "ro".to_string()];
    let open = vec!["ro".to_string()];
    let base = ctx(&v);
    let ctx = SignContext {
        roles: &roles,
        client_agent_roles: &open,
        ..with_client_token(&base)
    };
    let with_role = |role: Option<&str>| SignRequest {
        role: role.map(str::to_owned),
        ..request("dashboard", CertKind::Client)
    };
    assert_eq!(
        by_client(&ctx, &with_role(Some("ro")))
            .unwrap()
            .role
            .as_deref(),
        Some("ro")
    );
    // The default role stays open to it, as to `quorate cert client`.
    assert_eq!(by_client(&ctx, &with_role(None)).unwrap().role, None);
    let refusal = by_client(&ctx, &with_role(Some("app"))).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::RoleNotForClientAgents {
            role: "app".into(),
            allowed: open.clone(),
        }
    );
    assert_forbidden_and_counted_as_identity(&refusal);
    let message = refusal.to_string();
    assert!(
        message.contains("client_agents = true") && message.contains("open: ro"),
        "{message}"
    );
    // An undefined role is unknown whoever asks; the join token gets every defined role.
    assert!(matches!(
        by_client(&ctx, &with_role(Some("admin"))),
        Err(Refusal::UnknownRole { .. })
    ));
    assert_eq!(
        decide_req(&ctx, &with_role(Some("app")))
            .unwrap()
            .role
            .as_deref(),
        Some("app")
    );
}
