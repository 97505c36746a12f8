#!/usr/bin/env python3
"""The change feed from a Python gRPC client (grpcio), against a running replicated bank node.

Usage: grpc_watch.py HOST:PORT

Compiles generated/proto/bank.proto with grpcio-tools into a temporary directory, makes five
deposits through the Bank service, then reads them back from the BankWatch service's
server-streaming Watch RPC: the typed command and reply of each event (the `oneof`s), in log
order. A watch for an unknown operation is refused with INVALID_ARGUMENT and the
`x-watch-error: refused` trailer. Exits 1 on the first mismatch.
"""

import importlib
import os
import subprocess
import sys
import tempfile

try:
    import grpc
    import grpc_tools  # noqa: F401  (only checks that the compiler is installed)
except ImportError as e:  # pragma: no cover
    sys.exit(f"missing Python module ({e}); run `pip install grpcio grpcio-tools`")

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "generated", "proto"))
TIMEOUT = 30


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def check(what, got, expected):
    if got != expected:
        fail(f"{what}: expected {expected!r}, got {got!r}")
    print(f"ok   {what} == {expected!r}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = tempfile.mkdtemp(prefix="bank-watch-")
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}", os.path.join(PROTO_DIR, "bank.proto")],
        capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"protoc failed:\n{result.stdout}\n{result.stderr}")
    sys.path.insert(0, out_dir)
    pb = importlib.import_module("bank_pb2")
    rpc = importlib.import_module("bank_pb2_grpc")

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
            fail(f"event {i}: index {event.index} after {last_index}")
        last_index = event.index
        check(f"event {i}: operation", event.operation, "deposit")
        check(f"event {i}: command oneof", event.command.WhichOneof("call"), "deposit")
        check(f"event {i}: account", event.command.deposit.account_id, account)
        check(f"event {i}: amount", event.command.deposit.amount, amount)
        check(f"event {i}: outcome oneof", event.WhichOneof("outcome"), "reply")
        check(f"event {i}: reply oneof", event.reply.WhichOneof("value"), "deposit")
        check(f"event {i}: new balance", event.reply.deposit.value, balances[i])
        if not event.applied_at.endswith("Z"):
            fail(f"event {i}: applied_at {event.applied_at!r} is not RFC 3339 UTC")
    events.cancel()

    try:
        next(feed.Watch(pb.BankWatchRequest(operations=["no_such_operation"]), timeout=TIMEOUT))
        fail("a watch for an unknown operation was accepted")
    except grpc.RpcError as e:
        check("unknown operation: status", e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        trailers = dict(e.trailing_metadata() or ())
        check("unknown operation: x-watch-error", trailers.get("x-watch-error"), "refused")
    print("all checks passed")


if __name__ == "__main__":
    main()
