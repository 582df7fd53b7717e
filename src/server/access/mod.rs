//! Access control at run time: who may publish and play, through the one check every
//! protocol calls ([`Access::decide`]), plus the API's bearer token, webhooks and the
//! audit log.
//!
//! A decision is, in order:
//! 1. the signed token (`proto::auth`), when `[auth]` requires one for the action and
//!    app; a token given where none is required is still read, so its claims reach
//!    the hook;
//! 2. the decision hook (`hooks.on_publish`, `hooks.on_play`), when configured: an
//!    async HTTP call from the shard (see [`client`]), bounded in time and in the
//!    number in flight per shard, with its `fail` policy when it gives no answer;
//! 3. one audit line, one counter by reason, and for a refusal one log line
//!    (rate-limited per shard, so a flood of bad tokens cannot flood the log).
//!
//! [`Gate`] is built once at start (secrets read, hook hosts resolved) and shared by
//! every shard; [`Access`] is one shard's view of it.

pub mod audit;
pub mod client;
pub mod keys;

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use proto::auth::{self, Claims, Keyring};
use proto::http::Status;
use proto::media::StreamKey;
use serde_json::{json, Value};
use shards::rt::{self, Queue};

use crate::server::config::{Config, HookConfig, HookFailure};
use crate::server::metrics::{Denial, HookOutcome, ShardMetrics};

pub use auth::Action;
pub use keys::SecretError;

use self::audit::{Audit, Entry};

