"""A do-nothing admission webhook (Flask on gunicorn gthread): the yardstick of bench/side_by_side.py.

It parses the AdmissionReview and allows it, nothing else: what any Flask+gunicorn webhook costs at least.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

app = Flask("noop-webhook")


@app.post("/mutate")
@app.post("/validate")
def allow() -> Response:
    uid = json.loads(request.get_data())["request"]["uid"]
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, "allowed": True}}
    return Response(json.dumps(body), mimetype="application/json")


@app.get("/readyz")
def ready() -> Response:
    return Response('{"status":"ready"}', mimetype="application/json")
