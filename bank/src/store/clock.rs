//! The simulated clock and the monthly statements it produces as it moves.

use bank_generated::{ApplyContext, BankError, BankServiceError};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;

use super::rows::*;

/// The persisted simulated clock.
pub(super) struct Clock {
    pub(super) now: DateTime<Utc>,
    /// The sum of every `advance_time` delta: the simulated clock runs this far ahead of the
    /// leader's clock.
    pub(super) offset: TimeDelta,
}

pub(super) fn read_clock(conn: &Connection) -> Result<Option<Clock>, BankServiceError> {
    let row = conn
        .row(
            "SELECT now, offset_secs, offset_nanos FROM meta WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()
        .map_err(internal)?;
    let Some((now, secs, nanos)) = row else {
        return Ok(None);
    };
    let offset = TimeDelta::try_seconds(secs)
        .and_then(|s| s.checked_add(&TimeDelta::nanoseconds(nanos)))
        .ok_or_else(|| BankServiceError::Fault(format!("stored clock offset {secs}s {nanos}ns")))?;
    Ok(Some(Clock {
        now: time_from_sql(&now)?,
        offset,
    }))
}

pub(super) fn write_clock(conn: &Connection, clock: &Clock) -> Result<(), BankServiceError> {
    conn.run(
        "INSERT INTO meta (id, now, offset_secs, offset_nanos) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET now = excluded.now, offset_secs = excluded.offset_secs,
             offset_nanos = excluded.offset_nanos",
        params![
            time_to_sql(clock.now)?,
            clock.offset.num_seconds(),
            i64::from(clock.offset.subsec_nanos())
        ],
    )
    .map_err(internal)?;
    Ok(())
}

/// Moves the clock to `max(stored now, ctx.time + offset)` and produces the statements of the
/// month ends crossed. Returns the new now.
pub(super) fn sync_clock(
    conn: &Connection,
    ctx: &ApplyContext,
) -> Result<DateTime<Utc>, BankServiceError> {
    let Some(clock) = read_clock(conn)? else {
        let clock = Clock {
            now: ctx.time,
            offset: TimeDelta::zero(),
        };
        write_clock(conn, &clock)?;
        return Ok(clock.now);
    };
    let target = ctx.time.checked_add_signed(clock.offset).ok_or_else(|| {
        BankError::InvalidArgument(format!("command time {} out of range", ctx.time))
    })?;
    if target <= clock.now {
        return Ok(clock.now);
    }
    produce_statements(conn, clock.now, target)?;
    write_clock(
        conn,
        &Clock {
            now: target,
            offset: clock.offset,
        },
    )?;
    Ok(target)
}

/// The first instant of the month after the one holding `t`.
pub(super) fn next_month_start(t: DateTime<Utc>) -> Result<DateTime<Utc>, BankServiceError> {
    let (year, month) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| BankServiceError::Fault(format!("no month after {t}")))
}

/// The first instant of the month before the month starting at `boundary`.
pub(super) fn previous_month_start(
    boundary: DateTime<Utc>,
) -> Result<DateTime<Utc>, BankServiceError> {
    let (year, month) = if boundary.month() == 1 {
        (boundary.year() - 1, 12)
    } else {
        (boundary.year(), boundary.month() - 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| BankServiceError::Fault(format!("no month before {boundary}")))
}

/// Writes the statements of every month that ends in `(from, to]`: for each such month end (the
/// first instant of the next month), one statement for every account created before it.
pub(super) fn produce_statements(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), BankServiceError> {
    let mut boundaries = Vec::new();
    let mut boundary = next_month_start(from)?;
    while boundary <= to {
        boundaries.push(boundary);
        boundary = next_month_start(boundary)?;
    }
    let (Some(&first), Some(&last)) = (boundaries.first(), boundaries.last()) else {
        return Ok(());
    };
    let first_month_start = time_to_sql(previous_month_start(first)?)?;
    let last_sql = time_to_sql(last)?;

    let accounts: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT account_id, create_time FROM accounts WHERE create_time < ?1
                 ORDER BY account_id",
            )
            .map_err(internal)?;
        stmt.query_map([&last_sql], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(internal)?
            .collect::<Result<_, _>>()
            .map_err(internal)?
    };
    let mut before_stmt = conn
        .prepare_cached(
            "SELECT ending_balance FROM transactions
             WHERE account_id = ?1 AND transaction_time < ?2
             ORDER BY transaction_time DESC, transaction_id DESC LIMIT 1",
        )
        .map_err(internal)?;
    let mut month_stmt = conn
        .prepare_cached(
            "SELECT transaction_time, change, ending_balance FROM transactions
             WHERE account_id = ?1 AND transaction_time >= ?2 AND transaction_time < ?3
             ORDER BY transaction_time, transaction_id",
        )
        .map_err(internal)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO statements (account_id, statement_date, starting_balance,
                 ending_balance, total_credits, total_debits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(internal)?;
    let overflow = || BankServiceError::Fault("monthly total out of range".into());

    for (account, create_time) in accounts {
        let create_time = time_from_sql(&create_time)?;
        let mut balance = match before_stmt
            .query_row(params![account, first_month_start], |row| {
                row.get::<_, String>(0)
            })
            .optional()
            .map_err(internal)?
        {
            Some(text) => money_from_sql(&text)?,
            None => Decimal::ZERO,
        };
        let changes: Vec<(DateTime<Utc>, Decimal, Decimal)> = {
            let rows = month_stmt
                .query_map(params![account, first_month_start, last_sql], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(internal)?;
            let mut out = Vec::new();
            for row in rows {
                let (time, change, end) = row.map_err(internal)?;
                out.push((
                    time_from_sql(&time)?,
                    money_from_sql(&change)?,
                    money_from_sql(&end)?,
                ));
            }
            out
        };
        let mut next = 0;
        for &boundary in &boundaries {
            let starting = balance;
            let mut credits = Decimal::ZERO;
            let mut debits = Decimal::ZERO;
            while let Some(&(time, change, end)) = changes.get(next) {
                if time >= boundary {
                    break;
                }
                if change > Decimal::ZERO {
                    credits = credits.checked_add(change).ok_or_else(overflow)?;
                } else {
                    debits = debits.checked_sub(change).ok_or_else(overflow)?;
                }
                balance = end;
                next += 1;
            }
            if create_time >= boundary {
                continue;
            }
            let date = boundary
                .date_naive()
                .pred_opt()
                .ok_or_else(|| BankServiceError::Fault(format!("no day before {boundary}")))?;
            insert
                .execute(params![
                    account,
                    date_to_sql(date),
                    money(starting).to_string(),
                    money(balance).to_string(),
                    money(credits).to_string(),
                    money(debits).to_string(),
                ])
                .map_err(internal)?;
        }
    }
    Ok(())
}
