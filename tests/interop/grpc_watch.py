#!/usr/bin/env python3
"""The change feed from a Python gRPC client (grpcio), against a running replicated bank node.

Usage: grpc_watch.py HOST:PORT

Compiles generated/proto/bank.proto with grpcio-tools into a temporary directory (the
walk-through's `compile_proto`), makes five
deposits through the Bank service, then reads them back from the BankWatch service's
server-streaming Watch RPC: the typed command and reply of each event (the `oneof`s), in log
order. A watch for an unknown operation is refused with INVALID_ARGUMENT and the
`x-watch-error: refused` trailer. Exits 1 on the first mismatch.
"""

import os
import sys
import tempfile

# The walk-through's helpers: the proto compiled at run time, and the checks.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_walkthrough import TIMEOUT, Mismatch, check, compile_proto  # noqa: E402

import grpc  # noqa: E402  (the walk-through's import says what to install when it is missing)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory(prefix="bank-watch-") as out_dir:
        pb, rpc = compile_proto(out_dir)
        try:
            watch(pb, rpc)
        except Mismatch as e:
            print(f"MISMATCH {e}", flush=True)
            sys.exit(1)
    print("all checks passed")


def watch(pb, rpc):
    channel = grpc.insecure_channel(sys.argv[1])
    bank = rpc.BankStub(channel)
    feed = rpc.BankWatchStub(channel)

    customer = bank.CreateCustomer(
        pb.CreateCustomerRequest(first_name="Py", last_name="Watcher", address="1 Feed Road"),
        timeout=TIMEOUT).value
    account = bank.CreateAccount(
        pb.CreateAccountRequest(customer_id=customer.customer_id,
                                account_type=pb.ACCOUNT_TYPE_CHECKING),
        timeout=TIMEOUT).value.account_id
    amounts = ["1.00", "2.50", "3.00", "4.25", "5.00"]
    balances = []
    for amount in amounts:
        balances.append(bank.Deposit(pb.DepositRequest(account_id=account, amount=amount),
                                     timeout=TIMEOUT).value)

    events = feed.Watch(pb.BankWatchRequest(from_index=1, operations=["deposit"],
                                            key=str(account)), timeout=TIMEOUT)
    last_index = 0
    for i, amount in enumerate(amounts):
        event = next(events)
        if event.index <= last_index:
            raise Mismatch(f"event {i}: index {event.index} after {last_index}")
        last_index = event.index
        check(f"event {i}: operation", event.operation, "deposit")
        check(f"event {i}: command oneof", event.command.WhichOneof("call"), "deposit")
        check(f"event {i}: account", event.command.deposit.account_id, account)
        check(f"event {i}: amount", event.command.deposit.amount, amount)
        check(f"event {i}: outcome oneof", event.WhichOneof("outcome"), "reply")
        check(f"event {i}: reply oneof", event.reply.WhichOneof("value"), "deposit")
        check(f"event {i}: new balance", event.reply.deposit.value, balances[i])
        if not event.applied_at.endswith("Z"):
            raise Mismatch(f"event {i}: applied_at {event.applied_at!r} is not RFC 3339 UTC")
    events.cancel()

    try:
        next(feed.Watch(pb.BankWatchRequest(operations=["no_such_operation"]), timeout=TIMEOUT))
        raise Mismatch("a watch for an unknown operation was accepted")
    except grpc.RpcError as e:
        check("unknown operation: status", e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        trailers = dict(e.trailing_metadata() or ())
        check("unknown operation: x-watch-error", trailers.get("x-watch-error"), "refused")


if __name__ == "__main__":
    main()
