"""The official google-genai Python SDK, pointed at Tollgate with a custom
base URL (the SDK then calls the `v1` API by default)."""
from decimal import Decimal

import pytest
from google import genai
from google.genai import errors, types

from conftest import KEY, URL, assert_matches_bill, billed, record, usd_per_mtok

client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=URL))


def request_id(resp):
    return resp.sdk_http_response.headers["x-tollgate-request-id"]


def test_gemini_generate_and_stream_are_metered():
    resp = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="hello gemini",
        config=types.GenerateContentConfig(max_output_tokens=64),
    )
    assert resp.text.strip()
    rid = request_id(resp)
    rec = record(rid)
    assert_matches_bill(rec, billed(rid))
    assert Decimal(rec["cost_usd"]) == (
        rec["input_tokens"] * usd_per_mtok("0.3") + rec["output_tokens"] * usd_per_mtok("2.5")
    )

    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="stream"))
    text = "".join(c.text or "" for c in chunks)
    assert text.strip()
    assert chunks[-1].usage_metadata.candidates_token_count > 0


def test_gemini_count_tokens_and_errors():
    n = client.models.count_tokens(model="gemini-2.5-flash", contents="count these words")
    assert n.total_tokens > 0
    bad = genai.Client(api_key="tg-wrong", http_options=types.HttpOptions(base_url=URL))
    with pytest.raises(errors.ClientError) as e:
        bad.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert e.value.code == 401
