//! The codec of one deposit, the work every replicated write does outside raft and SQLite:
//! the Collector's encoding of the command, the Dispatcher's decoding of it, and the reply's
//! encoding and decoding. The service itself is left out (a fixed balance stands in for it).
//!
//! `cargo bench -p bank --bench codec` prints the median over 15 runs of 100,000 round trips.
//! A plain loop rather than criterion: one figure, no extra crates in the build.

use std::hint::black_box;
use std::time::Instant;

use bank_generated::{BankCommand, BankReply, decode_reply, encode_reply};
use rust_decimal::Decimal;

/// One round trip; returns the decoded balance.
fn round_trip(account_id: u64) -> Decimal {
    let command = BankCommand::Deposit {
        account_id,
        amount: Decimal::new(12_345, 2),
    };
    let bytes = command.encode().unwrap_or_default();
    let decoded = BankCommand::decode(black_box(&bytes));
    let balance = match decoded {
        Ok(BankCommand::Deposit { amount, .. }) => amount,
        _ => Decimal::ZERO,
    };
    let reply = encode_reply(&Ok(BankReply::Deposit(balance)));
    match decode_reply(black_box(&reply)) {
        Ok(BankReply::Deposit(balance)) => balance,
        _ => Decimal::ZERO,
    }
}

fn main() {
    const ROUND_TRIPS: u64 = 100_000;
    const RUNS: usize = 15;
    assert_eq!(
        round_trip(7),
        Decimal::new(12_345, 2),
        "the round trip is lossless"
    );
    let mut per_call_ns: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..ROUND_TRIPS {
                black_box(round_trip(black_box(i)));
            }
            start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64
        })
        .collect();
    per_call_ns.sort_by(f64::total_cmp);
    println!(
        "deposit codec round trip (encode command, decode command, encode reply, decode reply): \
         median {:.0} ns, min {:.0} ns, max {:.0} ns over {RUNS} runs of {ROUND_TRIPS}",
        per_call_ns[RUNS / 2],
        per_call_ns[0],
        per_call_ns[RUNS - 1]
    );
}
