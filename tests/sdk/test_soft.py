"""Soft limits and rate limits through the official SDKs: warn, downgrade
and throttle answers parse, carry their headers, and a throttled 429 is
retried by the SDK's own retry until it is admitted; shadow flags what
block refuses; footers parse in all three SDKs, whole and streamed."""
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
from google import genai
from google.genai import types

from conftest import URL, admin_post, all_records

MSGS = [{"role": "user", "content": "hello"}]


def test_warn_and_downgrade_answers_parse_with_their_headers():
    key = admin_post("/admin/keys", {"name": "soft", "user": "softy"})["key"]
    admin_post("/admin/budgets", {"id": "softy-warn", "scope": "user", "subject": "softy",
                                  "limit_tokens": 60, "period": "daily", "action": "warn"})
    admin_post("/admin/budgets", {"id": "softy-down", "scope": "user", "subject": "softy",
                                  "limit_usd": "0.0004", "period": "daily", "models": ["gpt-4o"],
                                  "action": "downgrade", "downgrade_to": "gpt-4o-mini"})
    oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key)
    warned = downgraded = 0
    for _ in range(8):
        raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS, max_tokens=20)
        c = raw.parse()
        assert c.choices[0].message.content
        if raw.headers.get("x-tollgate-warning"):
            warned += 1
            assert "past its daily limit" in raw.headers["x-tollgate-warning"]
        if raw.headers.get("x-tollgate-downgraded-from") == "gpt-4o":
            downgraded += 1
            assert c.model == "gpt-4o-mini"
    assert warned > 0 and downgraded > 0, (warned, downgraded)
    # Streams parse too, with the same headers.
    with oai.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=MSGS, max_tokens=20, stream=True) as resp:
        assert resp.headers.get("x-tollgate-warning")
        chunks = list(resp.parse())
        assert chunks
    recs = [r for r in all_records() if r["user"] == "softy"]
    assert any("warned" in r["flags"] for r in recs)
    assert any("downgraded" in r["flags"] and r["model_served"] == "gpt-4o-mini" for r in recs)


def test_throttled_requests_are_retried_by_the_sdk_until_admitted():
    key = admin_post("/admin/keys", {"name": "thr", "user": "throttled"})["key"]
    admin_post("/admin/budgets", {"id": "thr", "scope": "user", "subject": "throttled",
                                  "limit_tokens": 1, "period": "daily", "action": "throttle",
                                  "throttle": {"requests_per_minute": 120}})
    oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key, max_retries=8)

    def one(_):
        return oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=5).id

    # A minute's burst (120) and a few more at once: those get retryable
    # 429s with Retry-After, which the SDK waits out.
    with ThreadPoolExecutor(max_workers=64) as ex:
        ids = list(ex.map(one, range(126)))
    assert len(ids) == 126
    recs = [r for r in all_records() if r["user"] == "throttled"]
    assert sum("throttled" in r["flags"] for r in recs) == 126


def test_rate_limit_refusals_are_native_in_anthropic_format():
    key = admin_post("/admin/keys", {"name": "rl", "user": "rl-anthropic"})["key"]
    admin_post("/admin/rate-limits", {"scope": "user", "subject": "rl-anthropic", "requests_per_minute": 1})
    ant = anthropic.Anthropic(base_url=URL, api_key=key, max_retries=0)
    ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MSGS)
    try:
        ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MSGS)
        raise AssertionError("the second request in the minute should be limited")
    except anthropic.RateLimitError as e:
        assert e.body["error"]["type"] == "rate_limit_error", e.body
        assert e.response.headers.get("retry-after")
        assert e.response.headers.get("x-ratelimit-limit-requests") == "1"


def test_footers_parse_in_the_sdks():
    key = admin_post("/admin/keys", {"name": "foot", "user": "footed"})["key"]
    admin_post("/admin/budgets", {"id": "footed", "scope": "user", "subject": "footed",
                                  "limit_usd": "1.00", "period": "daily",
                                  "footer": "---\nYour usage: {usd_used}/{usd_limit} ({percent_used}%)."})
    oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key)
    c = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=20)
    assert c.choices[0].message.content.endswith("%).") and "Your usage: $" not in c.choices[0].message.content
    assert "\n\n---\nYour usage: " in c.choices[0].message.content
    ant = anthropic.Anthropic(base_url=URL, api_key=key)
    m = ant.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=MSGS)
    assert "\n\n---\nYour usage: " in m.content[-1].text
    gem = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=URL))
    g = gem.models.generate_content(model="gemini-2.5-flash", contents="hello",
                                    config=types.GenerateContentConfig(max_output_tokens=20))
    assert "\n\n---\nYour usage: " in g.text and g.candidates[0].finish_reason


def test_streamed_footers_parse_in_the_sdks():
    key = admin_post("/admin/keys", {"name": "foot-s", "user": "footed-s"})["key"]
    admin_post("/admin/budgets", {"id": "footed-s", "scope": "user", "subject": "footed-s",
                                  "limit_usd": "1.00", "period": "daily",
                                  "footer": "---\nYour usage: {usd_used}/{usd_limit}"})
    oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key)
    text, finish = "", None
    for chunk in oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=20, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "\n\n---\nYour usage: " in text and finish
    ant = anthropic.Anthropic(base_url=URL, api_key=key)
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=20, messages=MSGS) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert "\n\n---\nYour usage: " in streamed
    assert final.content[-1].text.startswith("\n\n---\nYour usage: ")
    gem = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=URL))
    chunks = list(gem.models.generate_content_stream(
        model="gemini-2.5-flash", contents="hello",
        config=types.GenerateContentConfig(max_output_tokens=20)))
    assert "\n\n---\nYour usage: " in "".join(c.text or "" for c in chunks)
    assert chunks[-1].candidates[0].finish_reason


def test_shadow_marks_exactly_what_block_refuses():
    """Two users send the same traffic, one under a `block` budget and one
    under the same budget in `shadow`: the shadowed user is never refused,
    and the requests its records flag `would_block` are exactly those the
    blocked user was refused."""
    one_token = {"x-mock-output-tokens": "1"}
    results = {}
    for action in ["block", "shadow"]:
        user = f"shadow-{action}"
        key = admin_post("/admin/keys", {"name": user, "user": user})["key"]
        admin_post("/admin/budgets", {"id": user, "scope": "user", "subject": user,
                                      "limit_tokens": 60, "period": "daily", "action": action})
        oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key, max_retries=0)
        outcome = []
        for i in range(12):
            # One output token each: no request can be capped, so both users'
            # spend moves in step until the first refusal.
            msgs = [{"role": "user", "content": f"request {i}"}]
            try:
                raw = oai.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=msgs, max_tokens=1, extra_headers=one_token)
                outcome.append((i, raw.headers["x-tollgate-request-id"]))
            except openai.APIStatusError as e:
                assert action == "block", e
                assert e.status_code == 429 and e.code == "budget_exceeded", e.body
                outcome.append((i, None))
        results[action] = outcome
    refused = {i for i, rid in results["block"] if rid is None}
    assert refused and len(refused) < 12, refused
    assert all(rid for _, rid in results["shadow"]), "shadow never refuses"
    flags = {r["request_id"]: r["flags"] for r in all_records() if r["user"] == "shadow-shadow"}
    would_block = {i for i, rid in results["shadow"] if "would_block" in flags[rid]}
    assert would_block == refused, (would_block, refused)
