//! `<binary> top`: a live view of a cluster in the terminal (ratatui): every member's role, term,
//! applied index, lag behind the leader and applied entries per second, read from the members'
//! status reports each second. `q` or Esc quits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

use crate::ops::admin::{MemberStatus, member_statuses, role_text};
use crate::ops::host::HostError;
use crate::raft::rpc::RaftCredentials;
use crate::raft::types::NodeId;

/// How often the view is refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// One member's row.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Its id.
    pub id: NodeId,
    /// Its role (`Leader`, `Follower`, … or `unreachable`).
    pub role: String,
    /// Its term.
    pub term: Option<u64>,
    /// Its applied index.
    pub applied: Option<u64>,
    /// Entries behind the leader's log.
    pub lag: Option<u64>,
    /// Entries applied per second since the previous refresh.
    pub ops_per_sec: Option<f64>,
}

/// What one frame shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Where the view is read from.
    pub source: String,
    /// The members, by id.
    pub rows: Vec<NodeRow>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
}

/// Turns successive status reports into rows with rates.
#[derive(Debug, Default)]
pub struct Tracker {
    last: BTreeMap<NodeId, (u64, Instant)>,
}

impl Tracker {
    /// The rows for `members`, read at `now`; rates from the previous call's applied indexes.
    pub fn rows(&mut self, members: &[MemberStatus], now: Instant) -> Vec<NodeRow> {
        members
            .iter()
            .map(|m| {
                let applied = m.status.as_ref().and_then(|s| s.last_applied_index);
                let ops_per_sec = applied.and_then(|applied| {
                    let previous = self.last.insert(m.id, (applied, now));
                    let (before, at) = previous?;
                    let seconds = now.duration_since(at).as_secs_f64();
                    (seconds > 0.0).then(|| applied.saturating_sub(before) as f64 / seconds)
                });
                NodeRow {
                    id: m.id,
                    role: role_text(m),
                    term: m.status.as_ref().map(|s| s.term),
                    applied,
                    lag: m.lag,
                    ops_per_sec,
                }
            })
            .collect()
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Draws `view` into `frame`.
pub fn draw(frame: &mut Frame<'_>, view: &View) {
    let [title, table, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let leader = view
        .rows
        .iter()
        .find(|r| r.role.starts_with("Leader"))
        .map_or("none".to_string(), |r| format!("node {}", r.id));
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "cluster via {}   leader: {leader}",
            view.source
        ))),
        title,
    );
    let header = Row::new(["id", "role", "term", "applied", "lag", "ops/s"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = view.rows.iter().map(|r| {
        Row::new([
            r.id.to_string(),
            r.role.clone(),
            or_dash(r.term),
            or_dash(r.applied),
            or_dash(r.lag),
            r.ops_per_sec
                .map_or_else(|| "-".to_string(), |v| format!("{v:.0}")),
        ])
    });
    let widths = [
        Constraint::Length(4),
        Constraint::Length(24),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title("nodes")),
        table,
    );
    let status = match &view.error {
        Some(e) => format!("refresh failed: {e}   (q quits)"),
        None => "refreshed every second   (q quits)".to_string(),
    };
    frame.render_widget(Paragraph::new(Line::from(status)), footer);
}

/// `view` as plain text, `width` columns wide: what [`run`] draws, without a terminal.
pub fn render_text(view: &View, width: u16) -> Result<String, HostError> {
    use ratatui::backend::TestBackend;
    let height = u16::try_from(view.rows.len())
        .unwrap_or(u16::MAX)
        .saturating_add(6);
    let mut terminal = ratatui::Terminal::new(TestBackend::new(width, height))
        .map_err(|e| HostError::Config(format!("cannot draw: {e}")))?;
    terminal
        .draw(|f| draw(f, view))
        .map_err(|e| HostError::Config(format!("cannot draw: {e}")))?;
    let buffer = terminal.backend().buffer();
    let lines: Vec<String> = (0..buffer.area.height)
        .map(|y| {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect();
            line.trim_end().to_string()
        })
        .collect();
    Ok(lines.join("\n"))
}

