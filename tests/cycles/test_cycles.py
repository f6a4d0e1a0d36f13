"""The Cycles runtime API through the official `runcycles` client."""
import time
import uuid

import pytest
import runcycles
from conftest import admin, check

USD = "USD_MICROCENTS"
CENT = 1_000_000  # microcents in a cent


def key():
    return f"k-{uuid.uuid4()}"


def budget(scope, subject, **limits):
    body = {"scope": scope, "subject": subject, "period": "lifetime", **limits}
    return admin("POST", "/admin/budgets", body)["id"]


def reserve(c, agent, amount, unit=USD, **extra):
    body = {
        "idempotency_key": key(),
        "subject": {"tenant": "acme", "agent": agent},
        "action": {"kind": "tool.search", "name": "web.search"},
        "estimate": {"unit": unit, "amount": amount},
        **extra,
    }
    return c.create_reservation(body), body


def balance_of(c, scope, agent):
    r = c.get_balances(tenant="acme", agent=agent)
    assert r.status == 200, r.body
    check("BalanceResponse", r.body)
    return next(b for b in r.body["balances"] if b["scope"] == scope)


def test_reserve_then_commit_charges_every_scope_and_releases_the_rest(cycles):
    budget("agent", "tenant:acme/agent:bot1", limit_usd="0.10")
    before = balance_of(cycles, "tenant:acme", "bot1")
    r, _ = reserve(cycles, "bot1", 3 * CENT, ttl_ms=30_000)
    assert r.status == 200, r.body
    check("ReservationCreateResponse", r.body)
    assert r.body["decision"] == "ALLOW"
    assert r.body["affected_scopes"] == ["tenant:acme", "tenant:acme/agent:bot1"]
    assert r.body["scope_path"] == "tenant:acme/agent:bot1"
    assert 0 < r.body["remaining_ttl_ms"] <= 30_000
    held = balance_of(cycles, "tenant:acme/agent:bot1", "bot1")
    assert held["reserved"]["amount"] == 3 * CENT
    assert held["remaining"]["amount"] == 7 * CENT
    rid = r.body["reservation_id"]
    c = cycles.commit_reservation(rid, {"idempotency_key": key(), "actual": {"unit": USD, "amount": 2 * CENT},
                                        "metrics": {"tokens_input": 10, "latency_ms": 5}})
    assert c.status == 200, c.body
    check("CommitResponse", c.body)
    assert c.body["charged"] == {"unit": USD, "amount": 2 * CENT}
    assert c.body["released"] == {"unit": USD, "amount": 1 * CENT}
    after = balance_of(cycles, "tenant:acme/agent:bot1", "bot1")
    assert after["spent"]["amount"] == 2 * CENT and after["reserved"]["amount"] == 0
    assert after["remaining"]["amount"] == after["allocated"]["amount"] - 2 * CENT
    tenant = balance_of(cycles, "tenant:acme", "bot1")
    assert tenant["spent"]["amount"] == before["spent"]["amount"] + 2 * CENT
    got = cycles.get_reservation(rid)
    assert got.status == 200, got.body
    check("ReservationDetail", got.body)
    assert got.body["status"] == "COMMITTED" and got.body["committed"]["amount"] == 2 * CENT
    again = cycles.commit_reservation(rid, {"idempotency_key": key(), "actual": {"unit": USD, "amount": 1}})
    assert again.status == 409 and again.body["error"] == "RESERVATION_FINALIZED", again.body
    check("ErrorResponse", again.body)


def test_release_gives_the_hold_back(cycles):
    budget("agent", "tenant:acme/agent:bot2", limit_usd="0.05")
    r, _ = reserve(cycles, "bot2", 5 * CENT)
    assert r.status == 200, r.body
    full, _ = reserve(cycles, "bot2", 1)
    assert full.status == 409 and full.body["error"] == "BUDGET_EXCEEDED", full.body
    check("ErrorResponse", full.body)
    rel = cycles.release_reservation(r.body["reservation_id"], {"idempotency_key": key(), "reason": "not needed"})
    assert rel.status == 200, rel.body
    check("ReleaseResponse", rel.body)
    assert rel.body["released"]["amount"] == 5 * CENT
    again, _ = reserve(cycles, "bot2", 5 * CENT)
    assert again.status == 200, again.body


