"""A stub judge with a spread of scores and some flags, so stub runs have varied grades to report.

The plain `StubServer` answers from each schema too, so its citations are valid sentence ids (the
schema enumerates them), but it never says "not applicable" and never raises a flag.

    with StubServer(fault=graded) as url: ...
"""

from __future__ import annotations

import hashlib
import json
import random

from stub_server import completion, instance


def _fill(value, schema: dict, rng: random.Random):
    """Give every score a spread of 1-5 and null; now and then raise a flag."""
    if isinstance(value, dict):
        if "score" in value:
            value["score"] = rng.choice([1, 2, 3, 3, 4, 4, 5, 5, None])
        if value.get("flags") == [] and rng.random() < 0.25:
            item = schema["properties"]["flags"]["items"]
            value["flags"] = [instance(item, rng, schema.get("$defs", {}))]
    for v in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _fill(v, schema, rng)
    return value


def graded(n: int, body: dict):
    """A `StubServer` fault hook: schema-valid answers with varied grades; None leaves dialogue to the stub."""
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
    if not schema:
        return None
    rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())
    return 200, {}, completion(body, json.dumps(_fill(instance(schema, rng), schema, rng)))
