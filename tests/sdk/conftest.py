"""Fixtures for the SDK tests: the gateway, its admin API and the mock's bill.

Run by the Rust test `sdk::official_python_sdks`, which starts the real
binaries and passes their addresses in the environment.
"""
import json
import os
import time
import urllib.request
from decimal import Decimal

import pytest

URL = os.environ.get("TOLLGATE_URL", "")
KEY = os.environ.get("TOLLGATE_KEY", "")
ADMIN = os.environ.get("TOLLGATE_ADMIN_KEY", "")
MOCK = os.environ.get("MOCK_URL", "")


def _get(url, bearer=None):
    req = urllib.request.Request(url)
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def record(request_id):
    """The gateway's usage record for a request, waiting for the batch writer."""
    deadline = time.time() + 10
    while time.time() < deadline:
        page = _get(f"{URL}/admin/records?limit=1000", ADMIN)
        for r in page["records"]:
            if r["request_id"] == request_id:
                return r
        time.sleep(0.05)
    raise AssertionError(f"no record for {request_id}")


def billed(request_id):
    """What the mock provider billed for a request."""
    for r in _get(f"{MOCK}/mock/billing")["requests"]:
        if r["request_id"] == request_id:
            return r
    raise AssertionError(f"mock has no request {request_id}")


def usd_per_mtok(s):
    return Decimal(s) / Decimal(1_000_000)


def assert_matches_bill(rec, bill):
    for f in ["input_tokens", "output_tokens", "cached_input_tokens",
              "cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens"]:
        assert rec[f] == bill["usage"][f], (f, rec, bill)


@pytest.fixture(scope="session", autouse=True)
def _env():
    if not URL:
        pytest.skip("run through `cargo test` (sdk::official_python_sdks)")


def admin_post(path, body):
    req = urllib.request.Request(f"{URL}{path}", data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {ADMIN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def admin_get(path):
    return _get(f"{URL}{path}", ADMIN)


def all_records():
    time.sleep(0.3)
    return admin_get("/admin/records?limit=1000")["records"]