def test_extend_moves_the_deadline_until_the_limit(cycles):
    budget("agent", "tenant:acme/agent:bot3", limit_usd="0.05")
    r, _ = reserve(cycles, "bot3", CENT, ttl_ms=5_000)
    rid, exp = r.body["reservation_id"], r.body["expires_at_ms"]
    for i in range(10):
        e = cycles.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 1_000})
        assert e.status == 200, e.body
        check("ReservationExtendResponse", e.body)
        assert e.body["expires_at_ms"] == exp + 1_000 * (i + 1)
    e = cycles.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 1_000})
    assert e.status == 409 and e.body["error"] == "MAX_EXTENSIONS_EXCEEDED", e.body
    assert cycles.get_reservation(rid).body["expires_at_ms"] == exp + 10_000


def test_idempotent_replay_returns_the_same_answer_and_a_different_request_is_refused(cycles):
    budget("agent", "tenant:acme/agent:bot4", limit_usd="0.05")
    r, body = reserve(cycles, "bot4", CENT)
    replay = cycles.create_reservation(body)
    assert replay.status == 200
    assert replay.body["reservation_id"] == r.body["reservation_id"]
    assert replay.body["expires_at_ms"] == r.body["expires_at_ms"]
    assert replay.body["remaining_ttl_ms"] <= r.body["remaining_ttl_ms"]
    held = balance_of(cycles, "tenant:acme/agent:bot4", "bot4")
    assert held["reserved"]["amount"] == CENT, "held once"
    changed = dict(body, estimate={"unit": USD, "amount": 2 * CENT})
    mismatch = cycles.create_reservation(changed)
    assert mismatch.status == 409 and mismatch.body["error"] == "IDEMPOTENCY_MISMATCH", mismatch.body
    rid = r.body["reservation_id"]
    commit = {"idempotency_key": key(), "actual": {"unit": USD, "amount": CENT}}
    first = cycles.commit_reservation(rid, commit)
    second = cycles.commit_reservation(rid, commit)
    assert first.status == second.status == 200
    assert first.body == second.body
    spent = balance_of(cycles, "tenant:acme/agent:bot4", "bot4")["spent"]["amount"]
    assert spent == CENT, "charged once"


def test_dry_run_and_decide_evaluate_without_holding(cycles):
    budget("agent", "tenant:acme/agent:bot5", limit_usd="0.02")
    dry, _ = reserve(cycles, "bot5", CENT, dry_run=True)
    assert dry.status == 200, dry.body
    check("ReservationCreateResponse", dry.body)
    assert dry.body["decision"] == "ALLOW" and "reservation_id" not in dry.body and "expires_at_ms" not in dry.body
    deny, _ = reserve(cycles, "bot5", 3 * CENT, dry_run=True)
    assert deny.body["decision"] == "DENY" and deny.body["reason_code"] == "BUDGET_EXCEEDED", deny.body
    check("ReservationCreateResponse", deny.body)
    assert balance_of(cycles, "tenant:acme/agent:bot5", "bot5")["reserved"]["amount"] == 0
    for amount, decision in [(CENT, "ALLOW"), (3 * CENT, "DENY")]:
        d = cycles.decide({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot5"},
                           "action": {"kind": "tool.search", "name": "web"},
                           "estimate": {"unit": USD, "amount": amount}})
        assert d.status == 200, d.body
        check("DecisionResponse", d.body)
        assert d.body["decision"] == decision


def test_expired_reservations_are_410_after_their_grace(cycles):
    budget("agent", "tenant:acme/agent:bot6", limit_usd="0.02")
    r, _ = reserve(cycles, "bot6", 2 * CENT, ttl_ms=1_000, grace_period_ms=0)
    rid = r.body["reservation_id"]
    time.sleep(1.6)
    c = cycles.commit_reservation(rid, {"idempotency_key": key(), "actual": {"unit": USD, "amount": 1}})
    assert c.status == 410 and c.body["error"] == "RESERVATION_EXPIRED", c.body
    check("ErrorResponse", c.body)
    g = cycles.get_reservation(rid)
    assert g.status == 410, g.body
    listed = cycles.list_reservations(agent="bot6", status="EXPIRED")
    assert listed.status == 200, listed.body
    check("ReservationListResponse", listed.body)
    assert [x["reservation_id"] for x in listed.body["reservations"]] == [rid]
    # Its hold is gone: the whole budget can be reserved again.
    again, _ = reserve(cycles, "bot6", 2 * CENT)
    assert again.status == 200, again.body


