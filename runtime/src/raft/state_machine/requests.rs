//! Exactly-once: the request records and client watermarks every replica keeps beside the
//! application's tables, and the apply of one entry under them (see the parent's module docs).

use super::*;

/// How many log entries a request's record outlives the request by, unless its client
/// acknowledges it sooner: a resend arriving later is applied again. At this machine's peak
/// write rate (~5,000 entries/s) that is over three minutes; our clients give up after 20 s.
pub const REQUEST_TTL_ENTRIES: u64 = 1_000_000;

/// Expired request records are deleted at every log index that is a multiple of this (the same
/// entries on every replica, however their batches are cut).
const EXPIRE_EVERY_ENTRIES: u64 = 1_024;

/// How many clients [`KnownSeqs`] remembers before it starts over (each is then read again from
/// its records once).
const KNOWN_CLIENTS: usize = 100_000;

/// Per client, a bound on its request records' sequence numbers: read from the records the
/// first time the client is seen, raised by every request applied. A client's sequence
/// numbers mostly grow, so almost every entry is above the bound and needs no lookup. Only an
/// overestimate is possible (a batch that failed and was not committed), which costs a lookup,
/// never a missed duplicate; a snapshot install, which brings other records, empties it.
#[derive(Debug, Default)]
pub(super) struct KnownSeqs(std::collections::HashMap<String, u64>);

impl KnownSeqs {
    /// Empties it (the database under it was replaced).
    pub(super) fn forget(&mut self) {
        self.0.clear();
    }

    /// Whether `client` may have a record for `seq`: false when `seq` is above every sequence
    /// number it has a record for.
    fn may_have_record(&mut self, conn: &Connection, client: &str, seq: u64) -> io::Result<bool> {
        let bound = match self.0.get(client) {
            Some(bound) => *bound,
            None => {
                let bound: Option<i64> = conn
                    .prepare_cached("SELECT max(seq) FROM _raft_requests WHERE client = ?1")
                    .and_then(|mut s| s.query_row([client], |r| r.get(0)))
                    .map_err(io_err)?;
                let bound = bound.map_or(0, |b| b as u64);
                if self.0.len() >= KNOWN_CLIENTS {
                    self.0.clear();
                }
                self.0.insert(client.to_string(), bound);
                bound
            }
        };
        Ok(seq <= bound)
    }

    /// `client` has a record for `seq` now.
    fn recorded(&mut self, client: &str, seq: u64) {
        if let Some(bound) = self.0.get_mut(client) {
            *bound = (*bound).max(seq);
        }
    }
}

