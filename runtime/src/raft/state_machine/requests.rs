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

/// How many clients [`KnownClients`] remembers before it starts over (each is then read again
/// from the database once).
const KNOWN_CLIENTS: usize = 100_000;

/// What apply knows of one client without asking the database.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// At or above every sequence number the client has a record for.
    seq_bound: u64,
    /// The client's watermark (`_raft_clients.acked`), if it has one.
    acked: Option<u64>,
}

/// Per client, read from its rows the first time the client is seen and kept up to date by
/// every request applied: a bound on its request records' sequence numbers (a client's
/// sequence numbers mostly grow, so almost every entry is above the bound and needs no
/// lookup) and its watermark (so acknowledging needs no read back). It must not run ahead of
/// the database: a batch that fails is rolled back and the node stops, and a snapshot install,
/// which brings other rows, empties it ([`KnownClients::forget`] in both).
#[derive(Debug, Default)]
pub(super) struct KnownClients(std::collections::HashMap<String, Known>);

impl KnownClients {
    /// Empties it (the database under it was replaced or rolled back).
    pub(super) fn forget(&mut self) {
        self.0.clear();
    }

    /// What is known of `client`, read from the database the first time.
    fn get(&mut self, conn: &Connection, client: &str) -> io::Result<Known> {
        if let Some(known) = self.0.get(client) {
            return Ok(*known);
        }
        let seq_bound: Option<i64> = conn
            .prepare_cached("SELECT max(seq) FROM _raft_requests WHERE client = ?1")
            .and_then(|mut s| s.query_row([client], |r| r.get(0)))
            .map_err(io_err)?;
        let acked: Option<i64> = conn
            .prepare_cached("SELECT acked FROM _raft_clients WHERE client = ?1")
            .and_then(|mut s| s.query_row([client], |r| r.get(0)).optional())
            .map_err(io_err)?;
        let known = Known {
            seq_bound: seq_bound.map_or(0, |b| b as u64),
            acked: acked.map(|a| a as u64),
        };
        if self.0.len() >= KNOWN_CLIENTS {
            self.0.clear();
        }
        self.0.insert(client.to_string(), known);
        Ok(known)
    }

    /// `client` is now as `known` says (it was read with [`KnownClients::get`] in this batch).
    fn set(&mut self, client: &str, known: Known) {
        if let Some(slot) = self.0.get_mut(client) {
            *slot = known;
        }
    }
}

/// Applies one normal entry inside the batch transaction; returns its outcome.
pub(super) fn apply_envelope(
    shared: &Shared,
    known: &mut KnownClients,
    conn: &Connection,
    index: u64,
    env: &Envelope,
    live: &mut Option<Vec<crate::raft::feed::Event>>,
) -> io::Result<Outcome> {
    let _span = tracing::debug_span!("apply", index, client = %env.client, seq = env.seq).entered();
    let mut client = known.get(conn, &env.client)?;
    if env.ack > 0 {
        client.acked = Some(acknowledge(
            conn,
            index,
            &env.client,
            env.ack,
            client.acked,
        )?);
        known.set(&env.client, client);
    }
    let hash: [u8; 32] = Sha256::digest(&env.command).into();
    // Above every sequence number the client has a record for: no record to look up.
    let seen: Option<(Option<Vec<u8>>, bool, Vec<u8>)> = if env.seq <= client.seq_bound {
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
    if client.acked.is_some_and(|acked| env.seq < acked) {
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
    client.seq_bound = client.seq_bound.max(env.seq);
    known.set(&env.client, client);
    super::events::record(shared, conn, index, env, &applied, live)?;
    Ok(Ok(applied))
}

/// Deletes the request records and client watermarks that expire at entry `index` (see
/// [`REQUEST_TTL_ENTRIES`]); `known` forgets what it knew when a watermark goes, so a client
/// without one is treated as the database says.
pub(super) fn expire_requests(
    conn: &Connection,
    known: &mut KnownClients,
    index: u64,
) -> io::Result<()> {
    if !index.is_multiple_of(EXPIRE_EVERY_ENTRIES) || index <= REQUEST_TTL_ENTRIES {
        return Ok(());
    }
    let before = (index - REQUEST_TTL_ENTRIES) as i64;
    conn.prepare_cached("DELETE FROM _raft_requests WHERE log_index < ?1")
        .and_then(|mut stmt| stmt.execute([before]))
        .map_err(io_err)?;
    let gone = conn
        .prepare_cached("DELETE FROM _raft_clients WHERE log_index < ?1")
        .and_then(|mut stmt| stmt.execute([before]))
        .map_err(io_err)?;
    if gone > 0 {
        known.forget();
    }
    Ok(())
}

/// Records that `client` has its answers below `ack`: their records go, and a late copy of
/// one of them is refused instead of applied again (see [`apply_envelope`]). `acked` is the
/// client's watermark so far (the highest `ack` it ever sent); returns the new one. No record
/// is below the old watermark (they went when it was raised), so only a higher `ack` deletes.
fn acknowledge(
    conn: &Connection,
    index: u64,
    client: &str,
    ack: u64,
    acked: Option<u64>,
) -> io::Result<u64> {
    if acked.is_none_or(|acked| ack > acked) {
        conn.prepare_cached("DELETE FROM _raft_requests WHERE client = ?1 AND seq < ?2")
            .and_then(|mut stmt| stmt.execute(params![client, ack as i64]))
            .map_err(io_err)?;
    }
    // Refreshed at every acknowledgement, so an active client's row does not expire.
    conn.prepare_cached(
        "INSERT INTO _raft_clients (client, acked, log_index) VALUES (?1, ?2, ?3)
         ON CONFLICT (client) DO UPDATE
         SET acked = max(acked, excluded.acked), log_index = excluded.log_index",
    )
    .and_then(|mut stmt| stmt.execute(params![client, ack as i64, index as i64]))
    .map_err(io_err)?;
    Ok(acked.map_or(ack, |acked| acked.max(ack)))
}
