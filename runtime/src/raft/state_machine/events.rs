//! The feed's history: one row per applied command in `_raft_events`, written in the batch's
//! transaction and trimmed to the node's retention (see [`crate::raft::feed`]).

use std::sync::atomic::Ordering;

use super::*;
use crate::raft::feed::{Event, Page};

/// Creates the table, and sets where its history starts when the database has none yet: at the
/// next entry it applies (a database from before the feed, or a restored one). Returns that
/// start.
pub(super) fn init(conn: &Connection) -> io::Result<u64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _raft_events (
            log_index INTEGER PRIMARY KEY,
            time_us INTEGER NOT NULL,
            command BLOB NOT NULL,
            ok INTEGER NOT NULL,
            reply BLOB NOT NULL
        );",
    )
    .map_err(io_err)?;
    if let Some(from) = read_meta::<u64>(conn, "events_from")? {
        return Ok(from);
    }
    let applied: Option<LogId> = read_meta(conn, "last_applied")?;
    let from = applied.map_or(0, |l| l.index + 1);
    write_meta(conn, "events_from", &from)?;
    Ok(from)
}

/// Records the event of a command applied at `index`; keeps a copy for the live ring in `live`
/// when someone watches.
pub(super) fn record(
    shared: &Shared,
    conn: &Connection,
    index: u64,
    env: &Envelope,
    applied: &Applied,
    live: &mut Option<Vec<Event>>,
) -> io::Result<()> {
    // Changes to users and tokens are the cluster's, not the service's: not in its feed.
    if shared.feed.retain == 0
        || crate::wire::service::operation_of(&env.command) == Some(crate::raft::auth::AUTH_OP)
    {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO _raft_events (log_index, time_us, command, ok, reply)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(io_err)?
    .execute(params![
        index as i64,
        env.time_us,
        env.command,
        applied.ok as i64,
        applied.reply
    ])
    .map_err(io_err)?;
    if let Some(live) = live {
        live.push(Event::new(
            index,
            env.time_us,
            env.command.clone(),
            applied.ok,
            applied.reply.clone(),
        ));
    }
    Ok(())
}

/// Deletes what falls out of the retention once the batch ending at `last` is applied: in steps
/// of a quarter of it (at most 1,024 entries), so most batches delete nothing.
pub(super) fn trim(shared: &Shared, conn: &Connection, last: u64) -> io::Result<()> {
    let retain = shared.feed.retain;
    if retain == 0 || last < retain {
        return Ok(());
    }
    let keep_from = last + 1 - retain;
    let step = (retain / 4).clamp(1, 1_024);
    if keep_from < shared.events_from.load(Ordering::Relaxed) + step {
        return Ok(());
    }
    conn.prepare_cached("DELETE FROM _raft_events WHERE log_index < ?1")
        .and_then(|mut stmt| stmt.execute([keep_from as i64]))
        .map_err(io_err)?;
    write_meta(conn, "events_from", &keep_from)?;
    shared.events_from.store(keep_from, Ordering::Relaxed);
    Ok(())
}

/// Up to `limit` events from `from` on, with the bounds of the history, in one transaction.
pub(super) fn page(conn: &Connection, from: u64, limit: usize) -> io::Result<Page> {
    let tx = conn.unchecked_transaction().map_err(io_err)?;
    let first_available = read_meta::<u64>(&tx, "events_from")?.unwrap_or(0);
    let last_applied = read_meta::<LogId>(&tx, "last_applied")?.map_or(0, |l| l.index);
    let events = tx
        .prepare_cached(
            "SELECT log_index, time_us, command, ok, reply FROM _raft_events
             WHERE log_index >= ?1 ORDER BY log_index LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![from as i64, limit as i64], |r| {
                Ok(Event::new(
                    r.get::<_, i64>(0)? as u64,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)? != 0,
                    r.get(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(io_err)?;
    tx.rollback().map_err(io_err)?;
    Ok(Page {
        first_available,
        last_applied,
        events,
    })
}
