"""Streams ended by their budget mid-flight, through the official SDKs:
each SDK reads a valid, cleanly ended stream (its own length stop
reason), in every format.

Run by the Rust test `sdk::official_sdks_read_streams_cut_by_their_budget`
against a gateway with `budgets.streaming: topup`."""
import os
import sys

import anthropic
import openai
from google import genai
from google.genai import types

# The admin helpers of the main SDK tests (the environment names the gateway).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "sdk"))
from conftest import URL, admin_post  # noqa: E402

SLOW = {"x-mock-chunk-delay-ms": "1", "x-mock-output-tokens": "600"}


def key_with_budget(user, tokens):
    key = admin_post("/admin/keys", {"name": user, "user": user})["key"]
    admin_post("/admin/budgets", {"id": user, "scope": "user", "subject": user,
                                  "limit_tokens": tokens, "period": "daily"})
    return key


def test_openai_chat_stream_ends_with_length():
    oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key_with_budget("cut-oai", 200))
    finish, text = None, ""
    for chunk in oai.chat.completions.create(model="gpt-4o-mini", max_tokens=600, stream=True,
                                             messages=[{"role": "user", "content": "go"}],
                                             stream_options={"include_usage": True},
                                             extra_headers=SLOW):
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
        if chunk.usage:
            assert chunk.usage.completion_tokens > 0
    assert finish == "length" and text


def test_anthropic_stream_ends_with_max_tokens():
    ant = anthropic.Anthropic(base_url=URL, api_key=key_with_budget("cut-ant", 200))
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=600,
                             messages=[{"role": "user", "content": "go"}], extra_headers=SLOW) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and text


def test_gemini_stream_ends_with_max_tokens():
    client = genai.Client(api_key=key_with_budget("cut-gem", 200),
                          http_options=types.HttpOptions(base_url=URL, headers=SLOW))
    last = None
    for chunk in client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="go",
            config=types.GenerateContentConfig(max_output_tokens=600)):
        last = chunk
    assert last.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
