"""Budgets that hold, through the official SDKs: 200 concurrent requests,
streaming and not, OpenAI and Anthropic formats, against one budget that
affords a fraction of them.

Regression for check-then-increment budgets (LiteLLM #34732) and for
concurrent first requests of a new user bypassing its budget (#40095).
"""
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import anthropic
import openai

from conftest import MOCK, URL, _get, admin_get, admin_post, all_records, usd_per_mtok

LIMIT = Decimal("0.004")
PRICES = {  # USD per Mtok: (input, output)
    "gpt-4o-mini": ("0.15", "0.60"),
    "claude-haiku-4-5": ("1", "5"),
}


def test_200_concurrent_sdk_requests_never_overspend():
    key = admin_post("/admin/keys", {"name": "swarm", "user": "swarm", "tenant": "bees"})["key"]
    admin_post("/admin/budgets", {"id": "swarm", "scope": "user", "subject": "bees/swarm",
                                  "limit_usd": str(LIMIT), "period": "daily"})
    # Default retries stay on: a refusal says x-should-retry: false, so the
    # SDKs must not retry it.
    oai = openai.OpenAI(base_url=f"{URL}/v1", api_key=key)
    ant = anthropic.Anthropic(base_url=URL, api_key=key)
    slow = {"x-mock-chunk-delay-ms": "3"}
    msgs = [{"role": "user", "content": "go"}]

    def one(i):
        try:
            kind = i % 4
            if kind == 0:
                oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=50, extra_headers=slow)
            elif kind == 1:
                for _ in oai.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=50,
                                                     stream=True, extra_headers=slow):
                    pass
            elif kind == 2:
                ant.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=msgs, extra_headers=slow)
            else:
                with ant.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=msgs,
                                         extra_headers=slow) as s:
                    for _ in s.text_stream:
                        pass
            return "ok"
        except openai.RateLimitError as e:
            assert e.code == "budget_exceeded", e.body
            return "refused"
        except anthropic.RateLimitError as e:
            assert e.body["error"]["type"] == "budget_exceeded", e.body
            return "refused"

    with ThreadPoolExecutor(max_workers=200) as ex:
        results = list(ex.map(one, range(200)))
    ok, refused = results.count("ok"), results.count("refused")
    assert ok + refused == 200
    assert ok > 0 and refused > 0, (ok, refused)

    records = [r for r in all_records() if r["user"] == "bees/swarm"]
    charged = [r for r in records if "blocked" not in r["flags"]]
    blocked = [r for r in records if "blocked" in r["flags"]]
    assert len(charged) == ok
    assert len(blocked) == refused, "the SDKs did not retry refusals"
    committed = sum(Decimal(r["cost_usd"]) for r in charged)
    assert committed <= LIMIT, committed

    ids = {r["request_id"] for r in charged}
    billed = Decimal(0)
    for b in _get(f"{MOCK}/mock/billing")["requests"]:
        if b["request_id"] in ids:
            pin, pout = PRICES[b["model"]]
            billed += b["usage"]["input_tokens"] * usd_per_mtok(pin) + b["usage"]["output_tokens"] * usd_per_mtok(pout)
    assert billed <= LIMIT, billed
    assert billed == committed, (billed, committed)

    budget = next(b for b in admin_get("/admin/budgets")["budgets"] if b["id"] == "swarm")
    assert Decimal(budget["used_usd"]) == committed, budget
    assert Decimal(budget["reserved_usd"]) == 0, budget
