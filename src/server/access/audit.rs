//! The audit log: one JSON line per access decision (publish, play, refusal, kick, hook
//! result, and the ends of publishes and plays), to `audit.file` or to the log.
//!
//! A decision only queues its line on the shard (bounded: past [`MAX_QUEUED_LINES`]
//! lines are dropped and counted, never buffered without bound). A writer task on the
//! shard's control queue appends what is queued through io_uring (`rt::FileWriter`,
//! O_APPEND, so the shards share one file and lines never interleave). No decision
//! waits for the disk.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use shards::event::Notify;
use shards::rt::{self, FileWriter, Queue};

use crate::server::metrics::ShardMetrics;

/// Lines a shard queues before it drops new ones.
pub const MAX_QUEUED_LINES: usize = 8192;

/// One shard's audit sink.
pub struct Audit {
    enabled: std::cell::Cell<bool>,
    file: Option<PathBuf>,
    queue: RefCell<VecDeque<String>>,
    wake: Notify,
    metrics: Arc<Vec<ShardMetrics>>,
    shard: usize,
}

/// One audit record; fields are added with [`Entry::field`], then [`Audit::write`].
pub struct Entry(Map<String, Value>);

impl Entry {
    /// `event`: publish, play, refused, unpublish, stop, kick, hook.
    pub fn new(event: &str) -> Entry {
        let mut m = Map::new();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        m.insert(
            "time".into(),
            Value::String(proto::hls::format_program_date_time(now_ms)),
        );
        m.insert("event".into(), Value::String(event.to_owned()));
        Entry(m)
    }

    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Entry {
        let v = value.into();
        if !v.is_null() {
            self.0.insert(name.to_owned(), v);
        }
        self
    }
}

impl Audit {
    pub fn new(
        enabled: bool,
        file: Option<PathBuf>,
        metrics: Arc<Vec<ShardMetrics>>,
        shard: usize,
    ) -> Rc<Audit> {
        Rc::new(Audit {
            enabled: std::cell::Cell::new(enabled),
            file,
            queue: RefCell::default(),
            wake: Notify::default(),
            metrics,
            shard,
        })
    }

    /// Queue one line (JSON keeps a peer's newline from forging a line).
    pub fn write(&self, entry: Entry) {
        if !self.enabled.get() {
            return;
        }
        let m = &self.metrics[self.shard];
        let line = Value::Object(entry.0).to_string();
        if self.file.is_none() {
            ShardMetrics::add(&m.audit_lines, 1);
            tracing::info!(target: "audit", "{line}");
            return;
        }
        let mut q = self.queue.borrow_mut();
        if q.len() >= MAX_QUEUED_LINES {
            ShardMetrics::add(&m.audit_dropped, 1);
            return;
        }
        q.push_back(line);
        drop(q);
        self.wake.notify();
    }

    /// Start the writer task (a file sink only). Every batch is written as soon as
    /// it is queued, so at shutdown nothing waits in memory for more than one write.
    pub fn start(self: &Rc<Self>) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let audit = Rc::clone(self);
        rt::spawn(Queue::Control, async move {
            let mut writer = match FileWriter::open_append(&path).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; audit lines are dropped");
                    audit.enabled.set(false);
                    return;
                }
            };
            loop {
                let seen = audit.wake.version();
                let lines: Vec<String> = audit.queue.borrow_mut().drain(..).collect();
                if lines.is_empty() {
                    audit.wake.changed(seen).await;
                    continue;
                }
                let n = lines.len() as u64;
                for line in lines {
                    writer.append(line.as_bytes());
                    writer.append(b"\n");
                }
                let m = &audit.metrics[audit.shard];
                match writer.flush().await {
                    Ok(()) => ShardMetrics::add(&m.audit_lines, n),
                    Err(e) => {
                        ShardMetrics::add(&m.audit_dropped, n);
                        tracing::warn!(path = %path.display(), error = %e, "audit log write failed");
                    }
                }
            }
        });
    }
}
