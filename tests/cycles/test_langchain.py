"""A LangChain agent from PyPI end to end: its model calls go through
Tollgate's proxy to the mock provider, its tool calls are gated by
`langchain-runcycles`' CyclesToolGate against Tollgate's Cycles API — one
ledger for both. Every Cycles answer the middleware receives is checked
against the protocol's schemas.
"""
import time
import uuid

import pytest
from conftest import KEY, URL, admin, check, client
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langchain_runcycles import CyclesToolGate
from runcycles import Action, Amount, Subject, Unit

CENT = 1_000_000  # microcents in a cent

SCHEMAS = {
    "/v1/reservations": "ReservationCreateResponse",
    "/commit": "CommitResponse",
    "/release": "ReleaseResponse",
    "/v1/decide": "DecisionResponse",
    "/v1/balances": "BalanceResponse",
}


@pytest.fixture
def gated():
    """A Cycles client whose every answer is validated as it arrives."""
    seen = []

    def validate(resp):
        resp.read()
        path = resp.request.url.path
        if path.startswith("/v1/sessions/") or resp.request.method == "GET":
            return  # Tollgate's own summary, and the test's reads (checked there)
        if resp.status_code >= 400:
            schema = "ErrorResponse"
        else:
            schema = next((s for suffix, s in SCHEMAS.items() if path.endswith(suffix)), None)
            assert schema, f"unexpected Cycles call {resp.request.method} {path}"
        check(schema, resp.json())
        seen.append((path, resp.status_code))

    with client() as c:
        c._http.event_hooks["response"].append(validate)
        yield c, seen


def agent_for(cycles, agent, searches, session, estimate=2 * CENT):
    @tool
    def web_search(query: str) -> str:
        """Searches the web."""
        searches.append(query)
        return f"results for {query}"

    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=f"{URL}/v1",
        api_key=KEY,
        max_tokens=30,
        max_retries=0,
        # The mock calls the tool first, then answers once it has the result.
        default_headers={
            "X-Session-Id": session,
            "x-mock-tool-call": "web_search",
            "x-mock-tool-arguments": '{"query": "tollgate"}',
        },
    )
    gate = CyclesToolGate(
        cycles,
        subject=Subject(tenant="acme", agent=agent, dimensions={"session": session}),
        action=Action(kind="tool.search", name="web.search"),
        mode="decide+reserve",
        estimate=Amount(unit=Unit.USD_MICROCENTS, amount=estimate),
    )
    return create_agent(model, tools=[web_search], middleware=[gate])


def session_summary(cycles, sid, model_calls, committed):
    deadline = time.time() + 10
    while True:
        s = cycles._get(f"/v1/sessions/{sid}")
        assert s.status == 200, s.body
        if s.body["model_calls"] == model_calls and s.body["tool_reservations"]["committed"] == committed:
            return s.body
        assert time.time() < deadline, s.body
        time.sleep(0.05)


def tenant_spent(cycles, agent):
    r = cycles.get_balances(tenant="acme", agent=agent)
    assert r.status == 200, r.body
    check("BalanceResponse", r.body)
    return {b["scope"]: b["spent"]["amount"] for b in r.body["balances"]}


def test_a_langchain_agent_pays_for_its_model_calls_and_tools_from_one_budget(gated):
    cycles, seen = gated
    agent = f"lc-{uuid.uuid4().hex[:6]}"
    admin("POST", "/admin/budgets", {"scope": "agent", "subject": f"tenant:acme/agent:{agent}",
                                     "limit_usd": "0.10", "period": "lifetime"})
    before = tenant_spent(cycles, agent)["tenant:acme"]
    sid = f"lc-run-{uuid.uuid4().hex[:8]}"
    searches = []
    out = agent_for(cycles, agent, searches, sid).invoke({"messages": [{"role": "user", "content": "find tollgate"}]})
    messages = out["messages"]
    assert searches == ["tollgate"], messages
    tool_msgs = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_msgs] == ["results for tollgate"], messages
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls and final.content.strip(), messages
    # The middleware decided, reserved and committed through Tollgate.
    paths = [p for p, _ in seen]
    assert paths[0] == "/v1/decide" and paths[1] == "/v1/reservations", seen
    assert paths[2].endswith("/commit") and all(s == 200 for _, s in seen), seen
    listed = cycles.list_reservations(tenant="acme", agent=agent)
    assert listed.status == 200, listed.body
    check("ReservationListResponse", listed.body)
    [r] = listed.body["reservations"]
    assert r["status"] == "COMMITTED" and r["committed"]["amount"] == 2 * CENT, r
    # Two model calls (the tool call, the answer) and one tool, one session.
    s = session_summary(cycles, sid, model_calls=2, committed=1)
    models = {m["provider"]: m for m in s["models"]}
    assert models["cycles"]["model"] == "web.search", s
    assert models["openai"]["model"] == "gpt-4o-mini" and models["openai"]["requests"] == 2, s
    spent = tenant_spent(cycles, agent)
    assert spent[f"tenant:acme/agent:{agent}"] == 2 * CENT, spent
    # The tenant budget carries both: the tool's 2 cents and the model calls
    # (each side rounded up to a whole microcent once).
    assert abs(spent["tenant:acme"] - (before + s["spent"]["microcents"])) <= 1, (spent, s)
    assert s["spent"]["microcents"] > 2 * CENT, s


def test_a_tool_the_agents_budget_cannot_cover_is_refused_and_never_runs(gated):
    cycles, seen = gated
    agent = f"lc-{uuid.uuid4().hex[:6]}"
    admin("POST", "/admin/budgets", {"scope": "agent", "subject": f"tenant:acme/agent:{agent}",
                                     "limit_usd": "0.01", "period": "lifetime"})
    sid = f"lc-run-{uuid.uuid4().hex[:8]}"
    searches = []
    out = agent_for(cycles, agent, searches, sid, estimate=2 * CENT).invoke(
        {"messages": [{"role": "user", "content": "find tollgate"}]})
    messages = out["messages"]
    assert searches == [], "the tool ran past its budget"
    [denied] = [m for m in messages if isinstance(m, ToolMessage)]
    assert "BUDGET_EXCEEDED" in denied.content, denied.content
    # The model got the denial as the tool's answer and finished in text.
    assert isinstance(messages[-1], AIMessage) and messages[-1].content.strip(), messages
    assert seen == [("/v1/decide", 200)], seen
    s = session_summary(cycles, sid, model_calls=2, committed=0)
    assert s["tool_reservations"]["active"] == 0, s
    assert tenant_spent(cycles, agent)[f"tenant:acme/agent:{agent}"] == 0
