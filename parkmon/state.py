"""Versioned JSON state: how checkpoints that must survive a restart or an upgrade are written.

Replaces pickle for the edge checkpoint (meters, dedup, KPI windows, detectors) and the detect
worker's checkpoint. A document is

    {"format": "parkmon-state", "version": 1, "kind": "<what it is>", "state": <value>}

and a value is plain JSON (null, bool, int, str, finite float, list, a dict whose keys are strings
not starting with "$") or one tagged object:

    {"$f": "nan" | "inf" | "-inf"}                   a non-finite float
    {"$tuple": [...]}, {"$set": [...]}, {"$frozenset": [...]}
    {"$deque": [...], "maxlen": n | null}
    {"$dict": [[key, value], ...]}                   a dict with other keys
    {"$bytes": "<base64>"}
    {"$zone": "Europe/Copenhagen"}                   a time zone (zoneinfo)
    {"$ndarray": [...], "dtype": "float64"}          numpy arrays (numpy scalars become numbers)
    {"$enum": "module:Class", "value": v}
    {"$ntuple": "module:Class", "v": [...]}          one of parkmon's named tuples
    {"$obj": "module:Class", "$id": n, "state": {attribute: value}}    one of parkmon's objects
    {"$ref": n}                                      the object with "$id" n again (shared objects
                                                     stay shared, cycles are allowed)

Only classes of parkmon's own packages are restored (never an arbitrary importable name, unlike
pickle), attributes are set without running __init__. An unknown format or version, a pickle
written by an earlier release, or a class that no longer exists is a `StateFormatError` saying
what to do. See docs/state-format.md.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import zoneinfo
from collections import deque
from enum import Enum
from typing import Any

from parkmon.errors import ParkmonError

FORMAT = "parkmon-state"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
OWN_PACKAGES = ("parkmon", "ingest", "streams", "detect", "alerts", "simulators", "apps")
PICKLE_ADVICE = ("it was written in the pickle format of parkmon before state format "
                 f"{VERSION}: delete it and restart; the service then replays from the broker "
                 "(MQTT persistent session / Kafka committed offsets) as on a first start")


class StateFormatError(ParkmonError):
    """A state document that this release cannot read (or an object it cannot write)."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _own(cls: type) -> bool:
    return cls.__module__.split(".")[0] in OWN_PACKAGES


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        s = klass.__dict__.get("__slots__", ())
        for name in (s,) if isinstance(s, str) else s:
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    return names


