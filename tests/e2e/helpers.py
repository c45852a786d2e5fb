"""Small assertions shared by the end-to-end tests."""

import time

import botocore.exceptions
import pytest


def aws_error(code, call, *args, **kwargs):
    """Runs a boto3 call that must fail with `code`; returns the error message."""
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    assert err["Code"] == code, f"expected {code}, got {err}"
    return err["Message"]


def eventually(check, timeout=15.0):
    """Polls until `check()` is true: the reconciler applies changes asynchronously."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def wait_status(describe, field, statuses, timeout, what, interval=0.1):
    """Calls `describe()` until the answer's `field` is one of `statuses`;
    returns that answer, or fails naming `what` and the last status."""
    deadline = time.time() + timeout
    while True:
        d = describe()
        if d[field] in statuses:
            return d
        if time.time() >= deadline:
            raise AssertionError(f"{what} still {d[field]} after {timeout}s, not {statuses}")
        time.sleep(interval)