/// Applies one normal entry inside the batch transaction; returns its outcome.
pub(super) fn apply_envelope(
    shared: &Shared,
    known: &mut KnownSeqs,
    conn: &Connection,
    index: u64,
    env: &Envelope,
    live: &mut Option<Vec<crate::raft::feed::Event>>,
) -> io::Result<Outcome> {
    let _span = tracing::debug_span!("apply", index, client = %env.client, seq = env.seq).entered();
    // The watermark comes with the acknowledgement; only an entry that acknowledges nothing
    // reads it.
    let acked = if env.ack > 0 {
        Some(acknowledge(conn, index, &env.client, env.ack)?)
    } else {
        watermark(conn, &env.client)?
    };
    let hash: [u8; 32] = Sha256::digest(&env.command).into();
    let seen: Option<(Option<Vec<u8>>, bool, Vec<u8>)> =
        if known.may_have_record(conn, &env.client, env.seq)? {
            conn.prepare_cached(
                "SELECT command_hash, ok, reply FROM _raft_requests WHERE client = ?1 AND seq = ?2",
            )
            .map_err(io_err)?
            .query_row(params![env.client, env.seq as i64], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
            })
            .optional()
            .map_err(io_err)?
        } else {
            None
        };
    if let Some((stored, ok, reply)) = seen {
        if stored.is_some_and(|stored| stored != hash) {
            return Ok(Err(Rejected(format!(
                "request id {}#{} was already used for another command",
                env.client, env.seq
            ))));
        }
        // A retry of a request already applied: the original answer, no second application.
        shared.metrics.dedup_hits.inc();
        return Ok(Ok(Applied { ok, reply }));
    }
    // No record, but its client acknowledged the answer already (and so dropped the record): a
    // late copy (a forwarding node still resending it, say), not applied a second time.
    if acked.is_some_and(|acked| env.seq < acked) {
        shared.metrics.dedup_hits.inc();
        return Ok(Err(Rejected(format!(
            "request id {}#{} was answered and acknowledged already; not applied again",
            env.client, env.seq
        ))));
    }
    run_cached(conn, "SAVEPOINT command")?;
    let ctx = ApplyContext {
        index,
        time: DateTime::from_timestamp_micros(env.time_us).unwrap_or(DateTime::UNIX_EPOCH),
    };
    let applied = shared
        .app
        .apply(conn, &ctx, &env.command)
        .map_err(|e| io::Error::other(format!("applying entry {index}: {e}")))?;
    if !applied.ok {
        run_cached(conn, "ROLLBACK TO command")?;
    }
    run_cached(conn, "RELEASE command")?;
    conn.prepare_cached(
        "INSERT INTO _raft_requests (client, seq, command_hash, ok, reply, log_index)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(io_err)?
    .execute(params![
        env.client,
        env.seq as i64,
        &hash[..],
        applied.ok as i64,
        applied.reply,
        index as i64
    ])
    .map_err(io_err)?;
    known.recorded(&env.client, env.seq);
    super::events::record(shared, conn, index, env, &applied, live)?;
    Ok(Ok(applied))
}

/// Deletes the request records that expire at entry `index` (see [`REQUEST_TTL_ENTRIES`]).
pub(super) fn expire_requests(conn: &Connection, index: u64) -> io::Result<()> {
    if !index.is_multiple_of(EXPIRE_EVERY_ENTRIES) || index <= REQUEST_TTL_ENTRIES {
        return Ok(());
    }
    let before = (index - REQUEST_TTL_ENTRIES) as i64;
    for sql in [
        "DELETE FROM _raft_requests WHERE log_index < ?1",
        "DELETE FROM _raft_clients WHERE log_index < ?1",
    ] {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([before]))
            .map_err(io_err)?;
    }
    Ok(())
}

/// Records that `client` has its answers below `ack`: their records go, and a late copy of
/// one of them is refused instead of applied again (see [`apply_envelope`]). Returns the
/// client's watermark (the highest `ack` it ever sent).
fn acknowledge(conn: &Connection, index: u64, client: &str, ack: u64) -> io::Result<u64> {
    conn.prepare_cached("DELETE FROM _raft_requests WHERE client = ?1 AND seq < ?2")
        .and_then(|mut stmt| stmt.execute(params![client, ack as i64]))
        .map_err(io_err)?;
    conn.prepare_cached(
        "INSERT INTO _raft_clients (client, acked, log_index) VALUES (?1, ?2, ?3)
         ON CONFLICT (client) DO UPDATE
         SET acked = max(acked, excluded.acked), log_index = excluded.log_index
         RETURNING acked",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![client, ack as i64, index as i64], |r| {
            r.get::<_, i64>(0)
        })
    })
    .map(|acked| acked as u64)
    .map_err(io_err)
}

/// The client's watermark, for an entry that acknowledges nothing (see [`acknowledge`]).
fn watermark(conn: &Connection, client: &str) -> io::Result<Option<u64>> {
    conn.prepare_cached("SELECT acked FROM _raft_clients WHERE client = ?1")
        .and_then(|mut stmt| stmt.query_row([client], |r| r.get::<_, i64>(0)).optional())
        .map(|acked| acked.map(|a| a as u64))
        .map_err(io_err)
}