def test_another_tenant_can_neither_act_for_acme_nor_touch_its_reservations(cycles, other):
    budget("agent", "tenant:acme/agent:bot7", limit_usd="0.02")
    r, body = reserve(cycles, "bot7", CENT)
    rid = r.body["reservation_id"]
    for resp in [
        other.commit_reservation(rid, {"idempotency_key": key(), "actual": {"unit": USD, "amount": 1}}),
        other.release_reservation(rid, {"idempotency_key": key()}),
        other.get_reservation(rid),
        other.create_reservation(dict(body, idempotency_key=key())),
        other.get_balances(tenant="acme"),
    ]:
        assert resp.status == 403 and resp.body["error"] == "FORBIDDEN", resp.body
        check("ErrorResponse", resp.body)
    assert cycles.get_reservation(rid).body["status"] == "ACTIVE"


def test_units_and_missing_budgets_are_answered_per_the_protocol(cycles, other):
    budget("agent", "tenant:acme/agent:bot8", limit_usd="0.02")
    tokens, _ = reserve(cycles, "bot8", 10, unit="TOKENS")
    assert tokens.status == 400 and tokens.body["error"] == "UNIT_MISMATCH", tokens.body
    assert tokens.body["details"]["requested_unit"] == "TOKENS"
    assert "USD_MICROCENTS" in tokens.body["details"]["expected_units"]
    credits, _ = reserve(cycles, "bot8", 10, unit="CREDITS")
    assert credits.status == 400 and credits.body["error"] == "UNIT_MISMATCH", credits.body
    none = other.create_reservation({"idempotency_key": key(), "subject": {"tenant": "globex", "agent": "x"},
                                     "action": {"kind": "tool.search", "name": "web"},
                                     "estimate": {"unit": USD, "amount": 1}})
    assert none.status == 404 and none.body["error"] == "NOT_FOUND", none.body
    check("ErrorResponse", none.body)
    bad = cycles.create_reservation({"idempotency_key": key(), "subject": {"tenant": "acme"},
                                     "action": {"kind": "tool.search", "name": "web"},
                                     "estimate": {"unit": USD, "amount": 1}, "surprise": True})
    assert bad.status == 400 and bad.body["error"] == "INVALID_REQUEST", bad.body
    check("ErrorResponse", bad.body)


def test_events_charge_every_scope_at_once(cycles):
    budget("agent", "tenant:acme/agent:bot9", limit_usd="0.02")
    e = cycles.create_event({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot9"},
                             "action": {"kind": "tool.code", "name": "sandbox"},
                             "actual": {"unit": USD, "amount": CENT}})
    assert e.status == 201, e.body
    check("EventCreateResponse", e.body)
    assert balance_of(cycles, "tenant:acme/agent:bot9", "bot9")["spent"]["amount"] == CENT
    # Beyond what is left, the default policy charges what is available.
    e = cycles.create_event({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot9"},
                             "action": {"kind": "tool.code", "name": "sandbox"},
                             "actual": {"unit": USD, "amount": 5 * CENT}})
    assert e.status == 201, e.body
    assert e.body["charged"] == {"unit": USD, "amount": CENT}
    rejected = cycles.create_event({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot9"},
                                    "action": {"kind": "tool.code", "name": "sandbox"},
                                    "actual": {"unit": USD, "amount": 1}, "overage_policy": "REJECT"})
    assert rejected.status == 409 and rejected.body["error"] == "BUDGET_EXCEEDED", rejected.body


def test_the_decorator_guards_a_tool_call(cycles):
    budget("agent", "tenant:acme/agent:bot10", limit_usd="0.03")
    runcycles.set_default_client(cycles)

    @runcycles.cycles(estimate=2 * CENT, actual=CENT, action_kind="tool.search", action_name="web.search",
                      agent="bot10")
    def search(q):
        return f"results for {q}"

    assert search("tollgate") == "results for tollgate"
    b = balance_of(cycles, "tenant:acme/agent:bot10", "bot10")
    assert b["spent"]["amount"] == CENT and b["reserved"]["amount"] == 0
    search("again")
    with pytest.raises(runcycles.BudgetExceededError):
        search("one too many")


