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


def eventually(check, timeout=5.0):
    """Polls until `check()` is true: the reconciler applies changes asynchronously."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()
