//! The composition root: preflight, one shard per configured core, each with its hub,
//! its shard context and its own RTMP and HTTP listeners (SO_REUSEPORT); the dispatch
//! of cross-shard commands and hub events to the drivers; graceful shutdown. Nothing
//! imports this module but the binary (through `server::run`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::media::StreamKey;
use shards::event::LocalEvent;
use shards::hub::{Hub, HubConfig, HubEvent};
use shards::ring::RingConfig;
use shards::rt::{self, Queue, TcpListener, TcpStream};
use shards::topology::Topology;
use shards::{ShardContext, Shutdown};

use crate::server::access::{Access, Gate};
use crate::server::admission::{Admission, ConnectionBudget};
use crate::server::budget::InputBudget;
use crate::server::cmd::ShardCmd;
use crate::server::config::Config;
use crate::server::media::{StreamDirectory, StreamHub};
use crate::server::metrics::ShardMetrics;
use crate::server::shard::Shard;
use crate::server::streams::StreamTable;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Preflight(#[from] shards::preflight::PreflightError),
    #[error(transparent)]
    Config(#[from] crate::server::config::ConfigError),
    #[error("{0}")]
    Startup(String),
}

fn hub_config(config: &Config) -> HubConfig {
    let s = &config.streams;
    HubConfig {
        ring: RingConfig {
            slots: s.ring_slots,
            max_bytes: (s.gop_cache_bytes as usize).saturating_mul(4).max(1 << 20),
            gop_budget_bytes: s.gop_cache_bytes as usize,
            // 0 = never disconnect a lagging viewer (it still skips forward).
            max_lag_skips: if s.lag_skips_before_disconnect == 0 {
                u32::MAX
            } else {
                s.lag_skips_before_disconnect
            },
            lag_window: Duration::from_millis(s.lag_window_ms),
        },
        reconnect_grace: Duration::from_millis(s.reconnect_grace_ms),
        write_delay: Duration::from_millis(s.write_delay_ms),
        feed_batch: Duration::from_micros(s.feed_batch_us.max(1)),
        max_viewers: u64::from(s.max_viewers),
        max_viewers_per_stream: u64::from(s.max_viewers_per_stream),
        ..HubConfig::default()
    }
}

/// Run the server until SIGINT/SIGTERM.
pub fn run(config: Config) -> Result<(), ServerError> {
    shards::preflight::check()?;
    let _claims = claim_ports(&config)?;
    let topo = Topology::detect();
    let cpus = config.server.cores.resolve(&topo.online)?;
    let signals = shards::block_shutdown_signals()
        .map_err(|e| ServerError::Startup(format!("cannot block signals: {e}")))?;
    let shutdown = Shutdown::default();
    {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = signals.wait() {
                    tracing::info!(signal = %sig, "shutting down: no new connections; viewers drain");
                    shutdown.request();
                }
                if let Ok(sig) = signals.wait() {
                    tracing::warn!(signal = %sig, "second signal: exiting now");
                    std::process::exit(130);
                }
            })
            .map_err(|e| ServerError::Startup(format!("cannot start the signal thread: {e}")))?;
    }
    for (node, node_cpus) in &topo.nodes {
        let here: Vec<_> = cpus.iter().filter(|c| node_cpus.contains(c)).collect();
        if !here.is_empty() {
            tracing::info!(node, cpus = ?here, "NUMA node");
        }
    }
    tracing::info!(
        shards = cpus.len(),
        cpus = ?cpus,
        bind = %config.server.bind,
        rtmp_port = config.rtmp.enabled.then_some(config.rtmp.port),
        http_port = config.http.enabled.then_some(config.http.port),
        "starting shardcast {}",
        env!("CARGO_PKG_VERSION")
    );
    let open_files = shards::preflight::raise_open_files();
    let budget = Arc::new(ConnectionBudget::new(
        config.limits.effective_max_connections(open_files),
    ));
    tracing::info!(
        max_connections = budget.limit(),
        open_files,
        max_connections_per_ip = config.limits.max_connections_per_ip,
        accept_rate_per_ip = config.limits.accept_rate_per_ip,
        "admission limits"
    );
    let gate = Arc::new(Gate::load(&config).map_err(|e| ServerError::Startup(e.to_string()))?);
    for warning in config.access_warnings() {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        publish_token = config.publish_needs_token(""),
        play_token = config.play_needs_token(""),
        keys = ?gate.keys.ids().collect::<Vec<_>>(),
        api_token = config.api_needs_token(),
        hooks = ?config.hooks.all().map(|(k, h)| format!("{k} = {}", h.url)).collect::<Vec<_>>(),
        audit = ?config.audit.file.as_ref().map(|p| p.display().to_string()),
        "access control"
    );
    let config = Arc::new(config);
    let dir = Arc::new(StreamDirectory::new(config.streams.max_publishers as usize));
    let viewers = Arc::new(AtomicU64::new(0));
    let metrics: Arc<Vec<ShardMetrics>> =
        Arc::new((0..cpus.len()).map(|_| ShardMetrics::default()).collect());
    let fatal: Arc<Mutex<Vec<String>>> = Arc::default();
    let placement: Vec<Option<usize>> = cpus.iter().copied().map(Some).collect();
    let shared = Shared {
        config,
        dir,
        viewers,
        metrics,
        budget,
        gate,
        fatal: Arc::clone(&fatal),
    };
    let result = shards::run_shards(&placement, shutdown.clone(), move |ctx| {
        shard_main(ctx, shared.clone())
    });
    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !fatal.is_empty() {
        return Err(ServerError::Startup(fatal.join("; ")));
    }
    result.map_err(ServerError::Startup)?;
    tracing::info!("shardcast stopped");
    Ok(())
}

