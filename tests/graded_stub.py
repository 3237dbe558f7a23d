"""A stub judge whose grades pass the evidence check, so stub runs have scores and flags to report.

The plain `StubServer` quotes 'ok', which the evaluator rightly rejects; every stub line of
dialogue contains "sounds lovely", so quoting that is evidence from any turn.

    with StubServer(fault=graded) as url: ...
"""

from __future__ import annotations

import hashlib
import json
import random

from stub_server import completion, instance

QUOTE = "sounds lovely"


def _fill(value, schema: dict, rng: random.Random):
    """Give every quote real words and every score a spread of 1-5; now and then raise a flag."""
    if isinstance(value, dict):
        if "quote" in value:
            value["quote"] = QUOTE
        if "score" in value:
            value["score"] = rng.choice([1, 2, 3, 3, 4, 4, 5, 5, None])
        if value.get("flags") == [] and rng.random() < 0.25:
            item = schema["properties"]["flags"]["items"]
            value["flags"] = [instance(item, rng, schema.get("$defs", {}))]
    for v in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _fill(v, schema, rng)
    return value


def graded(n: int, body: dict):
    """A `StubServer` fault hook: schema-valid answers with usable evidence; None leaves dialogue to the stub."""
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
    if not schema:
        return None
    rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())
    return 200, {}, completion(body, json.dumps(_fill(instance(schema, rng), schema, rng)))
