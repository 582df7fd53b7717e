//! Two real executors (one per core of the CI machine): a stream owned by shard 0 is
//! read by viewers on shard 0 and, through one feed, on shard 1.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use shards::directory::Directory;
use shards::hub::{Hub, HubConfig};
use shards::ring::{ItemMeta, Next};
use shards::{rt, run_shards, Shutdown};

#[derive(Clone, Debug, PartialEq)]
struct Item(u32);

fn describe(item: &Item) -> ItemMeta {
    ItemMeta {
        keyframe: item.0 != 0 && item.0 % 10 == 0,
        video: true,
        config_slot: (item.0 == 0).then_some(0),
        byte_len: 100,
    }
}

type TestHub = Hub<String, Item, ()>;

fn cpus() -> Vec<Option<usize>> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    vec![Some(0), Some(1 % n)]
}

async fn read_all(mut sub: shards::hub::Subscription<String, Item, ()>) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        match sub.next() {
            Next::Item { item, .. } => got.push(item.0),
            Next::Pending => sub.wait().await,
            Next::Ended => return got,
            Next::TooSlow { .. } => panic!("test viewer fell behind"),
        }
    }
}

#[test]
fn viewers_on_both_shards_get_the_owners_sequence() {
    let dir = Arc::new(Directory::<String, ()>::new(0));
    let viewers = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<(usize, Vec<u32>)>();
    let config = HubConfig {
        reconnect_grace: Duration::from_millis(50),
        ..HubConfig::default()
    };
    run_shards::<_, _, _>(&cpus(), Shutdown::default(), move |mut ctx| {
        let (dir, viewers, published, tx, config) = (
            Arc::clone(&dir),
            Arc::clone(&viewers),
            Arc::clone(&published),
            tx.clone(),
            config.clone(),
        );
        async move {
            let hub: std::rc::Rc<TestHub> =
                Hub::start(&mut ctx, dir, viewers, config, describe).await;
            if ctx.id == 0 {
                let publisher = hub.publish(&"live/a".to_string(), || ()).unwrap();
                let sub = hub.subscribe(&"live/a".to_string()).unwrap();
                let local = rt::spawn_task(rt::Queue::Media, read_all(sub));
                for n in 0..200u32 {
                    publisher.push(Item(n));
                    published.store(n as usize + 1, Ordering::Release);
                    if n >= 50 {
                        rt::sleep(Duration::from_millis(1)).await;
                    }
                }
                drop(publisher);
                tx.send((0, local.await)).unwrap();
            } else {
                while published.load(Ordering::Acquire) < 50 {
                    rt::sleep(Duration::from_millis(1)).await;
                }
                let got = read_all(hub.subscribe(&"live/a".to_string()).unwrap()).await;
                assert_eq!(hub.stats().mirrors, 0, "the mirror closed with the stream");
                tx.send((1, got)).unwrap();
            }
        }
    })
    .unwrap();
    let mut results: Vec<_> = rx.try_iter().collect();
    results.sort();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0].1,
        (0..200).collect::<Vec<_>>(),
        "local viewer sees every item in order"
    );
    let remote = &results[1].1;
    assert_eq!(remote[0], 0, "remote viewer starts with the config");
    let start = remote[1];
    assert!(
        start >= 40 && start % 10 == 0,
        "remote viewer starts at a keyframe, got {start}"
    );
    assert_eq!(
        remote[1..],
        (start..200).collect::<Vec<_>>()[..],
        "no gap, no duplicate after the snapshot"
    );
}

#[test]
fn feed_closes_after_last_remote_viewer_leaves() {
    let dir = Arc::new(Directory::<String, ()>::new(0));
    let viewers = Arc::new(AtomicU64::new(0));
    let phase = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<String>();
    let config = HubConfig {
        reconnect_grace: Duration::from_millis(20),
        ..HubConfig::default()
    };
    run_shards::<_, _, _>(&cpus(), Shutdown::default(), move |mut ctx| {
        let (dir, viewers, phase, tx, config) = (
            Arc::clone(&dir),
            Arc::clone(&viewers),
            Arc::clone(&phase),
            tx.clone(),
            config.clone(),
        );
        async move {
            let hub: std::rc::Rc<TestHub> =
                Hub::start(&mut ctx, dir, viewers, config, describe).await;
            let wait_phase = |p: usize| {
                let phase = Arc::clone(&phase);
                async move {
                    while phase.load(Ordering::Acquire) < p {
                        rt::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            if ctx.id == 0 {
                let publisher = hub.publish(&"live/b".to_string(), || ()).unwrap();
                publisher.push(Item(0));
                publisher.push(Item(10));
                phase.store(1, Ordering::Release);
                wait_phase(2).await; // shard 1 has two viewers
                for _ in 0..100 {
                    if hub.stats().feeds_out == 1 {
                        break;
                    }
                    rt::sleep(Duration::from_millis(1)).await;
                }
                tx.send(format!(
                    "feeds with two remote viewers: {}",
                    hub.stats().feeds_out
                ))
                .unwrap();
                phase.store(3, Ordering::Release);
                wait_phase(4).await; // shard 1 viewers left
                for _ in 0..100 {
                    if hub.stats().feeds_out == 0 {
                        break;
                    }
                    rt::sleep(Duration::from_millis(1)).await;
                }
                tx.send(format!("feeds after they left: {}", hub.stats().feeds_out))
                    .unwrap();
                drop(publisher);
            } else {
                wait_phase(1).await;
                let key = "live/b".to_string();
                let mut a = hub.subscribe(&key).unwrap();
                let b = hub.subscribe(&key).unwrap();
                assert!(a.is_remote() && b.is_remote());
                // The snapshot arrives through the feed.
                let mut got = Vec::new();
                while got.len() < 2 {
                    match a.next() {
                        Next::Item { item, .. } => got.push(item.0),
                        _ => a.wait().await,
                    }
                }
                tx.send(format!(
                    "remote got {got:?}, mirrors {}",
                    hub.stats().mirrors
                ))
                .unwrap();
                phase.store(2, Ordering::Release);
                wait_phase(3).await;
                drop(a);
                assert_eq!(hub.stats().mirrors, 1, "one viewer left: the mirror stays");
                drop(b);
                tx.send(format!("mirrors after both left: {}", hub.stats().mirrors))
                    .unwrap();
                phase.store(4, Ordering::Release);
            }
        }
    })
    .unwrap();
    let mut lines: Vec<String> = rx.try_iter().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "feeds after they left: 0".to_string(),
            "feeds with two remote viewers: 1".to_string(),
            "mirrors after both left: 0".to_string(),
            "remote got [0, 10], mirrors 1".to_string(),
        ]
    );
}