/// Make sure no other process serves our ports before the shards bind them with
/// SO_REUSEPORT (see `shards::instance`); the claims are held until the server stops.
fn claim_ports(config: &Config) -> Result<Vec<shards::instance::PortClaim>, ServerError> {
    let bind = config.server.bind;
    let mut ports = Vec::new();
    if config.rtmp.enabled {
        ports.push((Protocol::Rtmp, config.rtmp.port));
    }
    if config.http.enabled {
        ports.push((Protocol::Http, config.http.port));
    }
    ports
        .into_iter()
        .map(|(protocol, port)| {
            let addr = SocketAddr::new(bind, port);
            shards::instance::claim_tcp(addr).map_err(|e| {
                ServerError::Startup(format!(
                    "cannot listen on {addr} for {}: {e}; stop it or set {}.port (two servers \
                     on one port would silently split its connections)",
                    protocol.name(),
                    protocol.name().to_lowercase()
                ))
            })
        })
        .collect()
}

/// What every shard starts with: the process-wide state the shards share.
#[derive(Clone)]
struct Shared {
    config: Arc<Config>,
    dir: Arc<StreamDirectory>,
    viewers: Arc<AtomicU64>,
    metrics: Arc<Vec<ShardMetrics>>,
    budget: Arc<ConnectionBudget>,
    gate: Arc<Gate>,
    fatal: Arc<Mutex<Vec<String>>>,
}

async fn shard_main(mut ctx: ShardContext<crate::server::media::MeshBatch>, shared: Shared) {
    let Shared {
        config,
        dir,
        viewers,
        metrics,
        budget,
        gate,
        fatal,
    } = shared;
    let hub: Rc<StreamHub> = Hub::start(
        &mut ctx,
        dir,
        viewers,
        hub_config(&config),
        crate::server::media::describe_frame,
    )
    .await;
    let admission = Admission::new(&config.limits, budget, Arc::clone(&metrics), ctx.id);
    let shard = Rc::new(Shard {
        id: ctx.id,
        count: ctx.count,
        hub,
        config: Arc::clone(&config),
        streams: RefCell::new(StreamTable::new(Arc::clone(&metrics), ctx.id)),
        input_budget: RefCell::new(InputBudget::new(
            config.limits.max_buffered_input_bytes_per_shard as usize,
        )),
        access: Access::new(gate, Arc::clone(&config), Arc::clone(&metrics), ctx.id),
        refusal_log: RefCell::default(),
        metrics,
        shutdown: ctx.shutdown.clone(),
        stopping: LocalEvent::default(),
        started: Instant::now(),
        admission,
    });
    let weak = Rc::downgrade(&shard);
    shard.hub.set_handler(move |ev| {
        if let Some(shard) = weak.upgrade() {
            dispatch(&shard, ev);
        }
    });
    crate::server::pacing::start(&shard);
    shard.access.audit.start();
    rt::spawn(Queue::Control, {
        let shard = Rc::clone(&shard);
        async move {
            let admission = Rc::clone(&shard.admission);
            admission.sweep_until(shard.stopping.wait()).await
        }
    });

    let bind = config.server.bind;
    let mut listeners = Vec::new();
    if config.rtmp.enabled {
        listeners.push((Protocol::Rtmp, SocketAddr::new(bind, config.rtmp.port)));
    }
    if config.http.enabled {
        listeners.push((Protocol::Http, SocketAddr::new(bind, config.http.port)));
    }
    for (protocol, addr) in listeners {
        match TcpListener::bind(addr) {
            Ok(listener) => {
                if shard.id == 0 {
                    tracing::info!(%addr, protocol = protocol.name(), "listening (every shard, SO_REUSEPORT)");
                }
                rt::spawn(
                    Queue::Control,
                    accept_loop(listener, protocol, Rc::clone(&shard)),
                );
            }
            Err(e) => {
                let msg = format!(
                    "cannot listen on {addr} for {}: {e} (is another server using the port? set {}.port)",
                    protocol.name(),
                    protocol.name().to_lowercase()
                );
                tracing::error!("{msg}");
                fatal.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
                shard.shutdown.request();
            }
        }
    }
    tracing::info!(shard = shard.id, cpu = ?ctx.cpu, node = ctx.node, "shard running");

    shard.shutdown.requested().await;
    shard.stopping.fire();
    shard.hub.end_all();
    let deadline = Instant::now() + Duration::from_millis(config.server.shutdown_timeout_ms);
    while shard.metrics().draining() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(20)).await;
    }
    let left = shard.metrics().draining();
    if left > 0 {
        tracing::warn!(
            shard = shard.id,
            connections_and_recordings = left,
            "closing connections and recordings still open at the shutdown timeout"
        );
    }
}

