//! Cluster mode against a real etcd (Debian's etcd-server) on loopback: the etcd
//! client first, then proxy instances as separate processes of the real binary.

mod support;

use std::time::Duration;

use jenkins_ha_proxy::cluster::etcd::{prefix_end, Client, Cmp, Compare, Event, Op, OpResult};
use support::etcd::EtcdCluster;

/// The client's calls, each against the real store: leases, a compare-and-swap that
/// only one of two writers wins, ranges, a watch that sees puts, deletes and a lease
/// expiring.
#[tokio::test]
async fn the_etcd_client_speaks_the_json_gateway() {
    let etcd = EtcdCluster::start(1).await;
    let client = Client::new(&etcd.urls(), Duration::from_secs(2)).expect("client");
    let lease = client.grant(Duration::from_secs(2)).await.expect("grant");
    assert!(lease.ttl >= Duration::from_secs(2), "{lease:?}");
    let mut watch = client
        .watch(b"/t/", Some(&prefix_end(b"/t/")), 0)
        .await
        .expect("watch");

    // Create-if-absent: the first writer wins, the second reads what is there.
    let create = |value: &'static [u8]| {
        let client = &client;
        async move {
            client
                .txn(
                    &[Compare::Version(b"/t/leader".to_vec(), Cmp::Equal, 0)],
                    &[Op::Put {
                        key: b"/t/leader".to_vec(),
                        value: value.to_vec(),
                        lease: lease.id,
                    }],
                    &[Op::Range {
                        key: b"/t/leader".to_vec(),
                        range_end: None,
                    }],
                )
                .await
                .expect("txn")
        }
    };
    let first = create(b"one").await;
    assert!(first.succeeded);
    let second = create(b"two").await;
    assert!(!second.succeeded);
    match &second.results[..] {
        [OpResult::Range(kvs)] => {
            assert_eq!(kvs[0].value, b"one");
            assert_eq!(kvs[0].create_revision, first.revision);
            assert_eq!(kvs[0].lease, lease.id);
        }
        other => panic!("{other:?}"),
    }
    client.put(b"/t/plain", b"x", 0).await.expect("put");
    let range = client
        .range(b"/t/", Some(&prefix_end(b"/t/")))
        .await
        .expect("range");
    assert_eq!(range.kvs.len(), 2);
    assert_eq!(client.delete(b"/t/plain", None).await.expect("delete"), 1);

    // The watch saw it all, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(support::DEADLINE, watch.next())
            .await
            .expect("watch in time")
            .expect("watch batch");
        seen.extend(batch.events);
    }
    assert!(matches!(&seen[0], Event::Put(kv) if kv.key == b"/t/leader" && kv.value == b"one"));
    assert!(matches!(&seen[1], Event::Put(kv) if kv.key == b"/t/plain"));
    assert!(matches!(&seen[2], Event::Delete(kv) if kv.key == b"/t/plain"));

    // Kept alive, the lease lives on; left alone, it expires and takes its key along.
    assert!(client
        .keep_alive(lease.id)
        .await
        .expect("keepalive")
        .is_some());
    let expired = tokio::time::timeout(support::DEADLINE, async {
        loop {
            let batch = watch.next().await.expect("watch batch");
            if batch
                .events
                .iter()
                .any(|e| matches!(e, Event::Delete(kv) if kv.key == b"/t/leader"))
            {
                return;
            }
        }
    })
    .await;
    assert!(expired.is_ok(), "the leased key outlived its lease");
    assert_eq!(client.keep_alive(lease.id).await.expect("keepalive"), None);
    client
        .revoke(
            client
                .grant(Duration::from_secs(5))
                .await
                .expect("grant")
                .id,
        )
        .await
        .expect("revoke");
}

/// A member that does not answer is skipped: the client moves on to the next.
#[tokio::test]
async fn the_etcd_client_moves_on_from_a_dead_member() {
    let mut etcd = EtcdCluster::start(3).await;
    etcd.kill(0).await;
    // Long enough for the others to elect a new raft leader if the dead one was it.
    let client = Client::new(&etcd.urls(), Duration::from_secs(3)).expect("client");
    client
        .put(b"/m/k", b"v", 0)
        .await
        .expect("put through a live member");
    let range = client.range(b"/m/k", None).await.expect("range");
    assert_eq!(range.kvs[0].value, b"v");
}
