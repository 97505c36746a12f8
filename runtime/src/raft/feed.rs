//! The watch feed: every command a node applies, in log order, from a position a watcher names,
//! then live.
//!
//! Where events come from:
//! - **History.** The state machine writes each applied command (its log index, the command, the
//!   reply and the leader's time) to the `_raft_events` table, in the transaction of its batch,
//!   so the table is always exactly at the database's log position. It keeps at least the last
//!   [`FeedConfig::retain`] entries; older rows are deleted in steps, and `first_available`
//!   rises with them. The table travels with snapshots: a follower that installs one has the
//!   leader's history, and a watcher asking for what is gone gets [`WatchError::Compacted`].
//! - **Live.** After a batch commits, its events go into one shared ring (a broadcast channel
//!   of [`FeedConfig::ring`] batches), written only while someone watches. The writer never
//!   waits on it: a watcher that falls a full ring behind goes back to the table, where it
//!   catches up in pages, then follows the ring again.
//!
//! A watcher is a task that owns its position. It delivers into a channel of at most
//! [`FeedConfig::buffer`] events and [`FeedConfig::buffer_bytes`] bytes of them (an event
//! larger than that goes alone); when there is no room for [`FeedConfig::stall`] (the consumer
//! does not read), the task stops and the stream ends, after what it holds, with
//! [`WatchError::TooSlow`]. What one watcher can hold is therefore bounded in bytes, plus what
//! its transport buffers (for gRPC, one HTTP/2 stream window). A node serves at most
//! [`FeedConfig::max_watchers`] watchers at once ([`Watchers`]); one more is refused with
//! [`WatchError::TooMany`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

/// One applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its log index.
    pub index: u64,
    /// The leader's time when it was proposed, microseconds since the Unix epoch (what apply
    /// saw as the command's time).
    pub time_us: i64,
    /// The serialized command, as the application decodes it.
    pub command: Vec<u8>,
    /// Whether the command succeeded (a domain error is `false`, and `reply` holds it).
    pub ok: bool,
    /// The serialized reply, as the application encoded it.
    pub reply: Vec<u8>,
    /// What the watchers of this copy made of it once (see [`Event::shared`]).
    derived: Derived,
}

impl Event {
    /// An event (with nothing derived from it yet).
    pub fn new(index: u64, time_us: i64, command: Vec<u8>, ok: bool, reply: Vec<u8>) -> Self {
        Event {
            index,
            time_us,
            command,
            ok,
            reply,
            derived: Derived::default(),
        }
    }

    /// `make(self)`, made once per copy of the event: a live event is one copy shared by
    /// every watcher of its node, so the wire form a server makes of it (decoding the command
    /// and reply, encoding the message) is made by the first watcher and reused by the rest.
    /// One value is kept per copy; asking for a value of another type makes it afresh.
    pub fn shared<T, E>(&self, make: impl FnOnce(&Event) -> Result<T, E>) -> Result<Arc<T>, E>
    where
        T: Send + Sync + 'static,
    {
        if let Some(made) = self.derived.0.get()
            && let Ok(made) = Arc::clone(made).downcast::<T>()
        {
            return Ok(made);
        }
        let made = Arc::new(make(self)?);
        let _ = self.derived.0.set(made.clone());
        Ok(made)
    }
}

/// The slot of [`Event::shared`]: shared by the clones of one event, and not part of what the
/// event is (equal events are equal whatever was derived from them).
#[derive(Clone, Default)]
struct Derived(Arc<std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>>);

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

/// What a command says about itself for the feed's filters (see
/// [`crate::raft::state_machine::Application::watch_info`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchInfo {
    /// The operation's name.
    pub operation: &'static str,
    /// The values of the operation's watch keys (the schema's `watch_key` parameters).
    pub keys: Vec<String>,
}

/// Which events a watcher wants. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only these operations.
    pub operations: Vec<String>,
    /// Only events with a watch key equal to this.
    pub key: Option<String>,
    /// Only events with a watch key starting with this.
    pub key_prefix: Option<String>,
}

impl WatchFilter {
    /// Whether it matches everything (no command needs decoding).
    pub fn is_all(&self) -> bool {
        self.operations.is_empty() && self.key.is_none() && self.key_prefix.is_none()
    }

    /// Whether an event described by `info` passes.
    pub fn matches(&self, info: &WatchInfo) -> bool {
        (self.operations.is_empty() || self.operations.iter().any(|o| o == info.operation))
            && self
                .key
                .as_ref()
                .is_none_or(|key| info.keys.iter().any(|k| k == key))
            && self
                .key_prefix
                .as_ref()
                .is_none_or(|prefix| info.keys.iter().any(|k| k.starts_with(prefix.as_str())))
    }
}

