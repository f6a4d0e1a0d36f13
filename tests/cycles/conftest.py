"""Fixtures for the Cycles tests: the official `runcycles` client pointed at
the gateway, and every response body checked against the protocol's schemas.

Run by the Rust test `cycles::official_runcycles_client`, which starts the
real binaries and passes their addresses and keys in the environment.
"""
import json
import os
import pathlib
import urllib.request

import jsonschema
import pytest
import yaml
from runcycles import CyclesClient, CyclesConfig

URL = os.environ.get("TOLLGATE_URL", "")
ADMIN = os.environ.get("TOLLGATE_ADMIN_KEY", "")
KEY = os.environ.get("CYCLES_KEY", "")
OTHER_KEY = os.environ.get("CYCLES_OTHER_KEY", "")

HERE = pathlib.Path(__file__).parent
SPEC = yaml.safe_load((HERE / "cycles-protocol-v0.yaml").read_text())
# The governance document's introspection schema, beside the runtime's.
SPEC["components"]["schemas"].update(
    yaml.safe_load((HERE / "cycles-governance-introspect.yaml").read_text())["components"]["schemas"])


def check(schema, body):
    """Validates `body` against `#/components/schemas/<schema>` of the protocol."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}
    jsonschema.Draft202012Validator(root).validate(body)
    return body


def admin(method, path, body=None):
    req = urllib.request.Request(f"{URL}{path}", method=method)
    req.add_header("Authorization", f"Bearer {ADMIN}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data=data, timeout=10) as r:
        return json.loads(r.read() or b"null")


def client(key=KEY):
    return CyclesClient(CyclesConfig(base_url=URL, api_key=key, tenant="acme", retry_enabled=False))


@pytest.fixture
def cycles():
    with client() as c:
        yield c


@pytest.fixture
def other():
    with client(OTHER_KEY) as c:
        yield c
