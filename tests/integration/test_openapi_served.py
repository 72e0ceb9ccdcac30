"""A running tracker describes its JSON APIs at /v1/openapi.json: the document in docs/openapi/."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from shoal.openapi_docs import DIRECTORY

ROOT = Path(__file__).resolve().parents[2]


def test_the_tracker_serves_its_document(tracker):
    t = tracker()
    with urllib.request.urlopen(f"{t.url}/v1/openapi.json") as reply:
        assert reply.headers.get_content_type() == "application/json"
        served = json.load(reply)
    assert served == json.loads((ROOT / DIRECTORY / "tracker.json").read_text())
    assert {"/v1/tasks/{task_id}/announce", "/v1/pools/{pool}/jobs"} <= set(served["paths"])