/// Why a watch ended (or could not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The asked-for position is older than what the node keeps; start again from
    /// `first_available` (or from a snapshot of the state).
    #[error("events before index {first_available} were compacted away; watch from there")]
    Compacted {
        /// The oldest index the node still has events from.
        first_available: u64,
    },
    /// The consumer did not read for the node's whole stall limit: the watch was cut off after
    /// what had been buffered. Resume from the last index received.
    #[error(
        "the watcher read nothing for {stall_ms} ms with {buffered} events waiting; cut off (resume from the last index received)"
    )]
    TooSlow {
        /// How many events were waiting.
        buffered: usize,
        /// The node's stall limit, in milliseconds.
        stall_ms: u64,
    },
    /// This node keeps no feed (`--watch-retain 0`).
    #[error("this node keeps no change feed (started with --watch-retain 0)")]
    Disabled,
    /// This node serves as many watchers as it takes (`--max-watchers`); try another node, or
    /// later.
    #[error("this node serves {cap} watchers already, its limit (--max-watchers)")]
    TooMany {
        /// The node's limit.
        cap: usize,
    },
    /// The node is stopping; resume on another one.
    #[error("the node is stopping")]
    Stopped,
    /// The node could not read its history.
    #[error("reading the change feed: {0}")]
    Storage(String),
    /// (Client side) no node could be reached to watch from.
    #[error("no node to watch from: {0}")]
    Unavailable(String),
    /// (Client side) the node refused the watch (a bad request, a server without a feed).
    #[error("the watch was refused: {0}")]
    Refused(String),
}

/// How a node keeps its feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedConfig {
    /// Applied entries whose events are kept for watchers that catch up (0: no feed, and no
    /// cost on the write path).
    pub retain: u64,
    /// Batches the live ring holds.
    pub ring: usize,
    /// Events one watcher buffers before it waits on its consumer.
    pub buffer: usize,
    /// Bytes of events (commands and replies) one watcher buffers before it waits on its
    /// consumer; an event larger than this is delivered alone.
    pub buffer_bytes: usize,
    /// How long a watcher waits on a consumer that does not read before it cuts it off.
    pub stall: Duration,
    /// The most watchers the node serves at once.
    pub max_watchers: usize,
}

/// Default of [`FeedConfig::buffer_bytes`]: 1 MiB.
pub const DEFAULT_BUFFER_BYTES: usize = 1 << 20;

/// Default of [`FeedConfig::max_watchers`]: 1,024 watchers (with [`DEFAULT_BUFFER_BYTES`]
/// each, at most 1 GiB of buffered events, and that only while consumers stall, for at most
/// [`FeedConfig::stall`]).
pub const DEFAULT_MAX_WATCHERS: usize = 1_024;

/// Default of [`FeedConfig::retain`]. The history is in the database, so it is in every
/// snapshot too: about 120 bytes per event for the bank (12 MB at 100,000 events, against 16 MB
/// for the bank's own tables after 100,000 deposits), copied at every snapshot build. Ten
/// thousand entries cost about 1.2 MB and cover minutes of resume at ordinary write rates.
pub const DEFAULT_RETAIN: u64 = 10_000;

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            retain: DEFAULT_RETAIN,
            ring: 1_024,
            buffer: 1_024,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            stall: Duration::from_secs(30),
            max_watchers: DEFAULT_MAX_WATCHERS,
        }
    }
}

/// What goes through the live ring.
#[derive(Debug, Clone)]
pub(crate) enum Live {
    /// The events of one committed batch, in index order.
    Batch(Arc<[Event]>),
    /// The history changed under the watchers (a snapshot was installed, or a batch committed
    /// without live copies while a watcher subscribed): they re-read it.
    Reset,
    /// The node is stopping: watchers end with [`WatchError::Stopped`], so that their streams
    /// end and the API servers can drain.
    Stop,
}

/// One page of history, read in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// The oldest index with events (older ones are compacted).
    pub first_available: u64,
    /// The index the database is at.
    pub last_applied: u64,
    /// Events at or after the asked-for index, in order.
    pub events: Vec<Event>,
}

/// Reads history for watchers: implemented by the state machine.
pub(crate) trait History: Clone + Send + Sync + 'static {
    /// Up to `limit` events from index `from` on.
    fn page(&self, from: u64, limit: usize) -> impl Future<Output = Result<Page, String>> + Send;
    /// What a command says about itself (operation, keys).
    fn info(&self, command: &[u8]) -> WatchInfo;
    /// Whether the node is stopping (no watch starts or goes on).
    fn stopping(&self) -> bool;
}

/// Events read from the table per page while catching up.
const PAGE: usize = 256;