/// What another shard (or this one) asked of this shard, and what the hub reports.
fn dispatch(shard: &Rc<Shard>, ev: HubEvent<StreamKey, ShardCmd>) {
    match ev {
        HubEvent::Command(ShardCmd::AdoptPublisher(h)) => crate::server::rtmp::adopt(shard, h),
        HubEvent::Command(ShardCmd::HlsUpdated { key }) => shard.streams.borrow().notify(&key),
        HubEvent::Command(ShardCmd::Kick { key }) => shard.kick(&key),
        HubEvent::Command(ShardCmd::StreamEnded { key }) => {
            shard.streams.borrow_mut().ended(&key, None)
        }
        // The owner frees the stream's state and tells every shard, so requests
        // blocked on it anywhere answer at once.
        HubEvent::StreamEnded { key, claim } => {
            shard.streams.borrow_mut().ended(&key, Some(claim));
            for to in (0..shard.count).filter(|&to| to != shard.id) {
                shard
                    .hub
                    .send(to, ShardCmd::StreamEnded { key: key.clone() });
            }
        }
        // A mirror holds no state outside the hub.
        HubEvent::MirrorEnded { .. } => {}
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Rtmp,
    Http,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "RTMP",
            Protocol::Http => "HTTP",
        }
    }
}

async fn accept_loop(listener: TcpListener, protocol: Protocol, shard: Rc<Shard>) {
    loop {
        let accepted = rt::or(async { Some(listener.accept().await) }, async {
            shard.stopping.wait().await;
            None
        })
        .await;
        let stream: TcpStream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(protocol = protocol.name(), error = %e, "accept failed");
                rt::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A refused connection costs this accept and a close: no task, no buffer. So
        // does one the peer reset before we accepted it (it has no peer address).
        let Ok(peer) = stream.peer_addr() else {
            drop(stream);
            rt::yield_if_needed().await;
            continue;
        };
        let admitted = match shard.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                // Logged so an operator sees a limit biting, at most 10 lines a second
                // per shard (the counter has them all).
                if let Some(suppressed) = shard.refusal_log.borrow_mut().admit(Instant::now()) {
                    tracing::info!(
                        %peer,
                        protocol = protocol.name(),
                        reason = why.label(),
                        suppressed,
                        "connection refused by [limits]"
                    );
                }
                stream.reset();
                // A flood keeps accept() ready; let the shard's other tasks run.
                rt::yield_if_needed().await;
                continue;
            }
        };
        // No TCP_NODELAY: with Nagle, a viewer's small frames (audio) share segments while
        // earlier data is in flight, which cut the server's CPU per viewer by ~15% in the
        // benchmark at no measurable latency cost on a live stream (bench/RESULTS.md).
        if let Some(bytes) = shard.config.streams.viewer_send_buffer_bytes {
            let _ = stream.set_send_buffer(bytes as usize);
        }
        let shard = Rc::clone(&shard);
        let counter = shard.id;
        let on_panic = move |msg: String| {
            tracing::error!(
                shard = counter,
                ?peer,
                protocol = protocol.name(),
                "bug: connection task panicked: {msg}; only this connection was closed"
            );
        };
        match protocol {
            Protocol::Rtmp => rt::spawn_contained(
                Queue::Media,
                async move {
                    let _admitted = admitted;
                    ShardMetrics::add(&shard.metrics().rtmp_connections, 1);
                    let _open = shard.hold(|m| &m.open);
                    crate::server::rtmp::serve(stream, Some(peer), Rc::clone(&shard)).await;
                },
                on_panic,
            ),
            Protocol::Http => rt::spawn_contained(
                Queue::Media,
                async move {
                    let _admitted = admitted;
                    ShardMetrics::add(&shard.metrics().http_connections, 1);
                    let _open = shard.hold(|m| &m.open);
                    crate::server::http::serve(stream, Some(peer), Rc::clone(&shard)).await;
                },
                on_panic,
            ),
        }
    }
}