/// One view of the cluster that the node at `raft_addr` belongs to, as text (`top --once`).
pub async fn once(raft_addr: &str, credentials: &RaftCredentials) -> Result<String, HostError> {
    let members = member_statuses(raft_addr, credentials).await?;
    let view = View {
        source: raft_addr.to_string(),
        rows: Tracker::default().rows(&members, Instant::now()),
        error: None,
    };
    render_text(&view, 80)
}

/// Runs the live view of the cluster reached at `raft_addr` until `q`, Esc or Ctrl-C.
pub async fn run(raft_addr: &str, credentials: &RaftCredentials) -> Result<(), HostError> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    let mut terminal = ratatui::try_init()
        .map_err(|e| HostError::Config(format!("cannot open the terminal: {e}")))?;
    let mut tracker = Tracker::default();
    let mut view = View {
        source: raft_addr.to_string(),
        ..View::default()
    };
    let outcome = loop {
        match member_statuses(raft_addr, credentials).await {
            Ok(members) => {
                view.rows = tracker.rows(&members, Instant::now());
                view.error = None;
            }
            Err(e) => view.error = Some(e.to_string()),
        }
        if let Err(e) = terminal.draw(|f| draw(f, &view)) {
            break Err(HostError::Config(format!("cannot draw: {e}")));
        }
        // Wait out the refresh period, answering keys as they come.
        let until = Instant::now() + REFRESH;
        let quit = tokio::task::spawn_blocking(move || {
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if event::poll(left).unwrap_or(false)
                    && let Ok(Event::Key(key)) = event::read()
                {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return true;
                    }
                }
            }
            false
        })
        .await
        .unwrap_or(true);
        if quit {
            break Ok(());
        }
    };
    ratatui::restore();
    outcome
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::raft::status::{NodeStatus, Role};

    fn member(id: NodeId, role: Role, applied: u64, lag: Option<u64>) -> MemberStatus {
        MemberStatus {
            id,
            api: "127.0.0.1:1".into(),
            raft: "127.0.0.1:2".into(),
            learner: false,
            status: Some(NodeStatus {
                id,
                role,
                term: 4,
                leader: Some(1),
                quorum_lost: false,
                last_log_index: Some(applied),
                committed_index: Some(applied),
                last_applied_index: Some(applied),
                snapshot_index: None,
                purged_index: None,
                members: Default::default(),
                lag: Default::default(),
                schema: "v1".into(),
                open_files_limit: 1024,
                snapshot_failures: 0,
                rejoining: false,
                storage_bytes: 0,
                quota_bytes: None,
                nospace: false,
                watchers: 0,
                watchers_refused: 0,
                unauthenticated_closed: 0,
            }),
            lag,
        }
    }

    #[test]
    fn rows_carry_the_rate_between_two_refreshes() {
        let mut tracker = Tracker::default();
        let t0 = Instant::now();
        let first = tracker.rows(&[member(1, Role::Leader, 100, Some(0))], t0);
        assert_eq!(first[0].ops_per_sec, None);
        let second = tracker.rows(
            &[member(1, Role::Leader, 300, Some(0))],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(second[0].ops_per_sec, Some(100.0));
    }

    #[test]
    fn the_view_renders_every_node_and_the_leader() {
        let mut tracker = Tracker::default();
        let mut unreachable = member(3, Role::Follower, 0, None);
        unreachable.status = None;
        let view = View {
            source: "127.0.0.1:7101".into(),
            rows: tracker.rows(
                &[
                    member(1, Role::Leader, 120, Some(0)),
                    member(2, Role::Follower, 118, Some(2)),
                    unreachable,
                ],
                Instant::now(),
            ),
            error: None,
        };
        let text = render_text(&view, 70).expect("render");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("leader: node 1"), "{text}");
        assert!(text.contains("ops/s"), "{text}");
        let row = |id: &str| {
            lines
                .iter()
                .find(|l| l.trim_start_matches('│').trim_start().starts_with(id))
                .unwrap_or_else(|| panic!("no row {id}:\n{text}"))
                .to_string()
        };
        assert!(
            row("1").contains("Leader") && row("1").contains("120"),
            "{text}"
        );
        assert!(
            row("2").contains("Follower") && row("2").contains("118"),
            "{text}"
        );
        assert!(row("3").contains("unreachable"), "{text}");
    }
}
