"""The official OpenAI and Anthropic Python SDKs, pointed at Tollgate.

Each test checks that the SDK gets an intact response, that Tollgate's usage
record equals what the provider (mock) billed, and that the cost equals the
hand-computed price to the last unit (Python Decimal, exact).
"""
from decimal import Decimal

import anthropic
import openai
import pytest

from conftest import KEY, URL, assert_matches_bill, billed, record, usd_per_mtok

oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
ant = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)


def cost(rec):
    return Decimal(rec["cost_usd"])


def test_openai_chat():
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"x-mock-cached-tokens": "128", "x-mock-output-tokens": "9"},
    )
    resp = raw.parse()
    assert resp.choices[0].message.content.strip().startswith("the quick")
    assert resp.usage.prompt_tokens_details.cached_tokens == 128
    rid = raw.headers["x-tollgate-request-id"]
    rec = record(rid)
    assert_matches_bill(rec, billed(rid))
    assert rec["user"] == "acme/sdk-user"  # a tenant's users are its own
    uncached = rec["input_tokens"] - 128
    assert cost(rec) == uncached * usd_per_mtok("0.15") + 128 * usd_per_mtok("0.075") + 9 * usd_per_mtok("0.60")


def test_openai_chat_stream_with_and_without_usage():
    for include in (False, True):
        kwargs = {"stream_options": {"include_usage": True}} if include else {}
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "stream please"}], stream=True,
            extra_headers={"x-mock-output-tokens": "11"}, **kwargs,
        )
        rid = raw.headers["x-tollgate-request-id"]
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text.split()) == 11
        usage_chunks = [c for c in chunks if c.usage is not None]
        assert len(usage_chunks) == (1 if include else 0)
        rec = record(rid)
        assert_matches_bill(rec, billed(rid))
        assert cost(rec) == rec["input_tokens"] * usd_per_mtok("2.50") + 11 * usd_per_mtok("10")


def test_openai_responses_and_embeddings():
    raw = oai.responses.with_raw_response.create(model="gpt-4.1", input="hi", extra_headers={"x-mock-reasoning-tokens": "4"})
    resp = raw.parse()
    assert resp.output_text.strip().startswith("the")
    rid = raw.headers["x-tollgate-request-id"]
    rec = record(rid)
    assert_matches_bill(rec, billed(rid))

    with oai.responses.stream(model="gpt-4.1", input="hi") as s:
        final = s.get_final_response()
    assert final.usage.output_tokens == 20

    raw = oai.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "b", "c"])
    emb = raw.parse()
    assert len(emb.data) == 3 and len(emb.data[0].embedding) == 8
    rec = record(raw.headers["x-tollgate-request-id"])
    assert rec["output_tokens"] == 0
    assert cost(rec) == rec["input_tokens"] * usd_per_mtok("0.02")


def test_openai_models_and_errors():
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids and "claude-sonnet-4-5" in ids
    bad = openai.OpenAI(base_url=f"{URL}/v1", api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="gpt-4o", messages=[])
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="nope-model", messages=[])
    assert "nope-model" in str(e.value)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o", messages=[], extra_headers={"x-mock-error": "500"})


def test_anthropic_messages_with_cache_writes():
    raw = ant.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-cache-write-5m-tokens": "1000", "x-mock-cache-write-1h-tokens": "500",
                       "x-mock-cached-tokens": "2000", "x-mock-output-tokens": "7"},
    )
    msg = raw.parse()
    assert msg.content[0].text.strip().startswith("the")
    assert msg.usage.cache_creation.ephemeral_1h_input_tokens == 500
    rid = raw.headers["x-tollgate-request-id"]
    rec = record(rid)
    assert_matches_bill(rec, billed(rid))
    plain = rec["input_tokens"] - 3500
    assert msg.usage.input_tokens == plain
    assert cost(rec) == (plain * usd_per_mtok("3") + 1000 * usd_per_mtok("3.75") + 500 * usd_per_mtok("6")
                         + 2000 * usd_per_mtok("0.30") + 7 * usd_per_mtok("15"))


def test_anthropic_stream_and_count_tokens():
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                             extra_headers={"x-mock-output-tokens": "50"}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert len(text.split()) == 5 and final.usage.output_tokens == 5
    page = ant.models.list()
    assert any(m.id == "claude-haiku-4-5" for m in page.data)
    n = ant.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hello world"}])
    assert n.input_tokens > 0


def test_anthropic_errors_are_native():
    bad = anthropic.Anthropic(base_url=URL, api_key="tg-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
