//! The node's HTTP endpoints on `api_listen`, and listeners: several binds per frontend,
//! and IP_FREEBIND (a standby binds a VIP it does not hold yet).

use crate::harness::node::alloc_ports;
use crate::harness::{open, src_ip, within, Backend, BackendCfg, FrontendCfg, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_endpoints() {
    let s1 = Backend::named("s1").spawn();
    let node = Node::new()
        .frontend(FrontendCfg::new("f", "b"))
        .backend(BackendCfg::new("b").server(s1.name(), s1.addr()))
        .spawn();
    assert_eq!(node.get("/healthz").0, 200, "GET /healthz");
    assert_eq!(node.get("/readyz").0, 200, "GET /readyz");
    let (status, text) = node.get("/metrics");
    assert_eq!(status, 200, "GET /metrics");
    // Every family of the contract is declared from the start, before any traffic.
    for family in [
        "ballast_frontend_connections_active",
        "ballast_frontend_connections_total",
        "ballast_server_connections_active",
        "ballast_server_connections_total",
        "ballast_server_up",
        "ballast_server_queue_length",
        "ballast_queue_timeouts_total",
        "ballast_health_check_failures_total",
        "ballast_connection_duration_seconds",
        "ballast_bytes_total",
    ] {
        let base = family.trim_end_matches("_total");
        assert!(
            text.lines()
                .any(|l| l.starts_with("# TYPE ") && l[7..].starts_with(base)),
            "no `# TYPE {base}` in /metrics:\n{text}"
        );
    }
    let up = [("backend", "b"), ("server", "s1")];
    assert_eq!(node.metric("ballast_server_up", &up), Some(1.0));
    assert_eq!(node.get("/no-such-path").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_binds_and_a_freebind_address_not_held() {
    let s1 = Backend::named("s1").spawn();
    let single = alloc_ports(1);
    let range = alloc_ports(2);
    let vip_port = alloc_ports(1);
    // 198.18.0.100 is a lab address (DESIGN.md) that this host does not hold: binding it
    // needs IP_FREEBIND; nothing is ever sent to or from it.
    let node = Node::new()
        .frontend(
            FrontendCfg::new("f", "b")
                .also_bind(&format!("127.0.0.1:{single}"))
                .also_bind(&format!("127.0.0.1:{range}-{}", range + 1))
                .also_bind(&format!("198.18.0.100:{vip_port}")),
        )
        .backend(
            BackendCfg::new("b")
                .stick_src()
                .server(s1.name(), s1.addr()),
        )
        .spawn();
    within(30, "several binds", async {
        let ports = [node.addr("f", 0).port(), single, range, range + 1];
        for (i, port) in ports.into_iter().enumerate() {
            let c = open(src_ip(91, i), ([127, 0, 0, 1], port).into())
                .await
                .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
            assert_eq!(c.server, "s1");
        }
        let f = [("frontend", "f")];
        assert_eq!(
            node.metric("ballast_frontend_connections_total", &f),
            Some(4.0)
        );
    })
    .await;
}