class _Encoder:
    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps encoded objects alive so their id() stays unique

    def enc(self, v: Any, path: str) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, Enum):
            return {"$enum": _qualname(type(v)), "value": self.enc(v.value, path)}
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            if math.isfinite(v):
                return float(v)
            return {"$f": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(v, list):
            return [self.enc(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple) and hasattr(v, "_fields"):
            if not _own(type(v)):
                raise StateFormatError(f"state path {path}: cannot store a {_qualname(type(v))}")
            return {"$ntuple": _qualname(type(v)),
                    "v": [self.enc(x, f"{path}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, tuple):
            return {"$tuple": [self.enc(x, f"{path}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, deque):
            return {"$deque": [self.enc(x, f"{path}[{i}]") for i, x in enumerate(v)],
                    "maxlen": v.maxlen}
        if isinstance(v, frozenset | set):
            tag = "$frozenset" if isinstance(v, frozenset) else "$set"
            return {tag: [self.enc(x, f"{path}{{}}") for x in v]}
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: self.enc(x, f"{path}.{k}") for k, x in v.items()}
            return {"$dict": [[self.enc(k, f"{path}<key>"), self.enc(x, f"{path}[{k!r}]")]
                              for k, x in v.items()]}
        if isinstance(v, bytes | bytearray):
            return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
        if isinstance(v, zoneinfo.ZoneInfo):
            return {"$zone": v.key}
        mod = type(v).__module__
        if mod == "numpy":
            import numpy as np

            if isinstance(v, np.ndarray):
                return {"$ndarray": v.tolist(), "dtype": str(v.dtype)}
            if isinstance(v, np.generic):
                return self.enc(v.item(), path)
        cls = type(v)
        if not _own(cls) or callable(v) and not hasattr(v, "__dict__"):
            raise StateFormatError(f"state path {path}: cannot store a {_qualname(cls)} "
                                   "(only plain data and parkmon's own objects are stored)")
        key = id(v)
        if key in self.ids:
            return {"$ref": self.ids[key]}
        self.ids[key] = n = len(self.ids)
        self.keep.append(v)
        attrs: dict[str, Any] = {}
        if hasattr(v, "__dict__"):
            attrs.update(vars(v))
        for name in _slots(cls):
            if hasattr(v, name):
                attrs[name] = getattr(v, name)
        state = {}
        for name, x in attrs.items():
            if callable(x) and not hasattr(x, "__dict__") and not isinstance(x, type):
                raise StateFormatError(f"state path {path}.{name}: a function cannot be stored")
            state[name] = self.enc(x, f"{path}.{name}")
        return {"$obj": _qualname(cls), "$id": n, "state": state}


class _Decoder:
    def __init__(self, where: str) -> None:
        self.where = where
        self.objs: dict[int, Any] = {}

    def cls(self, name: str) -> Any:
        module, _, qual = name.partition(":")
        if module.split(".")[0] not in OWN_PACKAGES:
            raise StateFormatError(f"{self.where}: refuses to restore {name}: not a parkmon class")
        try:
            obj: Any = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise StateFormatError(
                f"{self.where}: class {name} no longer exists in this release; delete the state "
                "file and restart (the service replays from the broker as on a first start)"
            ) from exc
        return obj

    def dec(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self.dec(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$obj" in v:
            cls = self.cls(v["$obj"])
            obj = cls.__new__(cls)
            self.objs[v["$id"]] = obj
            for name, x in v["state"].items():
                object.__setattr__(obj, name, self.dec(x))
            return obj
        if "$zone" in v:
            return zoneinfo.ZoneInfo(v["$zone"])
        if "$ntuple" in v:
            return self.cls(v["$ntuple"])(*(self.dec(x) for x in v["v"]))
        if "$ref" in v:
            return self.objs[v["$ref"]]
        if "$f" in v:
            return float(v["$f"])
        if "$tuple" in v:
            return tuple(self.dec(x) for x in v["$tuple"])
        if "$deque" in v:
            return deque((self.dec(x) for x in v["$deque"]), maxlen=v["maxlen"])
        if "$set" in v:
            return {self.dec(x) for x in v["$set"]}
        if "$frozenset" in v:
            return frozenset(self.dec(x) for x in v["$frozenset"])
        if "$dict" in v:
            return {self.dec(k): self.dec(x) for k, x in v["$dict"]}
        if "$bytes" in v:
            return base64.b64decode(v["$bytes"])
        if "$ndarray" in v:
            import numpy as np

            return np.array(v["$ndarray"], dtype=v["dtype"])
        if "$enum" in v:
            return self.cls(v["$enum"])(self.dec(v["value"]))
        return {k: self.dec(x) for k, x in v.items()}


def to_json_value(value: Any) -> Any:
    """`value` as a JSON-compatible tree (see the module docstring)."""
    return _Encoder().enc(value, "$")


def from_json_value(tree: Any, where: str = "state") -> Any:
    return _Decoder(where).dec(tree)


def dumps(value: Any, kind: str) -> bytes:
    """A versioned state document for `value` (UTF-8 JSON bytes)."""
    doc = {"format": FORMAT, "version": VERSION, "kind": kind, "state": to_json_value(value)}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def loads(blob: bytes, kind: str, where: str = "state") -> Any:
    """The value of a document written by `dumps` (this or an earlier supported version)."""
    if blob[:1] == b"\x80":
        raise StateFormatError(f"{where}: {PICKLE_ADVICE}")
    try:
        doc = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFormatError(f"{where}: not a parkmon state document ({exc}); delete it and "
                               "restart to replay from the broker") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateFormatError(f"{where}: not a parkmon state document (no format "
                               f"{FORMAT!r}); delete it and restart to replay from the broker")
    if doc.get("version") not in SUPPORTED_VERSIONS:
        raise StateFormatError(
            f"{where}: state format version {doc.get('version')!r} is not one this release reads "
            f"(it reads {', '.join(map(str, SUPPORTED_VERSIONS))}); it was written by another "
            "parkmon release: run that release, or delete the file and restart to replay")
    if doc.get("kind") != kind:
        raise StateFormatError(f"{where}: holds {doc.get('kind')!r} state, expected {kind!r}")
    return from_json_value(doc["state"], where)