/// The protocol a request came in by, as audit lines and hooks name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
    Hls,
    Http,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
            Protocol::Hls => "hls",
            Protocol::Http => "http",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{hook}: cannot resolve {host}: {source}")]
    Resolve {
        hook: &'static str,
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// A hook with its resolved addresses.
struct Hook {
    name: &'static str,
    config: HookConfig,
    addrs: Vec<SocketAddr>,
}

#[derive(Default)]
struct Hooks {
    on_publish: Option<Hook>,
    on_unpublish: Option<Hook>,
    on_play: Option<Hook>,
    on_stop: Option<Hook>,
    on_record_done: Option<Hook>,
}

/// What every shard shares: the keyring, the API token and the hooks. Built once at
/// start; secrets never leave it (its Debug shows key ids only).
pub struct Gate {
    pub keys: Keyring,
    api_token: Option<Vec<u8>>,
    hooks: Hooks,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("keys", &self.keys)
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Read the secrets and resolve the hooks' hosts (blocking: at start only).
    pub fn load(config: &Config) -> Result<Gate, AccessError> {
        let keys = keys::load_keyring(&config.auth)?;
        let api_token = config
            .http
            .api_token_file
            .as_deref()
            .map(|p| keys::read_secret_file(p, "http.api_token_file"))
            .transpose()?;
        let resolve =
            |name: &'static str, h: &Option<HookConfig>| -> Result<Option<Hook>, AccessError> {
                let Some(h) = h else { return Ok(None) };
                let addrs: Vec<SocketAddr> = (h.url.host.as_str(), h.url.port)
                    .to_socket_addrs()
                    .map_err(|source| AccessError::Resolve {
                        hook: name,
                        host: h.url.host.clone(),
                        source,
                    })?
                    .collect();
                Ok(Some(Hook {
                    name,
                    config: h.clone(),
                    addrs,
                }))
            };
        let c = &config.hooks;
        let hooks = Hooks {
            on_publish: resolve("on_publish", &c.on_publish)?,
            on_unpublish: resolve("on_unpublish", &c.on_unpublish)?,
            on_play: resolve("on_play", &c.on_play)?,
            on_stop: resolve("on_stop", &c.on_stop)?,
            on_record_done: resolve("on_record_done", &c.on_record_done)?,
        };
        Ok(Gate {
            keys,
            api_token,
            hooks,
        })
    }

    /// A gate with no secrets and no hooks (tests, and a config that needs none).
    pub fn empty() -> Gate {
        Gate {
            keys: Keyring::new(),
            api_token: None,
            hooks: Hooks::default(),
        }
    }

    /// Whether `authorization` (the header's value) carries the API's bearer token;
    /// compared in constant time. False when no token is configured.
    pub fn api_token_matches(&self, authorization: Option<&str>) -> bool {
        let (Some(want), Some(header)) = (&self.api_token, authorization) else {
            return false;
        };
        let Some(given) = header
            .trim()
            .strip_prefix("Bearer ")
            .or_else(|| header.trim().strip_prefix("bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), want)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Lengths are not secret (the token's length is in the docs' advice anyway).
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A publish or play to decide.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub protocol: Protocol,
    pub action: Action,
    pub key: &'a StreamKey,
    /// The request's query (RTMP: the stream name's, else the connect's), with the
    /// token if there is one.
    pub query: &'a str,
    pub peer: Option<SocketAddr>,
}

/// An allowed attempt: the stream to use (a hook may redirect it) and what else the
/// hook asked for.
#[derive(Clone, Debug)]
pub struct Allowed {
    pub key: StreamKey,
    /// A hook's `"record": true|false`, overriding `[record]` for this publish.
    pub record: Option<bool>,
    pub claims: Option<Claims>,
}

/// A refused attempt: why (the metric label) and a message for the client.
#[derive(Clone, Debug)]
pub struct Denied {
    pub denial: Denial,
    pub message: String,
}

impl Denied {
    pub fn of_token(refusal: &auth::Refusal) -> Denied {
        Denied {
            denial: Denial::of_token(refusal),
            message: refusal.to_string(),
        }
    }

    /// The HTTP answer: 401 without a token, 503 when a hook could not decide, else 403.
    pub fn http_status(&self) -> Status {
        match self.denial {
            Denial::Missing | Denial::ApiToken => Status::UNAUTHORIZED,
            Denial::HookFailed | Denial::HookBusy => Status::SERVICE_UNAVAILABLE,
            _ => Status::FORBIDDEN,
        }
    }

    /// The HTTP answer, with the challenge RFC 9110 asks for on a 401 and the reason
    /// in the body for a person reading it.
    pub fn response(&self) -> proto::http::Response {
        let status = self.http_status();
        let mut body = self.message.clone();
        body.push('\n');
        let r = proto::http::Response::with_body(
            status,
            "text/plain; charset=utf-8",
            bytes::Bytes::from(body),
        )
        .cache_control("no-store");
        if status == Status::UNAUTHORIZED {
            r.header("WWW-Authenticate", "Bearer realm=\"shardcast\"")
        } else if status == Status::SERVICE_UNAVAILABLE {
            r.header("Retry-After", "2")
        } else {
            r
        }
    }
}

/// Refusal log lines one shard writes per second; the rest are counted and the count
/// is reported with the next line.
const REFUSAL_LOG_PER_SECOND: u32 = 10;

/// Rate-limits refusal log lines (access refusals here, admission refusals in
/// `server::app`): a flood of refused clients cannot flood the log.
#[derive(Default)]
pub struct LogLimiter {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(suppressed before this one)` when this line may be logged.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged >= REFUSAL_LOG_PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// One shard's access control.
pub struct Access {
    gate: Arc<Gate>,
    config: Arc<Config>,
    metrics: Arc<Vec<ShardMetrics>>,
    shard: usize,
    in_flight: Cell<u32>,
    pub audit: Rc<Audit>,
    log: RefCell<LogLimiter>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn claims_json(c: &Claims) -> Value {
    json!({
        "key_id": c.key_id,
        "expires": c.expires_unix,
        "action": c.action.as_str(),
        "scope": c.scope.to_string(),
        "ip": c.ip.map(|ip| ip.to_string()),
    })
}

/// At most this much of a hook's `reason` reaches a client and the log.
const MAX_HOOK_REASON: usize = 200;

fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_HOOK_REASON)
        .collect()
}

/// How one decision hook call ended.
enum HookVerdict {
    Allow {
        key: Option<StreamKey>,
        record: Option<bool>,
    },
    Deny(String),
    Failed(String),
}

impl Access {
    pub fn new(
        gate: Arc<Gate>,
        config: Arc<Config>,
        metrics: Arc<Vec<ShardMetrics>>,
        shard: usize,
    ) -> Rc<Access> {
        let audit = Audit::new(
            config.audit.enabled,
            config.audit.file.clone(),
            Arc::clone(&metrics),
            shard,
        );
        Rc::new(Access {
            gate,
            config,
            metrics,
            shard,
            in_flight: Cell::new(0),
            audit,
            log: RefCell::default(),
        })
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    fn m(&self) -> &ShardMetrics {
        &self.metrics[self.shard]
    }

    fn needs_token(&self, action: Action, app: &str) -> bool {
        match action {
            Action::Publish => self.config.publish_needs_token(app),
            Action::Play => self.config.play_needs_token(app),
        }
    }

    /// The token check alone (no hook, no audit line when allowed): for HLS segment
    /// and part requests, which come several times a second per viewer, so where no
    /// token is required it costs nothing. A refusal is counted, logged and audited
    /// like any other.
    pub fn check_token(&self, a: &Attempt<'_>) -> Result<Option<Claims>, Denied> {
        if !self.needs_token(a.action, a.key.app()) {
            return Ok(None);
        }
        let token = auth::token_in_query(a.query);
        match auth::check(&self.gate.keys, token.as_deref(), &self.request(a)) {
            Ok(claims) => Ok(Some(claims)),
            Err(refusal) => {
                let denied = Denied::of_token(&refusal);
                self.refused(a, &denied);
                Err(denied)
            }
        }
    }

    fn request<'a>(&self, a: &Attempt<'a>) -> auth::Request<'a> {
        auth::Request {
            action: a.action,
            key: a.key,
            peer_ip: a.peer.map(|p| p.ip()),
            now_unix: now_unix(),
        }
    }

    /// The claims of a token given where none is required, for a hook to see; an
    /// invalid one is ignored (nothing needed it).
    fn optional_claims(&self, a: &Attempt<'_>) -> Option<Claims> {
        let token = auth::token_in_query(a.query).filter(|_| !self.gate.keys.is_empty())?;
        auth::check(&self.gate.keys, Some(&token), &self.request(a)).ok()
    }

    /// An RTMP connect whose tcUrl carries a token: one that cannot be valid for any
    /// stream (malformed, unknown key, bad signature, expired) is refused at connect,
    /// with `NetConnection.Connect.Rejected`. The full check (stream, action, IP)
    /// runs at publish or play, when the stream is known.
    pub fn check_connect_token(
        &self,
        app: &str,
        query: &str,
        peer: Option<SocketAddr>,
    ) -> Result<(), Denied> {
        let Some(token) = auth::token_in_query(query) else {
            return Ok(());
        };
        if self.gate.keys.is_empty() {
            return Ok(());
        }
        let now = now_unix();
        let refusal = match self.gate.keys.verify(&token) {
            Ok(c) if c.expires_unix <= now => auth::Refusal::Expired {
                expired_unix: c.expires_unix,
                now_unix: now,
            },
            Ok(_) => return Ok(()),
            Err(r) => r,
        };
        let denied = Denied::of_token(&refusal);
        self.deny(
            denied.denial,
            Entry::new("refused")
                .field("protocol", Protocol::Rtmp.label())
                .field("peer", peer.map(|p| p.to_string()))
                .field("app", sanitize(app))
                .field("action", "connect")
                .field("detail", denied.message.clone()),
            |suppressed| {
                tracing::info!(
                    protocol = Protocol::Rtmp.label(),
                    ?peer,
                    ?app,
                    reason = denied.denial.label(),
                    suppressed,
                    "connect refused: {}",
                    denied.message
                )
            },
        );
        Err(denied)
    }

    /// Decide a publish or play: token, then the decision hook. Audited and counted.
    pub async fn decide(self: &Rc<Self>, a: &Attempt<'_>) -> Result<Allowed, Denied> {
        let mut claims = self.check_token(a)?;
        let hook = match a.action {
            Action::Publish => self.gate.hooks.on_publish.as_ref(),
            Action::Play => self.gate.hooks.on_play.as_ref(),
        };
        if claims.is_none() && hook.is_some() {
            claims = self.optional_claims(a);
        }
        let mut allowed = Allowed {
            key: a.key.clone(),
            record: None,
            claims,
        };
        if let Some(hook) = hook {
            let body = self.hook_body(hook.name, a, allowed.claims.as_ref());
            let verdict = self.call_decision(HookRef::Decide(a.action), body).await;
            let fail = hook.config.fail;
            let (outcome, denied) = match verdict {
                HookVerdict::Allow { key, record } => {
                    if let Some(k) = key {
                        tracing::info!(stream = %a.key, to = %k, hook = hook.name, "hook redirected the stream");
                        allowed.key = k;
                    }
                    allowed.record = record;
                    ("allowed", None)
                }
                HookVerdict::Deny(why) => (
                    "denied",
                    Some(Denied {
                        denial: Denial::HookDenied,
                        message: if why.is_empty() {
                            format!("refused by the {} hook", hook.name)
                        } else {
                            format!("refused by the {} hook: {why}", hook.name)
                        },
                    }),
                ),
                HookVerdict::Failed(why) if fail == HookFailure::Open => {
                    tracing::warn!(stream = %a.key, hook = hook.name, error = %why, "hook failed; allowed (fail = \"open\")");
                    ("failed_open", None)
                }
                HookVerdict::Failed(why) => {
                    let denial = if why == BUSY {
                        Denial::HookBusy
                    } else {
                        Denial::HookFailed
                    };
                    (
                        "failed_closed",
                        Some(Denied {
                            denial,
                            message: format!(
                                "the {} hook could not decide ({why}); try again later",
                                hook.name
                            ),
                        }),
                    )
                }
            };
            self.audit.write(
                self.entry("hook", a)
                    .field("hook", hook.name)
                    .field("outcome", outcome)
                    .field("reason", denied.as_ref().map(|d| d.message.clone())),
            );
            if let Some(denied) = denied {
                self.refused(a, &denied);
                return Err(denied);
            }
        }
        let mut entry = self
            .entry(a.action.as_str(), a)
            .field("outcome", "allowed")
            .field("key_id", allowed.claims.as_ref().map(|c| c.key_id.clone()));
        if allowed.key != *a.key {
            entry = entry.field("redirected_to", allowed.key.as_str());
        }
        self.audit.write(entry);
        Ok(allowed)
    }

    fn entry(&self, event: &str, a: &Attempt<'_>) -> Entry {
        Entry::new(event)
            .field("protocol", a.protocol.label())
            .field("peer", a.peer.map(|p| p.to_string()))
            .field("stream", a.key.as_str())
            .field("action", a.action.as_str())
            .field("shard", self.shard)
    }

    /// The one sink of every refusal: counted by reason, logged through the shard's
    /// rate limit (`log` gets the count of lines left out before it), audited.
    fn deny(&self, denial: Denial, entry: Entry, log: impl FnOnce(u64)) {
        ShardMetrics::add(&self.m().denials[denial as usize], 1);
        if let Some(suppressed) = self.log.borrow_mut().admit(Instant::now()) {
            log(suppressed);
        }
        self.audit.write(
            entry
                .field("outcome", "refused")
                .field("reason", denial.label())
                .field("shard", self.shard),
        );
    }

    /// A refused publish or play.
    fn refused(&self, a: &Attempt<'_>, d: &Denied) {
        self.deny(
            d.denial,
            self.entry("refused", a).field("detail", d.message.clone()),
            |suppressed| {
                tracing::info!(
                    protocol = a.protocol.label(),
                    peer = ?a.peer,
                    stream = %a.key,
                    action = a.action.as_str(),
                    reason = d.denial.label(),
                    suppressed,
                    "{} refused: {}",
                    a.action.as_str(),
                    d.message
                )
            },
        );
    }

    /// An API request refused for its bearer token.
    pub fn api_refused(&self, peer: Option<SocketAddr>, path: &str) {
        self.deny(
            Denial::ApiToken,
            Entry::new("refused")
                .field("protocol", Protocol::Http.label())
                .field("peer", peer.map(|p| p.to_string()))
                .field("action", "api")
                .field("path", sanitize(path)),
            |suppressed| {
                tracing::info!(
                    ?peer,
                    ?path,
                    suppressed,
                    "API request refused: no valid bearer token"
                )
            },
        );
    }

    /// A kick through the API (audited on the shard that took the request).
    pub fn kicked(&self, peer: Option<SocketAddr>, key: &StreamKey) {
        self.audit.write(
            Entry::new("kick")
                .field("protocol", Protocol::Http.label())
                .field("peer", peer.map(|p| p.to_string()))
                .field("stream", key.as_str())
                .field("action", "kick")
                .field("outcome", "sent")
                .field("shard", self.shard),
        );
    }

    /// A publish or play ended: audited, and `on_unpublish` / `on_stop` notified.
    pub fn ended(self: &Rc<Self>, a: &Attempt<'_>) {
        let (event, hook) = match a.action {
            Action::Publish => ("unpublish", self.gate.hooks.on_unpublish.as_ref()),
            Action::Play => ("stop", self.gate.hooks.on_stop.as_ref()),
        };
        self.audit
            .write(self.entry(event, a).field("outcome", "ended"));
        if let Some(hook) = hook {
            let body = self.hook_body(hook.name, a, None);
            self.notify(HookRef::of(a.action), body);
        }
    }

    /// A recording file was closed: `on_record_done` is notified.
    pub fn record_done(
        self: &Rc<Self>,
        key: &StreamKey,
        path: &std::path::Path,
        bytes: u64,
        duration_ms: u64,
    ) {
        self.audit.write(
            Entry::new("record_done")
                .field("stream", key.as_str())
                .field("path", path.display().to_string())
                .field("bytes", bytes)
                .field("shard", self.shard),
        );
        if self.gate.hooks.on_record_done.is_some() {
            let body = json!({
                "hook": "on_record_done",
                "stream": key.as_str(),
                "app": key.app(),
                "name": key.stream(),
                "path": path.display().to_string(),
                "bytes": bytes,
                "duration_ms": duration_ms,
                "server": self.config.server.node_name,
                "shard": self.shard,
            });
            self.notify(HookRef::RecordDone, body);
        }
    }

    fn hook_body(&self, name: &str, a: &Attempt<'_>, claims: Option<&Claims>) -> Value {
        json!({
            "hook": name,
            "action": a.action.as_str(),
            "protocol": a.protocol.label(),
            "stream": a.key.as_str(),
            "app": a.key.app(),
            "name": a.key.stream(),
            "client_ip": a.peer.map(|p| p.ip().to_string()),
            "client_port": a.peer.map(|p| p.port()),
            "query": auth::query_without_token(a.query),
            "token": claims.map(claims_json),
            "server": self.config.server.node_name,
            "shard": self.shard,
        })
    }

    /// Take a slot for a hook call, if one is free.
    fn take_slot(self: &Rc<Self>) -> Option<Slot> {
        if self.in_flight.get() >= self.config.hooks.max_in_flight_per_shard {
            ShardMetrics::add(&self.m().hook_calls[HookOutcome::Dropped as usize], 1);
            return None;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        Some(Slot(Rc::clone(self)))
    }

    /// Call a decision hook in a task of the shard's control queue, so its I/O is
    /// scheduled with the control plane's share of the shard, not the media's; the
    /// connection awaits the answer (and dropping it cancels the call).
    async fn call_decision(self: &Rc<Self>, which: HookRef, body: Value) -> HookVerdict {
        let Some(slot) = self.take_slot() else {
            return HookVerdict::Failed(BUSY.to_owned());
        };
        let access = Rc::clone(self);
        let body = body.to_string().into_bytes();
        let task = rt::spawn_task(Queue::Control, async move {
            let _slot = slot;
            match which.get(&access.gate.hooks) {
                Some(hook) => call(hook, &body).await,
                None => Err("the hook is not configured".to_owned()),
            }
        });
        let verdict = match task.await {
            Ok(answer) if (200..300).contains(&answer.status) => allow_from(&answer.body),
            Ok(answer) => HookVerdict::Deny(reason_from(&answer.body)),
            Err(why) => HookVerdict::Failed(why),
        };
        let outcome = match verdict {
            HookVerdict::Allow { .. } => HookOutcome::Allowed,
            HookVerdict::Deny(_) => HookOutcome::Denied,
            HookVerdict::Failed(_) => HookOutcome::Failed,
        };
        ShardMetrics::add(&self.m().hook_calls[outcome as usize], 1);
        verdict
    }

    /// Fire a notification hook without waiting for it.
    fn notify(self: &Rc<Self>, which: HookRef, body: Value) {
        let Some(slot) = self.take_slot() else {
            return;
        };
        let access = Rc::clone(self);
        rt::spawn(Queue::Control, async move {
            let _slot = slot;
            let Some(hook) = which.get(&access.gate.hooks) else {
                return;
            };
            let body = body.to_string().into_bytes();
            let outcome = match call(hook, &body).await {
                Ok(a) if (200..300).contains(&a.status) => HookOutcome::Allowed,
                Ok(a) => {
                    tracing::debug!(
                        hook = hook.name,
                        status = a.status,
                        "notification hook answered non-2xx"
                    );
                    HookOutcome::Denied
                }
                Err(why) => {
                    tracing::warn!(hook = hook.name, url = %hook.config.url, error = %why, "notification hook failed");
                    HookOutcome::Failed
                }
            };
            ShardMetrics::add(&access.m().hook_calls[outcome as usize], 1);
        });
    }
}

const BUSY: &str = "too many hook calls in flight on this shard";

/// An accepted publish or play; its end is audited and notified (`on_unpublish`,
/// `on_stop`) when this drops.
pub struct Ended {
    access: Rc<Access>,
    protocol: Protocol,
    action: Action,
    key: StreamKey,
    peer: Option<SocketAddr>,
}

impl Ended {
    pub fn new(
        access: &Rc<Access>,
        protocol: Protocol,
        action: Action,
        key: &StreamKey,
        peer: Option<SocketAddr>,
    ) -> Ended {
        Ended {
            access: Rc::clone(access),
            protocol,
            action,
            key: key.clone(),
            peer,
        }
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        let a = Attempt {
            protocol: self.protocol,
            action: self.action,
            key: &self.key,
            query: "",
            peer: self.peer,
        };
        self.access.ended(&a);
    }
}

/// A hook, named without borrowing the gate across a spawn.
#[derive(Clone, Copy)]
enum HookRef {
    /// `on_publish` or `on_play`.
    Decide(Action),
    Unpublish,
    Stop,
    RecordDone,
}

impl HookRef {
    fn of(action: Action) -> HookRef {
        match action {
            Action::Publish => HookRef::Unpublish,
            Action::Play => HookRef::Stop,
        }
    }

    fn get(self, hooks: &Hooks) -> Option<&Hook> {
        match self {
            HookRef::Decide(Action::Publish) => hooks.on_publish.as_ref(),
            HookRef::Decide(Action::Play) => hooks.on_play.as_ref(),
            HookRef::Unpublish => hooks.on_unpublish.as_ref(),
            HookRef::Stop => hooks.on_stop.as_ref(),
            HookRef::RecordDone => hooks.on_record_done.as_ref(),
        }
    }
}

/// A hook call in flight; frees its place on drop.
struct Slot(Rc<Access>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// Call `hook` with its retries: an answer below 500 ends the tries.
async fn call(hook: &Hook, body: &[u8]) -> Result<client::Answer, String> {
    let timeout = Duration::from_millis(hook.config.timeout_ms);
    let mut last = String::new();
    for attempt in 0..=hook.config.retries {
        if attempt > 0 {
            rt::sleep(Duration::from_millis(100)).await;
        }
        match client::post_json(&hook.addrs, &hook.config.url, body, timeout).await {
            Ok(a) if a.status < 500 => return Ok(a),
            Ok(a) => last = format!("answered {}", a.status),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// A 2xx answer's body: empty, or JSON with optional `stream` and `record`.
fn allow_from(body: &[u8]) -> HookVerdict {
    if body.iter().all(u8::is_ascii_whitespace) {
        return HookVerdict::Allow {
            key: None,
            record: None,
        };
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        // Not JSON (e.g. "ok"): an allow with nothing more to say.
        return HookVerdict::Allow {
            key: None,
            record: None,
        };
    };
    let key = match v.get("stream").and_then(Value::as_str) {
        Some(s) => match StreamKey::from_path(&format!("/{}", s.trim_start_matches('/'))) {
            Some(k) => Some(k),
            None => {
                return HookVerdict::Failed(format!(
                    "the answer's \"stream\" is not a stream key: {:?}",
                    sanitize(s)
                ))
            }
        },
        None => None,
    };
    HookVerdict::Allow {
        key,
        record: v.get("record").and_then(Value::as_bool),
    }
}

/// A refusal's body: `{"reason": "..."}` or plain text, cleaned and cut short.
fn reason_from(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => v
            .get("reason")
            .and_then(Value::as_str)
            .map(sanitize)
            .unwrap_or_default(),
        Err(_) => sanitize(String::from_utf8_lossy(body).trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_answers_are_read_leniently_and_safely() {
        assert!(matches!(
            allow_from(b""),
            HookVerdict::Allow {
                key: None,
                record: None
            }
        ));
        assert!(matches!(
            allow_from(b"ok"),
            HookVerdict::Allow { key: None, .. }
        ));
        match allow_from(br#"{"stream":"live/other","record":true}"#) {
            HookVerdict::Allow { key, record } => {
                assert_eq!(key.unwrap().as_str(), "live/other");
                assert_eq!(record, Some(true));
            }
            _ => panic!("expected an allow"),
        }
        assert!(matches!(
            allow_from(br#"{"stream":"../x"}"#),
            HookVerdict::Failed(_)
        ));
        assert_eq!(
            reason_from(br#"{"reason":"banned\nforged line"}"#),
            "bannedforged line"
        );
        assert_eq!(reason_from(b"nope"), "nope");
        assert_eq!(reason_from(&[b'x'; 1000]).len(), MAX_HOOK_REASON);
    }

    #[test]
    fn refusal_logs_are_rate_limited() {
        let mut l = LogLimiter::default();
        let t = Instant::now();
        let logged = (0..100).filter(|_| l.admit(t).is_some()).count();
        assert_eq!(logged, REFUSAL_LOG_PER_SECOND as usize);
        assert_eq!(l.admit(t + Duration::from_secs(1)), Some(90));
    }

    #[test]
    fn api_token_is_compared_exactly() {
        let gate = Gate {
            api_token: Some(b"0123456789abcdef".to_vec()),
            ..Gate::empty()
        };
        assert!(gate.api_token_matches(Some("Bearer 0123456789abcdef")));
        assert!(!gate.api_token_matches(Some("Bearer 0123456789abcdeF")));
        assert!(!gate.api_token_matches(Some("Bearer 0123456789abcde")));
        assert!(!gate.api_token_matches(Some("0123456789abcdef")));
        assert!(!gate.api_token_matches(None));
        assert!(!Gate::empty().api_token_matches(Some("Bearer x")));
        assert!(!format!("{gate:?}").contains("0123"));
    }
}
