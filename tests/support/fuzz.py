"""A seeded, grammar-based generator of hostile MQTT messages for the gateway fuzz.

`hostile_messages(seed, n, ...)` returns n `FuzzMessage`s (topic, payload, category), the same
list for the same arguments. Categories (weights in `CATEGORIES`) cover what a broken or malicious
device can send: huge strings, deeply nested JSON, wrong types, NaN/Infinity literals, giant
numbers, invalid UTF-8, unusual unicode, duplicate keys, truncated JSON, batch envelope abuse,
unit expressions that would make pint evaluate forever, oversized payloads, odd topics (some not
even matching the gateway's subscription, so the broker never delivers them), exact repeats of
earlier messages (duplicates) and valid readings mixed in.

Used by tests/e2e/test_gateway_fuzz.py; nothing in the product imports it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

#: category -> weight
CATEGORIES: dict[str, int] = {
    "valid": 16, "valid_batch": 4, "repeat": 5, "wrong_types": 10, "non_finite": 6,
    "giant_numbers": 6, "huge_strings": 2, "deep_nesting": 4, "invalid_utf8": 5, "unicode": 6,
    "duplicate_keys": 5, "truncated": 6, "garbage": 4, "envelope": 5, "hostile_units": 5,
    "oversized": 1, "odd_topic": 5, "semantic": 5,
}


@dataclass(frozen=True, slots=True)
class FuzzMessage:
    topic: str
    payload: bytes
    category: str
    delivered: bool  # the topic matches parkmon/<park>/+/readings (the gateway's subscription)


@dataclass(frozen=True, slots=True)
class FuzzPark:
    park_id: str
    enterprise: str  # the one the meters below belong to
    other_enterprise: str
    rate_meter: str  # rate, MW, range [0, 1500]
    counter_meter: str  # counter, MWh, range [0, 1e8]
    foreign_meter: str  # a meter of other_enterprise


_NEST_DEPTHS = (10, 100, 500, 990, 1_000, 1_100, 5_000, 50_000, 200_000)
_HOSTILE_UNITS = ("9**9**9**9", "99**99**99", "(((9**99)**99)**99)**99", "MW**100**100",
                  "2**64**64 MW", "1e308**1e308", "MW/0", "nan*MW", "inf MW", "MW**-1e308",
                  "__import__('os')", "MW; DROP TABLE", "${jndi:ldap://x}", "MW\u0000", "MW\n",
                  "megablorps", "", " ", "MW" * 16, "kW" * 17)
_WEIRD_TEXT = ("\ud800", "\udfff", "\u0000", "\u202e", "e\u0301" * 50, "\U0001f525" * 20,
               "\ufeff", "\uffff", "Ω" * 64, "a\u200bb", "\\", "\"", "\n\r\t", "%s%n%x")


class _Gen:
    def __init__(self, seed: int, park: FuzzPark, now_ms: int, max_payload: int) -> None:
        self.r = random.Random(seed)
        self.p = park
        self.now = now_ms
        self.max_payload = max_payload
        self.seq = 0
        self.counter_value = 1_000.0
        self.counter_ts = now_ms - 3_600_000
        self.sent: list[FuzzMessage] = []
        self.topic = f"parkmon/{park.park_id}/{park.enterprise}/readings"

    # -- building blocks ---------------------------------------------------------------------
    def ts(self) -> int:
        return self.now - self.r.randint(0, 120_000)  # well inside the accepted event-time window

    def valid_doc(self) -> dict[str, object]:
        r = self.r
        if r.random() < 0.6:
            self.seq += 1
            doc: dict[str, object] = {"meter": self.p.rate_meter, "ts_ms": self.ts(),
                                      "value": round(r.uniform(0, 1_400), 3), "unit": "MW",
                                      "seq": self.seq}
            if r.random() < 0.2:
                doc["quality"] = r.choice(["good", "uncertain", "bad"])
            if r.random() < 0.1:
                doc["v"] = 1
            if r.random() < 0.2:
                doc["value"] = doc["value"] * 1000  # type: ignore[operator]
                doc["unit"] = "kW"
            return doc
        # a counter: strictly increasing in event time and value, keyed by ts_ms
        self.counter_ts += r.randint(1, 1_000)
        self.counter_value += r.uniform(0, 5)
        return {"meter": self.p.counter_meter, "ts_ms": self.counter_ts,
                "value": round(self.counter_value, 6), "unit": "MWh"}

    def dumps(self, doc: object) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode()

    # -- categories --------------------------------------------------------------------------
    def c_valid(self) -> bytes:
        return self.dumps(self.valid_doc())

    def c_valid_batch(self) -> bytes:
        items = [self.valid_doc() for _ in range(self.r.randint(1, 30))]
        if self.r.random() < 0.3:  # one bad reading inside
            items.insert(self.r.randrange(len(items) + 1), {"meter": "ghost.meter",
                                                             "ts_ms": self.ts(), "value": 1,
                                                             "unit": "MW"})
        env: dict[str, object] = {"readings": items}
        if self.r.random() < 0.5:
            env["v"] = 1
            env["source"] = f"edge-{self.r.randint(0, 99)}"
        return self.dumps(env)

    def base(self) -> dict[str, object]:
        return {"meter": self.p.rate_meter, "ts_ms": self.ts(), "value": 1.0, "unit": "MW"}

    def c_wrong_types(self) -> bytes:
        r = self.r
        doc = self.base()
        field = r.choice(["meter", "ts_ms", "value", "unit", "seq", "quality", "v"])
        doc[field] = r.choice([None, True, False, "12", 12, 1.5, -1, [], [1], {}, {"a": 1},
                               "", "x" * 200, -0.0])
        if r.random() < 0.2:
            doc.pop(r.choice(sorted(doc)), None)
        if r.random() < 0.1:
            doc["extra"] = r.random()
        top = r.random()
        if top < 0.1:
            return self.dumps([doc])
        if top < 0.15:
            return self.dumps(r.choice([1, "str", None, True, 3.5]))
        return self.dumps(doc)

    def c_non_finite(self) -> bytes:
        lit = self.r.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e309"])
        where = self.r.choice(["value", "value", "ts_ms", "seq"])
        doc = self.base()
        doc[where] = "__X__"
        q = self.r.choice(["", ',"quality":"bad"', ',"quality":"uncertain"'])
        return self.dumps(doc).replace(b'"__X__"', lit).replace(b"}", q.encode() + b"}", 1)

    def c_giant_numbers(self) -> bytes:
        r = self.r
        digits = r.choice([20, 300, 4_000, 4_299, 4_301, 100_000])
        num = ("-" if r.random() < 0.3 else "") + "9" * digits
        if r.random() < 0.3:
            num = "1" + "0" * digits + ".5e" + str(r.randint(-400, 400))
        doc = self.base()
        doc[r.choice(["value", "ts_ms", "seq"])] = "__X__"
        return self.dumps(doc).replace(b'"__X__"', num.encode())

    def c_huge_strings(self) -> bytes:
        r = self.r
        size = r.choice([70_000, 200_000, self.max_payload - 200])
        doc = self.base()
        field = r.choice(["meter", "unit", "quality", "extra", "source"])
        if field == "source":
            body = self.dumps({"readings": [doc], "source": "s"})
        else:
            doc[field] = "s"
            body = self.dumps(doc)
        pad = self.max_payload - len(body) - 10
        fill = r.choice(["x", "\u00e9", "\\u0000", "\U0001f525"])
        text = (fill * size)[: max(0, min(size, pad) // max(1, len(fill.encode())))]
        return body.replace(b'"s"', b'"' + text.encode() + b'"', 1)

    def c_deep_nesting(self) -> bytes:
        r = self.r
        depth = r.choice(_NEST_DEPTHS)
        opener, closer = r.choice([(b"[", b"]"), (b'{"a":', b"}")])
        inner = opener * depth + b"1" + closer * depth
        if len(inner) > self.max_payload:
            inner = inner[: self.max_payload]  # truncated: invalid JSON at the end
        if r.random() < 0.5:
            return inner
        doc = self.base()
        doc[r.choice(["value", "meter", "extra"])] = "__X__"
        body = self.dumps(doc)
        if len(body) + len(inner) > self.max_payload:
            return inner
        return body.replace(b'"__X__"', inner)

    def c_invalid_utf8(self) -> bytes:
        bad = self.r.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80",
                             b"\xe2\x82", b"\xfe\xfe\xff\xff", b"\xc3\x28"])
        body = self.dumps(self.base())
        cut = self.r.randrange(len(body))
        return body[:cut] + bad + body[cut:]

    def c_unicode(self) -> bytes:
        r = self.r
        doc = self.base()
        field = r.choice(["meter", "unit", "quality", "extra"])
        doc[field] = r.choice(_WEIRD_TEXT) * r.randint(1, 3)
        return json.dumps(doc, ensure_ascii=r.random() < 0.5).encode("utf-8", "surrogatepass")

    def c_duplicate_keys(self) -> bytes:
        r = self.r
        ts = self.ts()
        first = r.choice([f'"meter":"{self.p.rate_meter}"', f'"value":{r.uniform(0, 100):.3f}',
                          f'"ts_ms":{ts}', '"unit":"MW"'])
        second = r.choice(['"meter":"ghost.meter"', '"value":"x"', '"value":1e999',
                           f'"ts_ms":{ts + 86_400_000 * 30}', '"unit":"t"', '"seq":-1',
                           f'"meter":"{self.p.foreign_meter}"'])
        body = (f'{{"meter":"{self.p.rate_meter}","ts_ms":{ts},"value":5.0,"unit":"MW",'
                f'{first},{second}}}')
        return body.encode()

    def c_truncated(self) -> bytes:
        body = self.c_valid() if self.r.random() < 0.5 else self.c_valid_batch()
        return body[: self.r.randrange(len(body))]

    def c_garbage(self) -> bytes:
        r = self.r
        return r.choice([b"", b" ", b"\n", b"null", b"true", b"[]", b"{}", b"0", b'""',
                         b"\x00" * 8, bytes(r.getrandbits(8) for _ in range(r.randint(1, 256))),
                         b"{" * 3, b'{"readings":', b"\xef\xbb\xbf" + self.c_valid()])

    def c_envelope(self) -> bytes:
        r = self.r
        choice = r.randrange(7)
        if choice == 0:
            return self.dumps({"readings": []})
        if choice == 1:
            return self.dumps({"readings": self.base()})
        if choice == 2:
            return self.dumps({"readings": [self.base()], "extra": 1})
        if choice == 3:
            return self.dumps({"readings": [self.base()], "v": 2})
        if choice == 4:
            return self.dumps({"readings": [self.base()], "source": "s" * 129})
        if choice == 5:  # 10,001 tiny (invalid) items: over the batch limit
            return b'{"readings":[' + b",".join([b"0"] * 10_001) + b"]}"
        # many bad readings in one batch, each dead-lettered on its own
        n = r.choice([100, 1_000, 5_000])
        items = [r.choice([0, "x", None, {"meter": "nope", "ts_ms": 1, "value": 1, "unit": "MW"}])
                 for _ in range(n)]
        return self.dumps({"readings": items})

    def c_hostile_units(self) -> bytes:
        doc = self.base()
        doc["unit"] = self.r.choice(_HOSTILE_UNITS)
        return self.dumps(doc)

    def c_oversized(self) -> bytes:
        extra = self.r.choice([1, 10, 1_000, 100_000])
        return b'{"meter":"' + b"x" * (self.max_payload + extra - 12) + b'"}'

    def c_semantic(self) -> bytes:
        r = self.r
        doc = self.base()
        kind = r.randrange(7)
        if kind == 0:
            doc["meter"] = "ghost.meter"
        elif kind == 1:
            doc["meter"] = self.p.foreign_meter
        elif kind == 2:
            doc["value"] = r.choice([-5.0, 1e12, 1501.0])
        elif kind == 3:
            doc["unit"] = r.choice(["MWh", "t", "m3/h", "degC", "kg"])
        elif kind == 4:
            doc["ts_ms"] = self.now + 86_400_000
        elif kind == 5:
            doc["ts_ms"] = self.now - 30 * 86_400_000
        else:  # a counter going down (not a reset: more than 5 % of the previous value)
            doc = {"meter": self.p.counter_meter, "ts_ms": self.counter_ts + 1,
                   "value": self.counter_value * 0.5, "unit": "MWh"}
        return self.dumps(doc)

    def odd_topic(self) -> tuple[str, bool]:
        r = self.r
        park = self.p.park_id
        delivered = [f"parkmon/{park}/ghostco/readings", f"parkmon/{park}//readings",
                     f"parkmon/{park}/{self.p.other_enterprise}/readings",
                     f"parkmon/{park}/\u00e9nterprise\U0001f525/readings",
                     f"parkmon/{park}/{'e' * 5_000}/readings", f"parkmon/{park}/ /readings",
                     f"parkmon/{park}/$SYS/readings"]
        undelivered = [f"parkmon/{park}/{self.p.enterprise}/readings/extra",
                       f"parkmon/{park}/{self.p.enterprise}/reading",
                       f"parkmon/{park}/{self.p.enterprise}", f"Parkmon/{park}/x/readings",
                       f"parkmon/{park}-other/{self.p.enterprise}/readings",
                       f"/parkmon/{park}/{self.p.enterprise}/readings"]
        if r.random() < 0.6:
            return r.choice(delivered), True
        return r.choice(undelivered), False

    # -- driver ------------------------------------------------------------------------------
    def one(self) -> FuzzMessage:
        cats = list(CATEGORIES)
        cat = self.r.choices(cats, weights=[CATEGORIES[c] for c in cats])[0]
        if cat == "repeat":
            earlier = [m for m in self.sent[-500:] if m.category in ("valid", "valid_batch")]
            if earlier:
                m = self.r.choice(earlier)
                return FuzzMessage(m.topic, m.payload, "repeat", m.delivered)
            cat = "valid"
        if cat == "odd_topic":
            topic, delivered = self.odd_topic()
            payload = self.c_valid() if self.r.random() < 0.7 else self.c_wrong_types()
            return FuzzMessage(topic, payload, cat, delivered)
        make: Callable[[], bytes] = getattr(self, f"c_{cat}")
        return FuzzMessage(self.topic, make(), cat, True)


def hostile_messages(seed: int, n: int, park: FuzzPark, *, now_ms: int, max_payload: int
                     ) -> list[FuzzMessage]:
    """n messages, deterministic for (seed, n, park, now_ms, max_payload)."""
    g = _Gen(seed, park, now_ms, max_payload)
    for _ in range(n):
        g.sent.append(g.one())
    return g.sent