/// The watchers a node serves, against its cap.
#[derive(Debug, Default)]
pub struct Watchers {
    count: AtomicUsize,
    refused: AtomicU64,
}

impl Watchers {
    /// How many watchers are served now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// How many watches were refused because the node served its cap already.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }

    /// A slot for one more watcher, unless `cap` are served (then the refusal is counted).
    fn enter(self: &Arc<Self>, cap: usize) -> Option<WatcherSlot> {
        let entered = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok();
        if !entered {
            self.refused.fetch_add(1, Ordering::AcqRel);
        }
        entered.then(|| WatcherSlot(self.clone()))
    }
}

/// One watcher's place in [`Watchers`], given back when the watcher ends.
#[derive(Debug)]
struct WatcherSlot(Arc<Watchers>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an event takes of a watcher's byte budget: its command and reply plus a little for the
/// rest, and never more than the whole budget (a larger event goes alone).
fn cost(event: &Event, budget: usize) -> u32 {
    let size = event.command.len() + event.reply.len() + 64;
    u32::try_from(size.min(budget)).unwrap_or(u32::MAX)
}

/// A stream of events from a position: see the module docs.
pub struct WatchStream {
    events: mpsc::Receiver<Event>,
    /// Why the watcher stopped, set before it lets go of `events`.
    end: Option<oneshot::Receiver<WatchError>>,
    /// Why the watch did not start (no feed, too many watchers): the stream's one item.
    refused: Option<WatchError>,
    /// The watcher's byte budget: what a delivered event took is given back when it is read.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

impl futures_util::Stream for WatchStream {
    type Item = Result<Event, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(refused) = self.refused.take() {
            return Poll::Ready(Some(Err(refused)));
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.budget
                    .add_permits(cost(&event, self.budget_bytes) as usize);
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Pending => Poll::Pending,
            // Everything delivered is read; then the reason, once.
            Poll::Ready(None) => Poll::Ready(
                self.end
                    .take()
                    .and_then(|mut end| end.try_recv().ok())
                    .map(Err),
            ),
        }
    }
}

impl WatchStream {
    /// Why the watch did not start, if it did not (what the stream yields first): a server can
    /// refuse the request itself instead of starting a stream that only ends.
    pub fn refused(&self) -> Option<&WatchError> {
        self.refused.as_ref()
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

/// Starts a watcher from index `from` (0: from the next command applied) over `history`, live
/// from `ring`, if `watchers` has room for it.
pub(crate) fn watch(
    config: FeedConfig,
    history: impl History,
    ring: &broadcast::Sender<Live>,
    watchers: &Arc<Watchers>,
    from: u64,
    filter: WatchFilter,
) -> WatchStream {
    let (tx, events) = mpsc::channel(config.buffer.max(1));
    let (end_tx, end) = oneshot::channel();
    let budget_bytes = config.buffer_bytes.max(1);
    let budget = Arc::new(Semaphore::new(budget_bytes));
    let mut stream = WatchStream {
        events,
        end: Some(end),
        refused: None,
        budget: budget.clone(),
        budget_bytes,
    };
    let slot = if config.retain == 0 {
        Err(WatchError::Disabled)
    } else {
        watchers
            .enter(config.max_watchers)
            .ok_or(WatchError::TooMany {
                cap: config.max_watchers,
            })
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(refused) => {
            stream.refused = Some(refused);
            return stream;
        }
    };
    let watcher = Watcher {
        config,
        history,
        filter,
        tx,
        budget,
        budget_bytes,
        next: from,
        _slot: slot,
    };
    let live = ring.subscribe();
    tokio::spawn(watcher.run(live, ring.clone(), end_tx));
    stream
}

struct Watcher<H> {
    config: FeedConfig,
    history: H,
    filter: WatchFilter,
    tx: mpsc::Sender<Event>,
    /// Bytes the consumer has room for (see [`WatchStream`]).
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// The next index to deliver (0 until the first page says where "now" is).
    next: u64,
    /// Its place among the node's watchers, for as long as it runs.
    _slot: WatcherSlot,
}

/// Why a watcher stops delivering.
enum Stop {
    /// The consumer went away.
    Gone,
    /// The watch ends with this error.
    End(WatchError),
}

impl<H: History> Watcher<H> {
    async fn run(
        mut self,
        mut live: broadcast::Receiver<Live>,
        ring: broadcast::Sender<Live>,
        end: oneshot::Sender<WatchError>,
    ) {
        let stop = loop {
            if let Err(stop) = self.catch_up().await {
                break stop;
            }
            match self.follow(&mut live).await {
                // Behind by more than the ring, or the history was replaced: re-read it,
                // subscribed again first so nothing committed meanwhile is missed.
                Ok(()) => live = ring.subscribe(),
                Err(stop) => break stop,
            }
        };
        if let Stop::End(error) = stop {
            // Before `tx` goes: the stream reads it once the events are drained.
            drop(end.send(error));
        }
    }

    /// Delivers history from `next` until the table has nothing newer.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            if self.history.stopping() {
                return Err(Stop::End(WatchError::Stopped));
            }
            let page = self
                .history
                .page(self.next, PAGE)
                .await
                .map_err(|e| Stop::End(WatchError::Storage(e)))?;
            if self.next == 0 {
                self.next = page.last_applied + 1;
                continue;
            }
            if self.next < page.first_available {
                return Err(Stop::End(WatchError::Compacted {
                    first_available: page.first_available,
                }));
            }
            let full = page.events.len() == PAGE;
            for event in page.events {
                self.deliver(event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Delivers live batches; returns `Ok` when it must catch up from the table again.
    async fn follow(&mut self, live: &mut broadcast::Receiver<Live>) -> Result<(), Stop> {
        loop {
            let item = tokio::select! {
                item = live.recv() => item,
                () = self.tx.closed() => return Err(Stop::Gone),
            };
            match item {
                Ok(Live::Batch(events)) => {
                    for event in events.iter() {
                        if event.index >= self.next {
                            self.deliver(event.clone()).await?;
                        }
                    }
                }
                Ok(Live::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                Ok(Live::Stop) | Err(broadcast::error::RecvError::Closed) => {
                    return Err(Stop::End(WatchError::Stopped));
                }
            }
        }
    }

    /// Sends one event if the filter passes it, waiting at most the stall limit for room (a
    /// place in the channel and its bytes in the budget).
    async fn deliver(&mut self, event: Event) -> Result<(), Stop> {
        self.next = event.index + 1;
        if !self.filter.is_all() && !self.filter.matches(&self.history.info(&event.command)) {
            return Ok(());
        }
        let cost = cost(&event, self.budget_bytes);
        let room = async {
            let bytes = self.budget.acquire_many(cost).await;
            let place = self.tx.reserve().await;
            (bytes, place)
        };
        match tokio::time::timeout(self.config.stall, room).await {
            Ok((Ok(bytes), Ok(place))) => {
                // The stream gives the bytes back when the consumer reads the event.
                bytes.forget();
                place.send(event);
                Ok(())
            }
            Ok(_) => Err(Stop::Gone),
            Err(_) => {
                tracing::warn!(
                    next = self.next,
                    stall_ms = self.config.stall.as_millis() as u64,
                    "a watcher read nothing with its buffer full; cut off"
                );
                Err(Stop::End(WatchError::TooSlow {
                    buffered: self.config.buffer.max(1) - self.tx.capacity(),
                    stall_ms: self.config.stall.as_millis() as u64,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_watcher_makes_of_an_event_its_copies_reuse() {
        let event = Event::new(7, 0, b"c".to_vec(), true, b"r".to_vec());
        let copy = event.clone();
        let calls = std::cell::Cell::new(0);
        let make = |value: u32| {
            let calls = &calls;
            move |_: &Event| {
                calls.set(calls.get() + 1);
                Ok::<_, ()>(value)
            }
        };
        assert_eq!(*event.shared(make(1)).expect("made"), 1);
        assert_eq!(*copy.shared(make(2)).expect("reused"), 1);
        assert_eq!(calls.get(), 1);
        // Another type is made afresh; a failure is not kept.
        assert_eq!(*copy.shared(|_| Ok::<_, ()>("text")).expect("made"), "text");
        assert!(copy.shared(|_| Err::<String, _>("bad")).is_err());
        assert_eq!(copy, Event::new(7, 0, b"c".to_vec(), true, b"r".to_vec()));
    }

    #[test]
    fn a_filter_matches_by_operation_key_and_prefix() {
        let info = WatchInfo {
            operation: "put",
            keys: vec!["users/7".into()],
        };
        assert!(WatchFilter::default().matches(&info));
        let ops = |o: &[&str]| WatchFilter {
            operations: o.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(ops(&["get", "put"]).matches(&info));
        assert!(!ops(&["delete"]).matches(&info));
        let key = |k: &str| WatchFilter {
            key: Some(k.into()),
            ..Default::default()
        };
        assert!(key("users/7").matches(&info));
        assert!(!key("users/70").matches(&info));
        let prefix = |p: &str| WatchFilter {
            key_prefix: Some(p.into()),
            ..Default::default()
        };
        assert!(prefix("users/").matches(&info));
        assert!(!prefix("orders/").matches(&info));
    }
}
