#!/usr/bin/env python3
"""The bank's walk-through from a Python gRPC client (grpcio), against a running Rust server.

Usage: grpc_walkthrough.py HOST:PORT

The client code is generated at run time by grpcio-tools from generated/proto/bank.proto into a
temporary directory, so this checks that the published .proto is all another language needs.
Every value is asserted; on the first mismatch the script prints what was expected and what came
back, and exits with status 1. Needs `pip install grpcio grpcio-tools`.
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
PROTO = "bank.proto"
TIMEOUT = 30  # seconds per call


class Mismatch(Exception):
    pass


def check(what, got, expected):
    if got != expected:
        raise Mismatch(f"{what}: expected {expected!r}, got {got!r}")
    print(f"ok   {what} == {expected!r}")


def check_true(what, cond, detail=""):
    if not cond:
        raise Mismatch(f"{what}: {detail}")
    print(f"ok   {what}")


def compile_proto(out_dir):
    """Generates bank_pb2 / bank_pb2_grpc into out_dir and imports them."""
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_DIR, PROTO),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"protoc failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    sys.path.insert(0, out_dir)
    return importlib.import_module("bank_pb2"), importlib.import_module("bank_pb2_grpc")


def expect_error(what, call, code, kind=None):
    """Runs call(), which must fail with the gRPC status `code` (and x-error-kind `kind`)."""
    try:
        response = call()
    except grpc.RpcError as e:
        check(f"{what}: status", e.code(), code)
        if kind is not None:
            metadata = dict(e.trailing_metadata() or ())
            check(f"{what}: x-error-kind", metadata.get("x-error-kind"), kind)
        return
    raise Mismatch(f"{what}: expected {code}, got a response: {response!r}")


def walkthrough(pb, stub, channel):
    # 1. A customer with no accounts.
    jane = stub.CreateCustomer(
        pb.CreateCustomerRequest(first_name="Jane", last_name="Doe", address="456 Elm Street"),
        timeout=TIMEOUT,
    ).value
    check_true("1. customer id assigned", jane.customer_id > 0, f"id {jane.customer_id}")
    check("1. first_name", jane.first_name, "Jane")
    check("1. last_name", jane.last_name, "Doe")
    check("1. address", jane.address, "456 Elm Street")
    check("1. accounts", list(jane.accounts), [])
    customer_id = jane.customer_id

    # 2. Two accounts, both empty.
    checking = stub.CreateAccount(
        pb.CreateAccountRequest(customer_id=customer_id, account_type=pb.ACCOUNT_TYPE_CHECKING),
        timeout=TIMEOUT,
    ).value
    savings = stub.CreateAccount(
        pb.CreateAccountRequest(customer_id=customer_id, account_type=pb.ACCOUNT_TYPE_SAVINGS),
        timeout=TIMEOUT,
    ).value
    check("2. checking type", checking.account_type, pb.ACCOUNT_TYPE_CHECKING)
    check("2. savings type", savings.account_type, pb.ACCOUNT_TYPE_SAVINGS)
    check("2. checking owner", checking.customer_id, customer_id)
    check("2. savings owner", savings.customer_id, customer_id)
    check("2. checking balance", checking.balance, "0.00")
    check("2. savings balance", savings.balance, "0.00")
    check_true(
        "2. distinct ids",
        savings.account_id != checking.account_id,
        f"{checking.account_id} and {savings.account_id}",
    )
    c, s = checking.account_id, savings.account_id

    # 3. Deposits.
    r = stub.Deposit(pb.DepositRequest(account_id=c, amount="1000.00"), timeout=TIMEOUT)
    check("3. deposit checking 1000.00", r.value, "1000.00")
    r = stub.Deposit(pb.DepositRequest(account_id=s, amount="500.00"), timeout=TIMEOUT)
    check("3. deposit savings 500.00", r.value, "500.00")

    # 4. Withdraw.
    r = stub.Withdraw(pb.WithdrawRequest(account_id=c, amount="100.00"), timeout=TIMEOUT)
    check("4. withdraw checking 100.00", r.value, "900.00")

    # 5. Transfer.
    r = stub.Transfer(
        pb.TransferRequest(from_account_id=c, to_account_id=s, amount="200.00"), timeout=TIMEOUT
    ).value
    check("5. transfer from_balance", r.from_balance, "700.00")
    check("5. transfer to_balance", r.to_balance, "700.00")

    # 6. Cash a check.
    r = stub.CashCheck(pb.CashCheckRequest(account_id=c, amount="50.00"), timeout=TIMEOUT)
    check("6. cash_check checking 50.00", r.value, "650.00")

    # 7. Listing.
    accounts = stub.ListAccounts(pb.ListAccountsRequest(), timeout=TIMEOUT).value
    by_id = {a.account_id: a for a in accounts}
    check_true("7. list_accounts has checking", c in by_id, f"ids {sorted(by_id)}")
    check_true("7. list_accounts has savings", s in by_id, f"ids {sorted(by_id)}")
    check("7. listed checking balance", by_id[c].balance, "650.00")
    check("7. listed savings balance", by_id[s].balance, "700.00")
    ids = [a.account_id for a in accounts]
    check("7. list_accounts ordered by id", ids, sorted(ids))
    one = stub.ListAccounts(pb.ListAccountsRequest(offset=0, limit=1), timeout=TIMEOUT).value
    check("7. list_accounts limit=1", len(one), 1)
    r = stub.GetAccounts(pb.GetAccountsRequest(customer_id=customer_id), timeout=TIMEOUT)
    check("7. get_accounts", list(r.value), [c, s])
    customers = stub.ListCustomers(pb.ListCustomersRequest(), timeout=TIMEOUT).value
    listed = [x for x in customers if x.customer_id == customer_id]
    check("7. list_customers has Jane with both accounts", [list(x.accounts) for x in listed], [[c, s]])

    # 8. Statements and the clock.
    r = stub.ListStatements(pb.ListStatementsRequest(account_id=c), timeout=TIMEOUT)
    check("8. no statements yet", list(r.value), [])
    before = stub.AdvanceTime(pb.AdvanceTimeRequest(delta="1s"), timeout=TIMEOUT).value
    after = stub.AdvanceTime(pb.AdvanceTimeRequest(delta="86400s"), timeout=TIMEOUT).value
    check_true("8. advance_time returns RFC 3339 times", "T" in before and "T" in after, f"{before} / {after}")
    check_true("8. the clock moved forward", after > before, f"{before} -> {after}")

    # 9. Past the next month end: one statement per month ended.
    stub.AdvanceTime(pb.AdvanceTimeRequest(delta=f"{40 * 86400}s"), timeout=TIMEOUT)
    dates = list(stub.ListStatements(pb.ListStatementsRequest(account_id=c), timeout=TIMEOUT).value)
    check_true("9. at least one statement", len(dates) >= 1, f"dates {dates}")
    check("9. statement dates ascending", dates, sorted(dates))
    statement = stub.GetStatement(
        pb.GetStatementRequest(account_id=c, statement_date=dates[0]), timeout=TIMEOUT
    ).value
    check("9. statement account", statement.account_id, c)
    check("9. statement date", statement.statement_date, dates[0])
    check("9. statement starting balance", statement.starting_balance, "0.00")
    check("9. statement ending balance", statement.ending_balance, "650.00")
    check("9. statement credits", statement.total_credits, "1000.00")
    check("9. statement debits", statement.total_debits, "350.00")

    # 10. Typed errors.
    missing = max(c, s) + 1000
    expect_error(
        "10. deposit to an unknown account",
        lambda: stub.Deposit(pb.DepositRequest(account_id=missing, amount="1.00"), timeout=TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
        "NotFound",
    )
    expect_error(
        "10. withdraw 10000.00",
        lambda: stub.Withdraw(pb.WithdrawRequest(account_id=c, amount="10000.00"), timeout=TIMEOUT),
        grpc.StatusCode.FAILED_PRECONDITION,
        "InsufficientFunds",
    )
    expect_error(
        "10. transfer more than the balance",
        lambda: stub.Transfer(
            pb.TransferRequest(from_account_id=c, to_account_id=s, amount="650.01"), timeout=TIMEOUT
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "InsufficientFunds",
    )
    expect_error(
        "10. deposit -5.00",
        lambda: stub.Deposit(pb.DepositRequest(account_id=c, amount="-5.00"), timeout=TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidArgument",
    )
    expect_error(
        "10. transfer to the same account",
        lambda: stub.Transfer(
            pb.TransferRequest(from_account_id=c, to_account_id=c, amount="1.00"), timeout=TIMEOUT
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidArgument",
    )
    expect_error(
        "10. deposit amount 'abc'",
        lambda: stub.Deposit(pb.DepositRequest(account_id=c, amount="abc"), timeout=TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    expect_error(
        "10. create_account with ACCOUNT_TYPE_UNSPECIFIED",
        lambda: stub.CreateAccount(
            pb.CreateAccountRequest(customer_id=customer_id, account_type=pb.ACCOUNT_TYPE_UNSPECIFIED),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    nope = channel.unary_unary(
        "/bank.v1.Bank/Nope",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    expect_error("10. unknown method", lambda: nope(b"", timeout=TIMEOUT), grpc.StatusCode.UNIMPLEMENTED)

    # None of the failed calls changed anything.
    accounts = stub.ListAccounts(pb.ListAccountsRequest(), timeout=TIMEOUT).value
    by_id = {a.account_id: a for a in accounts}
    check("10. checking balance unchanged by the errors", by_id[c].balance, "650.00")
    check("10. savings balance unchanged by the errors", by_id[s].balance, "700.00")
    r = stub.GetAccounts(pb.GetAccountsRequest(customer_id=customer_id), timeout=TIMEOUT)
    check("10. no account created by the errors", list(r.value), [c, s])
    print(f"RESULT customer={customer_id} checking={c} savings={s}")


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} HOST:PORT")
    addr = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="bank-grpc-py-") as out_dir:
        pb, pb_grpc = compile_proto(out_dir)
        with grpc.insecure_channel(addr) as channel:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
            stub = pb_grpc.BankStub(channel)
            try:
                walkthrough(pb, stub, channel)
            except Mismatch as e:
                print(f"MISMATCH {e}", flush=True)
                sys.exit(1)
            except grpc.RpcError as e:
                print(f"UNEXPECTED gRPC error {e.code()}: {e.details()}", flush=True)
                sys.exit(1)
    print("walk-through passed")


if __name__ == "__main__":
    main()
