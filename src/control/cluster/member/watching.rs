//! The watch task: follows the pool's keys in etcd, from the revision the member last
//! read, and hands the batches to the member.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::super::etcd::{prefix_end, Client, EtcdError, WatchBatch};

/// Follows the pool's keys, from the revision the member last read, until aborted.
pub(super) async fn follow(
    client: Arc<Client>,
    prefix: Vec<u8>,
    from: Arc<AtomicI64>,
    batches: mpsc::Sender<Result<WatchBatch, EtcdError>>,
) {
    let end = prefix_end(&prefix);
    loop {
        match client
            .watch(&prefix, Some(&end), from.load(Ordering::Relaxed))
            .await
        {
            Ok(mut watch) => loop {
                match watch.next().await {
                    Ok(batch) => {
                        from.fetch_max(batch.revision + 1, Ordering::Relaxed);
                        if batches.send(Ok(batch)).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        if batches.send(Err(error)).await.is_err() {
                            return;
                        }
                        break;
                    }
                }
            },
            Err(error) => {
                if batches.send(Err(error)).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
