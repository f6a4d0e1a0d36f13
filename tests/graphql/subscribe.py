"""A graphql-transport-ws client: subscribes, says READY, prints each event.

Usage: subscribe.py URL ADMIN_KEY COUNT QUERY...
Each QUERY is a subscription document; prints COUNT `next` payloads (one
JSON line each, with the subscription's index) and exits.
"""
import json
import sys

from websockets.sync.client import connect

url, key, count, queries = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
    # Browsers cannot set headers on a WebSocket: the key rides in connection_init.
    ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    ack = json.loads(ws.recv(timeout=10))
    assert ack["type"] == "connection_ack", ack
    for i, q in enumerate(queries):
        ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {"query": q}}))
    print("READY", flush=True)
    seen = 0
    while seen < count:
        msg = json.loads(ws.recv(timeout=30))
        if msg["type"] == "ping":
            ws.send(json.dumps({"type": "pong"}))
            continue
        assert msg["type"] == "next", msg
        print(json.dumps({"id": msg["id"], "data": msg["payload"]["data"]}), flush=True)
        seen += 1
