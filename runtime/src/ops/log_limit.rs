//! Repeated log lines, rate-limited: a loop that fails the same way many times a second (a
//! replication stream to a dead peer, a heartbeat that cannot be sent) writes its line once,
//! then at most one summary per window with the count, instead of filling the disk.
//!
//! [`RepeatLimit`] is a `tracing` layer that decides, for every event at `INFO` or above,
//! whether it is written. An event's identity is its call site plus its message and field
//! values, so the same failure towards two peers (whose addresses or ids differ) is two lines,
//! limited separately. Within a [`WINDOW`] of its first line, a repeat is counted, not written;
//! the first repeat after the window is written as one line, `repeated N times in the last
//! …s: <the line>`, and opens the next window. A call site whose lines all differ (a counter
//! in the message) writes at most [`PER_SITE`] distinct lines per window; what it drops is
//! reported the same way. `DEBUG` and `TRACE` events pass untouched: whoever asks for them
//! wants every one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How long repeats of a line are only counted.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The most distinct lines one call site writes per window.
pub const PER_SITE: u32 = 8;

/// Lines remembered before the expired ones are forgotten.
const MAX_LINES: usize = 4096;

/// The layer (see the module's documentation).
#[derive(Debug)]
pub struct RepeatLimit {
    window: Duration,
    state: Mutex<State>,
}

impl Default for RepeatLimit {
    fn default() -> Self {
        RepeatLimit::new(WINDOW)
    }
}

#[derive(Debug, Default)]
struct State {
    lines: HashMap<u64, Window>,
    sites: HashMap<Identifier, Window>,
}

/// Counts within one window of a line (or of a call site's distinct lines).
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Instant,
    /// Lines written (for a call site) in this window.
    written: u32,
    /// Lines counted but not written.
    suppressed: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            since: now,
            written: 1,
            suppressed: 0,
        }
    }
}

/// What to do with an event.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Write it.
    Write,
    /// Write it as the summary of `n` repeats (or dropped lines of its call site) over
    /// `secs` seconds.
    Summary { n: u64, secs: u64 },
    /// Count it only.
    Drop,
}

impl RepeatLimit {
    /// A limit with the given window.
    pub fn new(window: Duration) -> Self {
        RepeatLimit {
            window,
            state: Mutex::default(),
        }
    }

    fn verdict(&self, site: Identifier, line: u64, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        if state.lines.len() >= MAX_LINES {
            state
                .lines
                .retain(|_, w| now.duration_since(w.since) < window);
        }
        if let Some(w) = state.lines.get_mut(&line) {
            if now.duration_since(w.since) < window {
                w.suppressed += 1;
                return Verdict::Drop;
            }
            let (n, secs) = (w.suppressed, now.duration_since(w.since).as_secs());
            *w = Window::new(now);
            return if n == 0 {
                Verdict::Write
            } else {
                Verdict::Summary { n, secs }
            };
        }
        // A line not seen in this window: within its call site's budget?
        let site = state.sites.entry(site).or_insert(Window {
            since: now,
            written: 0,
            suppressed: 0,
        });
        let mut verdict = Verdict::Write;
        if now.duration_since(site.since) >= window {
            if site.suppressed > 0 {
                verdict = Verdict::Summary {
                    n: site.suppressed,
                    secs: now.duration_since(site.since).as_secs(),
                };
            }
            *site = Window::new(now);
        } else if site.written >= PER_SITE {
            site.suppressed += 1;
            return Verdict::Drop;
        } else {
            site.written += 1;
        }
        state.lines.insert(line, Window::new(now));
        verdict
    }
}

/// Collects an event's message and fields as text.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RepeatLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target() == module_path!() {
            return true;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let mut hasher = DefaultHasher::new();
        meta.callsite().hash(&mut hasher);
        text.0.hash(&mut hasher);
        match self.verdict(meta.callsite(), hasher.finish(), Instant::now()) {
            Verdict::Write => true,
            Verdict::Drop => false,
            Verdict::Summary { n, secs } => {
                // The summary takes the line's place (written through this layer again, which
                // lets it pass: its target is this module).
                let origin = meta.target();
                let line = text.0;
                match *meta.level() {
                    Level::ERROR => tracing::error!(
                        origin,
                        "repeated {n} times in the last {secs} s (or like it): {line}"
                    ),
                    Level::WARN => tracing::warn!(
                        origin,
                        "repeated {n} times in the last {secs} s (or like it): {line}"
                    ),
                    _ => tracing::info!(
                        origin,
                        "repeated {n} times in the last {secs} s (or like it): {line}"
                    ),
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Identifier {
        // Any call site will do: the test's own.
        struct Cs;
        static CS: Cs = Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!("not called")
            }
        }
        Identifier(&CS)
    }

    #[test]
    fn a_repeated_line_is_written_once_per_window_with_its_count() {
        let limit = RepeatLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.verdict(site(), 1, t0), Verdict::Write);
        for i in 1..1000 {
            let at = t0 + Duration::from_millis(i * 5);
            assert_eq!(limit.verdict(site(), 1, at), Verdict::Drop);
        }
        // Another line (another peer) is not held back by the first.
        assert_eq!(
            limit.verdict(site(), 2, t0 + Duration::from_secs(1)),
            Verdict::Write
        );
        let after = t0 + Duration::from_secs(11);
        assert_eq!(
            limit.verdict(site(), 1, after),
            Verdict::Summary { n: 999, secs: 11 }
        );
        assert_eq!(
            limit.verdict(site(), 1, after + Duration::from_secs(1)),
            Verdict::Drop
        );
    }

    #[test]
    fn a_call_site_writes_a_bounded_number_of_distinct_lines() {
        let limit = RepeatLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let written = (0..100u64)
            .filter(|&i| limit.verdict(site(), i, t0) == Verdict::Write)
            .count();
        assert_eq!(written, PER_SITE as usize);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            limit.verdict(site(), 1000, later),
            Verdict::Summary {
                n: 100 - u64::from(PER_SITE),
                secs: 10
            }
        );
    }
}
