//! Issue 4 groundwork: changes through the API are applied live, in the same process,
//! without touching established connections.

use std::time::Duration;

use super::harness::{wait_until, Cluster};
use crate::harness::{open, src_ip, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_apply_live_without_touching_established_connections() {
    let s1 = Backend::named("s1").spawn();
    let s2 = Backend::named("s2").spawn();
    let s3 = Backend::named("s3").spawn();
    let cluster = Cluster::builder()
        .lb(1)
        .server("s1", s1.addr())
        .server("s2", s2.addr())
        .spawn();
    let pid = cluster.pid(1).expect("running");
    // 20 clients stay connected through every change.
    let mut held = Vec::new();
    for i in 0..20 {
        held.push(
            open(src_ip(31, i), cluster.frontend_addr(1, (i % 3) as u16))
                .await
                .expect("connect"),
        );
    }

    // A new server takes new clients at once (it has none: leastconn picks it).
    let (status, body) = cluster
        .request(
            1,
            "PUT",
            "/v1/backends/b/servers/s3",
            &format!(r#"{{"addr":"{}"}}"#, s3.addr()),
        )
        .expect("put server");
    assert_eq!(status, 200, "{body}");
    let fresh = open(src_ip(32, 0), cluster.frontend_addr(1, 0))
        .await
        .expect("connect");
    assert_eq!(fresh.server, "s3");

    // Drain s1: no new client lands there.
    let (status, body) = cluster
        .request(
            1,
            "POST",
            "/v1/backends/b/servers/s1/state",
            r#"{"admin":"drain"}"#,
        )
        .expect("drain");
    assert_eq!(status, 200, "{body}");
    for i in 1..10 {
        let c = open(src_ip(32, i), cluster.frontend_addr(1, 1))
            .await
            .expect("connect");
        assert_ne!(c.server, "s1", "a drained server took a new client");
    }

    // A frontend port is added, used, and removed.
    let extra = crate::harness::node::alloc_ports(1);
    let apply = |extra_port: Option<u16>| {
        let mut frontends = vec![format!(
            r#"{{"name":"f","bind":["0.0.0.0:{}-{}"],"backend":"b"}}"#,
            cluster.frontend_addr(1, 0).port(),
            cluster.frontend_addr(1, 2).port()
        )];
        if let Some(p) = extra_port {
            frontends.push(format!(
                r#"{{"name":"g","bind":["0.0.0.0:{p}"],"backend":"b"}}"#
            ));
        }
        format!(
            r#"{{"frontend":[{}],"backend":[{{"name":"b","balance":"leastconn","timeout_connect":"1s","stick":{{"on":"src","size":300000,"expire":"1h"}},"servers":[{{"name":"s1","addr":"{}","admin":"drain"}},{{"name":"s2","addr":"{}"}},{{"name":"s3","addr":"{}"}}]}}]}}"#,
            frontends.join(","),
            s1.addr(),
            s2.addr(),
            s3.addr()
        )
    };
    let (status, body) = cluster
        .post(1, "/v1/apply?dry_run=true", &apply(Some(extra)))
        .expect("dry run");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""added":["g"]"#), "{body}");
    let (status, body) = cluster
        .post(1, "/v1/apply", &apply(Some(extra)))
        .expect("apply");
    assert_eq!(status, 200, "{body}");
    let extra_addr = std::net::SocketAddr::from((cluster.node(1).bind_ip(), extra));
    let opened = wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(extra_addr).is_ok()
    });
    assert!(opened, "the added port never opened");
    let (status, body) = cluster.post(1, "/v1/apply", &apply(None)).expect("apply");
    assert_eq!(status, 200, "{body}");
    let closed = wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(extra_addr).is_err()
    });
    assert!(closed, "the removed port still accepts");

    // Removing a server keeps its connections by default; `shutdown=true` closes them.
    let mut fresh = fresh;
    let (status, body) = cluster
        .request(1, "DELETE", "/v1/backends/b/servers/s3?shutdown=true", "")
        .expect("delete server");
    assert_eq!(status, 200, "{body}");
    let closed = crate::harness::read_to_eof(&mut fresh.stream, Duration::from_secs(5)).await;
    let ended = match &closed {
        Ok(rest) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        ended,
        "the removed server's connection stayed open: {closed:?}"
    );

    // Every held connection still works, on its original server; one process all along.
    for (i, conn) in held.iter_mut().enumerate() {
        conn.echo(format!("still here {i}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("held connection {i} broke: {e}"));
    }
    assert_eq!(cluster.pid(1), Some(pid), "same process");
    let (status, body) = cluster
        .request(1, "DELETE", "/v1/backends/b", "")
        .expect("delete");
    assert_eq!(status, 409, "a backend in use cannot go: {body}");
    assert!(body.contains(r#""code":"conflict""#));
}
