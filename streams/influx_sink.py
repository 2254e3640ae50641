"""Synchronous InfluxDB 2 writes of the core's points, with retries and visible failures.

`InfluxSink.write(points)` returns only when InfluxDB answered 2xx for every point that can be
written (callers commit Kafka offsets after that), or raises:
- `SinkBackpressure(retry_after_s)` when InfluxDB kept answering 429/503 for `max_total_s`;
- `SinkError` when it stayed unreachable / failing (5xx, connection errors, auth) as long.
Points InfluxDB refuses as malformed (HTTP 400, after bisecting the batch down to the single
point) are dead-lettered through `on_deadletter(point, reason)` and counted in `stats`.
NaN / +-inf field values are never silently dropped (influxdb-client would drop them): the field
is removed, its name is listed in the string field `nonfinite_fields` of the same point, the
point is reported to `on_deadletter` with reason "not_finite" and counted.

The HTTP seam is `LineWriter` (a callable taking line-protocol lines); tests and benchmarks can
pass their own, the default uses influxdb-client's synchronous write API.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from parkmon.errors import SinkBackpressure, SinkError
from streams.core.points import FieldValue, PointSpec

log = logging.getLogger("parkmon.streams.influx")


class WriteFailed(Exception):
    """Raised by a LineWriter: `status` is the HTTP status (None: no answer)."""

    def __init__(self, status: int | None, message: str, retry_after_s: float | None = None):
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(f"{status}: {message}")


class LineWriter(Protocol):
    def __call__(self, lines: list[str]) -> None: ...


# -- line protocol ----------------------------------------------------------------------------
def _esc_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _esc_meas(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _field(v: FieldValue) -> str:
    t = type(v)
    if t is float:
        return repr(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return f"{v}i"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=65_536)
def _series_prefix(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """`measurement,tag=v,...` escaped; a few hundred distinct series repeat every window, so
    this is cached (a quarter of the batch engine's time went here before)."""
    return _esc_meas(measurement) + "".join(f",{_esc_key(k)}={_esc_key(v)}" for k, v in tags
                                            if v != "")


@lru_cache(maxsize=4096)
def _field_key(k: str) -> str:
    return _esc_key(k) + "="


def line_of(p: PointSpec) -> str:
    fields = ",".join([_field_key(k) + _field(v) for k, v in p.fields])
    return f"{_series_prefix(p.measurement, p.tags)} {fields} {p.ts_ms}"


def encode_nonfinite(p: PointSpec) -> tuple[PointSpec, list[str]]:
    """(point without non-finite float fields + `nonfinite_fields`, names of removed fields)."""
    bad = [k for k, v in p.fields if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return p, []
    kept = tuple((k, v) for k, v in p.fields if k not in bad)
    return PointSpec(p.measurement, p.tags, kept + (("nonfinite_fields", ",".join(bad)),),
                     p.ts_ms), bad


@dataclass
class SinkStats:
    points_written: int = 0
    batches_written: int = 0
    retries: int = 0
    nonfinite_fields: int = 0
    deadlettered: int = 0
    last_error: str = ""
    write_seconds: float = 0.0
    by_reason: dict[str, int] = field(default_factory=dict)


RETRYABLE = {408, 429, 500, 502, 503, 504}
BACKPRESSURE = {429, 503}


class InfluxSink:
    def __init__(
        self,
        writer: LineWriter,
        *,
        on_deadletter: Callable[[PointSpec, str], None] | None = None,
        max_total_s: float = 30.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        max_batch: int = 5000,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._on_deadletter = on_deadletter
        self.max_total_s = max_total_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_batch = max_batch
        self._sleep = sleep
        self._monotonic = monotonic
        self.stats = SinkStats()

    @classmethod
    def connect(cls, url: str, token: str, org: str, bucket: str, timeout_ms: int = 10_000,
                **kwargs: object) -> InfluxSink:
        return cls(influx_client_writer(url, token, org, bucket, timeout_ms), **kwargs)  # type: ignore[arg-type]

    def _deadletter(self, p: PointSpec, reason: str) -> None:
        self.stats.deadlettered += 1
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
        if self._on_deadletter is not None:
            self._on_deadletter(p, reason)
        else:
            log.error("dead-lettered point %s (%s)", line_of(p), reason)

    def write(self, points: Sequence[PointSpec]) -> None:
        """Write all points (overwrite by series + window start); see module doc for errors."""
        if not points:
            return
        clean: list[PointSpec] = []
        for p in points:
            q, bad = encode_nonfinite(p)
            if bad:
                self.stats.nonfinite_fields += len(bad)
                self._deadletter(p, "not_finite")
            clean.append(q)
        t0 = self._monotonic()
        for i in range(0, len(clean), self.max_batch):
            self._write_isolating(clean[i:i + self.max_batch])
        self.stats.write_seconds += self._monotonic() - t0

    def _write_isolating(self, batch: list[PointSpec]) -> None:
        try:
            self._write_retrying([line_of(p) for p in batch])
            self.stats.points_written += len(batch)
            self.stats.batches_written += 1
        except WriteFailed as exc:  # 400/413/422: refused content
            if exc.status == 413 or len(batch) > 1:
                mid = len(batch) // 2
                self._write_isolating(batch[:mid])
                self._write_isolating(batch[mid:])
            else:
                self._deadletter(batch[0], f"influx_{exc.status}: {exc}"[:200])

    def _write_retrying(self, lines: list[str]) -> None:
        start = self._monotonic()
        delay = self.backoff_initial_s
        while True:
            try:
                self._writer(lines)
                return
            except WriteFailed as exc:
                status = exc.status
                if status is not None and status not in RETRYABLE and status not in (401, 403,
                                                                                       404):
                    raise  # the content is refused: isolate and dead-letter
                self.stats.retries += 1
                self.stats.last_error = str(exc)
                elapsed = self._monotonic() - start
                wait = exc.retry_after_s if exc.retry_after_s is not None else delay
                if elapsed + wait > self.max_total_s:
                    if status in BACKPRESSURE:
                        raise SinkBackpressure(f"InfluxDB busy: {exc}", retry_after_s=wait) \
                            from exc
                    raise SinkError(f"InfluxDB write failed for {elapsed:.1f} s: {exc}") \
                        from exc
                log.warning("InfluxDB write failed (%s), retry in %.2f s", exc, wait)
                self._sleep(wait)
                delay = min(delay * 2, self.backoff_max_s)


def influx_client_writer(url: str, token: str, org: str, bucket: str,
                         timeout_ms: int = 10_000) -> LineWriter:
    """A LineWriter over influxdb-client's synchronous write API (precision ms, no own retries)."""
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.rest import ApiException

    client = InfluxDBClient(url=url, token=token, org=org, timeout=timeout_ms)
    api = client.write_api(write_options=SYNCHRONOUS)

    def write(lines: list[str]) -> None:
        try:
            api.write(bucket=bucket, org=org, record="\n".join(lines),
                      write_precision=WritePrecision.MS)  # type: ignore[arg-type]
        except ApiException as exc:
            ra = None
            headers: dict[str, str] = dict(exc.headers or {})
            if "Retry-After" in headers:
                try:
                    ra = float(headers["Retry-After"])
                except ValueError:
                    ra = None
            raise WriteFailed(exc.status, str(exc.body or exc.reason)[:300], ra) from exc
        except Exception as exc:  # connection refused, timeouts: no HTTP answer
            raise WriteFailed(None, f"{type(exc).__name__}: {exc}"[:300]) from exc

    write.client = client  # type: ignore[attr-defined]  # kept alive with the writer
    return write