def test_overdraft_lets_a_commit_run_into_debt_and_debt_blocks_new_reservations(cycles):
    bid = budget("agent", "tenant:acme/agent:bot11", limit_usd="0.01", overdraft_usd="0.02")
    r, _ = reserve(cycles, "bot11", CENT, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert r.status == 200, r.body
    c = cycles.commit_reservation(r.body["reservation_id"],
                                  {"idempotency_key": key(), "actual": {"unit": USD, "amount": 25 * CENT // 10}})
    assert c.status == 200, c.body
    assert c.body["charged"]["amount"] == 25 * CENT // 10
    b = balance_of(cycles, "tenant:acme/agent:bot11", "bot11")
    assert b["debt"]["amount"] == 15 * CENT // 10 and b["overdraft_limit"]["amount"] == 2 * CENT, b
    assert b["is_over_limit"] is False
    assert b["remaining"]["amount"] == (b["allocated"]["amount"] - b["spent"]["amount"]
                                        - b["reserved"]["amount"] - b["debt"]["amount"]) < 0
    full, _ = reserve(cycles, "bot11", 1)
    assert full.status == 409 and full.body["error"] == "BUDGET_EXCEEDED", full.body

    def event(amount):
        return cycles.create_event({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot11"},
                                    "action": {"kind": "tool.code", "name": "sandbox"},
                                    "actual": {"unit": USD, "amount": amount},
                                    "overage_policy": "ALLOW_WITH_OVERDRAFT"})

    past = event(CENT)
    assert past.status == 409 and past.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED", past.body
    within = event(4 * CENT // 10)
    assert within.status == 201, within.body
    # The overdraft lowered below the debt: the scope is over its limit.
    admin("PATCH", f"/admin/budgets/{bid}", {"overdraft_usd": "0.01"})
    b = balance_of(cycles, "tenant:acme/agent:bot11", "bot11")
    assert b["is_over_limit"] is True and b["debt"]["amount"] == 19 * CENT // 10, b
    over, _ = reserve(cycles, "bot11", 1)
    assert over.status == 409 and over.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED", over.body
    d = cycles.decide({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot11"},
                       "action": {"kind": "tool.search", "name": "web"}, "estimate": {"unit": USD, "amount": 1}})
    assert d.body["decision"] == "DENY" and d.body["reason_code"] == "OVERDRAFT_LIMIT_EXCEEDED", d.body
    # No overdraft at all: debt outstanding.
    admin("PATCH", f"/admin/budgets/{bid}", {"overdraft_usd": None})
    debt, _ = reserve(cycles, "bot11", 1)
    assert debt.status == 409 and debt.body["error"] == "DEBT_OUTSTANDING", debt.body


def test_a_tools_configured_cost_is_its_estimate_when_the_client_asks_for_zero(cycles):
    budget("agent", "tenant:acme/agent:bot12", limit_usd="0.01")
    r, _ = reserve(cycles, "bot12", 0)
    assert r.status == 200, r.body
    assert r.body["reserved"] == {"unit": USD, "amount": 300_000}, "cycles.tool_costs web.search = $0.003"
    held = balance_of(cycles, "tenant:acme/agent:bot12", "bot12")
    assert held["reserved"]["amount"] == 300_000
    d = cycles.decide({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot12"},
                       "action": {"kind": "tool.search", "name": "web.search"},
                       "estimate": {"unit": USD, "amount": 0}})
    assert d.body["decision"] == "ALLOW", d.body
    # Three held: a fourth does not fit the cent.
    reserve(cycles, "bot12", 0)
    reserve(cycles, "bot12", 0)
    fourth, _ = reserve(cycles, "bot12", 0)
    assert fourth.status == 409 and fourth.body["error"] == "BUDGET_EXCEEDED", fourth.body
    # Other tools, and explicit estimates, are as asked.
    other = cycles.create_reservation({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot12"},
                                       "action": {"kind": "tool.search", "name": "other"},
                                       "estimate": {"unit": USD, "amount": 0}})
    assert other.status == 200 and other.body["reserved"]["amount"] == 0, other.body


def test_a_session_summary_covers_model_calls_and_tool_reservations(cycles, other):
    import json
    import urllib.request
    from conftest import KEY, URL
    budget("agent", "tenant:acme/agent:bot13", limit_usd="0.10")
    sid = f"run-{uuid.uuid4().hex[:8]}"
    # A tool call of the session, committed; another still held.
    r, _ = reserve(cycles, "bot13", 2 * CENT)
    body = {"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot13", "dimensions": {"session": sid}},
            "action": {"kind": "tool.search", "name": "web.search"}, "estimate": {"unit": USD, "amount": 2 * CENT}}
    held = cycles.create_reservation(body)
    assert held.status == 200, held.body
    body2 = dict(body, idempotency_key=key())
    done = cycles.create_reservation(body2)
    c = cycles.commit_reservation(done.body["reservation_id"], {"idempotency_key": key(),
                                                                "actual": {"unit": USD, "amount": CENT}})
    assert c.status == 200, c.body
    # A model call of the same session, through the proxy.
    req = urllib.request.Request(f"{URL}/v1/chat/completions", method="POST", data=json.dumps(
        {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}).encode())
    req.add_header("Authorization", f"Bearer {KEY}")
    req.add_header("Content-Type", "application/json")
    req.add_header("X-Session-Id", sid)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    deadline = time.time() + 10
    while True:
        s = cycles._get(f"/v1/sessions/{sid}")
        if s.status == 200 and s.body["model_calls"] == 1 and s.body["tool_reservations"]["committed"] == 1:
            break
        assert time.time() < deadline, s.body
        time.sleep(0.05)
    assert s.body["tool_reservations"]["active"] == 1, s.body
    models = {m["provider"]: m for m in s.body["models"]}
    assert models["cycles"]["model"] == "web.search" and models["cycles"]["cost_usd"] == "0.010000"
    assert "openai" in models, s.body
    assert s.body["spent"]["microcents"] >= CENT
    # Another tenant's key, asking for the same id, reaches its own session.
    theirs = other._get(f"/v1/sessions/{sid}")
    assert theirs.status == 200 and theirs.body["model_calls"] == 0 and theirs.body["models"] == [], theirs.body


def test_an_operator_lists_reads_and_releases_with_an_admin_key(cycles):
    import json
    import urllib.error
    import urllib.request
    from conftest import ADMIN, URL
    budget("agent", "tenant:acme/agent:bot14", limit_usd="0.01")
    r, _ = reserve(cycles, "bot14", CENT)
    rid = r.body["reservation_id"]

    def call(method, path, body=None):
        req = urllib.request.Request(f"{URL}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("X-Admin-API-Key", ADMIN)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = call("GET", "/v1/reservations")
    assert status == 400 and body["message"] == "tenant query parameter is required when using admin key authentication"
    check("ErrorResponse", body)
    status, body = call("GET", "/v1/reservations?tenant=acme&agent=bot14")
    assert status == 200 and [x["reservation_id"] for x in body["reservations"]] == [rid], body
    check("ReservationListResponse", body)
    status, body = call("GET", f"/v1/reservations/{rid}")
    assert status == 200 and body["status"] == "ACTIVE", body
    status, body = call("POST", f"/v1/reservations/{rid}/release",
                        {"idempotency_key": key(), "reason": "[INCIDENT_FORCE_RELEASE]"})
    assert status == 200 and body["status"] == "RELEASED", body
    check("ReleaseResponse", body)
    # An admin key does not reserve: that is the tenant's own key's to do.
    status, body = call("POST", "/v1/reservations", {"idempotency_key": key(), "subject": {"tenant": "acme"},
                                                     "action": {"kind": "tool.x", "name": "x"},
                                                     "estimate": {"unit": USD, "amount": 1}})
    assert status == 401 and body["error"] == "UNAUTHORIZED", body


def test_funding_operations_move_the_allocation_and_repay_debt(cycles):
    bid = budget("agent", "tenant:acme/agent:bot15", limit_usd="0.01", overdraft_usd="0.05")

    def fund(operation, amount, **extra):
        return admin("POST", f"/admin/budgets/{bid}/fund",
                     {"operation": operation, "amount": {"unit": USD, "amount": amount}, **extra})

    def bal():
        return balance_of(cycles, "tenant:acme/agent:bot15", "bot15")

    f = fund("CREDIT", 2 * CENT)
    assert f["previous_allocated"]["amount"] == CENT and f["new_allocated"]["amount"] == 3 * CENT, f
    assert bal()["allocated"]["amount"] == 3 * CENT
    f = fund("DEBIT", CENT)
    assert f["new_allocated"]["amount"] == 2 * CENT and f["new_remaining"]["amount"] == 2 * CENT, f
    # Run into debt: 2c allocated, 3c charged.
    r, _ = reserve(cycles, "bot15", CENT, overage_policy="ALLOW_WITH_OVERDRAFT")
    c = cycles.commit_reservation(r.body["reservation_id"],
                                  {"idempotency_key": key(), "actual": {"unit": USD, "amount": 3 * CENT}})
    assert c.status == 200, c.body
    assert bal()["debt"]["amount"] == CENT
    f = fund("REPAY_DEBT", 5 * CENT)
    assert f["previous_debt"]["amount"] == CENT and f["new_debt"]["amount"] == 0, f
    assert f["new_remaining"]["amount"] == 0, "repaid only what was owed"
    assert bal()["debt"]["amount"] == 0
    f = fund("RESET", 10 * CENT)
    assert f["new_allocated"]["amount"] == 10 * CENT and f["new_spent"]["amount"] == 3 * CENT, f
    f = fund("RESET_SPENT", 4 * CENT)
    assert f["new_spent"]["amount"] == 0 and f["new_remaining"]["amount"] == 4 * CENT, f
    b = bal()
    assert b["spent"]["amount"] == 0 and b["remaining"]["amount"] == 4 * CENT, b


def test_introspection_tells_each_credential_what_it_may_do():
    import json
    import urllib.error
    import urllib.request
    from conftest import ADMIN, KEY, URL

    def introspect(header, value):
        req = urllib.request.Request(f"{URL}/v1/auth/introspect")
        if header:
            req.add_header(header, value)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = introspect("X-Admin-API-Key", ADMIN)
    assert status == 200, body
    check("AuthIntrospectResponse", body)
    assert body["auth_type"] == "admin" and body["permissions"] == ["*"] and "tenant_id" not in body
    assert all(body["capabilities"].values()), body
    status, body = introspect("X-Cycles-API-Key", KEY)
    assert status == 200, body
    check("AuthIntrospectResponse", body)
    assert body["auth_type"] == "tenant" and body["tenant_id"] == "acme", body
    caps = body["capabilities"]
    assert caps["view_reservations"] and caps["manage_reservations"], caps
    assert not caps["view_tenants"] and not caps["view_api_keys"] and not caps["manage_budgets"], caps
    ops = admin("POST", "/admin/admin-keys", {"tenant": "acme", "name": f"ops-{uuid.uuid4().hex[:6]}"})
    status, body = introspect("X-Admin-API-Key", ops["key"])
    assert status == 200, body
    check("AuthIntrospectResponse", body)
    assert body["auth_type"] == "tenant" and body["tenant_id"] == "acme", body
    caps = body["capabilities"]
    assert caps["view_budgets"] and caps["manage_budgets"] and caps["view_reservations"], caps
    assert not caps["view_overview"] and not caps["manage_tenants"], caps
    for header, value in [(None, None), ("X-Cycles-API-Key", "tg-not-a-key"), ("X-Admin-API-Key", "wrong")]:
        status, body = introspect(header, value)
        assert status == 401 and body["error"] == "UNAUTHORIZED", body
        check("ErrorResponse", body)


def test_a_model_call_too_large_for_its_budget_is_allowed_with_a_max_tokens_cap(cycles):
    from decimal import Decimal
    price = admin("GET", "/admin/pricing/gpt-4o-mini")
    per_token = int(Decimal(price["output_per_mtok"]) * 100)  # USD/Mtok in microcents a token
    assert per_token > 0, price
    budget("agent", "tenant:acme/agent:bot20", limit_usd="0.001")  # 100,000 microcents
    room = 100_000
    want = room // per_token
    llm = {"kind": "llm.completion", "name": "gpt-4o-mini"}

    def ask(amount, dry=None, action=llm):
        body = {"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot20"},
                "action": action, "estimate": {"unit": USD, "amount": amount}}
        if dry is not None:
            body["dry_run"] = dry
        return cycles.create_reservation(body)

    d = cycles.decide({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot20"},
                       "action": llm, "estimate": {"unit": USD, "amount": CENT}})
    assert d.status == 200, d.body
    check("DecisionResponse", d.body)
    assert d.body["decision"] == "ALLOW_WITH_CAPS" and d.body["caps"] == {"max_tokens": want}, d.body
    dry = ask(CENT, dry=True)
    check("ReservationCreateResponse", dry.body)
    assert dry.body["decision"] == "ALLOW_WITH_CAPS" and dry.body["caps"]["max_tokens"] == want, dry.body
    assert dry.body["reserved"]["amount"] == want * per_token, dry.body
    r = ask(CENT)
    assert r.status == 200, r.body
    check("ReservationCreateResponse", r.body)
    assert r.body["decision"] == "ALLOW_WITH_CAPS" and r.body["caps"] == {"max_tokens": want}, r.body
    assert r.body["reserved"] == {"unit": USD, "amount": want * per_token}, r.body
    held = balance_of(cycles, "tenant:acme/agent:bot20", "bot20")
    assert held["reserved"]["amount"] == want * per_token, held
    # What is left is less than the smallest call: refused, not capped to nothing.
    small = ask(CENT)
    assert small.status == 409 and small.body["error"] == "BUDGET_EXCEEDED", small.body
    # A tool is not a model call: never capped.
    cycles.release_reservation(r.body["reservation_id"], {"idempotency_key": key()})
    tool = ask(CENT, action={"kind": "tool.search", "name": "web"})
    assert tool.status == 409 and tool.body["error"] == "BUDGET_EXCEEDED", tool.body
    # Within the room, a model call is allowed whole, with no caps.
    whole = ask(room // 2)
    assert whole.body["decision"] == "ALLOW" and "caps" not in whole.body, whole.body
    # In tokens, the cap is the tokens left.
    budget("agent", "tenant:acme/agent:bot21", limit_tokens=500)
    t = cycles.create_reservation({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot21"},
                                   "action": llm, "estimate": {"unit": "TOKENS", "amount": 2_000}})
    assert t.status == 200, t.body
    check("ReservationCreateResponse", t.body)
    assert t.body["caps"] == {"max_tokens": 500} and t.body["reserved"] == {"unit": "TOKENS", "amount": 500}, t.body


def test_a_capped_commit_marks_the_budget_over_its_limit_until_it_is_funded(cycles):
    bid = budget("agent", "tenant:acme/agent:bot22", limit_usd="0.02")
    r, _ = reserve(cycles, "bot22", CENT)
    # ALLOW_IF_AVAILABLE (the default): 3 cents happened, 2 could be charged.
    c = cycles.commit_reservation(r.body["reservation_id"],
                                  {"idempotency_key": key(), "actual": {"unit": USD, "amount": 3 * CENT}})
    assert c.status == 200 and c.body["charged"]["amount"] == 2 * CENT, c.body
    b = balance_of(cycles, "tenant:acme/agent:bot22", "bot22")
    assert b["is_over_limit"] is True and b["debt"]["amount"] == 0, b
    blocked, _ = reserve(cycles, "bot22", 1)
    assert blocked.status == 409 and blocked.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED", blocked.body
    check("ErrorResponse", blocked.body)
    d = cycles.decide({"idempotency_key": key(), "subject": {"tenant": "acme", "agent": "bot22"},
                       "action": {"kind": "tool.search", "name": "web"}, "estimate": {"unit": USD, "amount": 1}})
    assert d.body["decision"] == "DENY" and d.body["reason_code"] == "OVERDRAFT_LIMIT_EXCEEDED", d.body
    # Funding reconciles it.
    admin("POST", f"/admin/budgets/{bid}/fund", {"operation": "CREDIT", "amount": {"unit": USD, "amount": CENT}})
    b = balance_of(cycles, "tenant:acme/agent:bot22", "bot22")
    assert b["is_over_limit"] is False and b["remaining"]["amount"] == CENT, b
    ok_now, _ = reserve(cycles, "bot22", CENT)
    assert ok_now.status == 200 and ok_now.body["decision"] == "ALLOW", ok_now.body
