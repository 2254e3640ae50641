"""The exception tree of parkmon.

ParkmonError                      root; every error we raise on purpose derives from it
 +-- ConfigError                  a settings / environment problem (what variable, what expected)
 +-- ParkFileError                a park description that does not validate (carries all problems)
 +-- PayloadError                 a reading payload that cannot be accepted (carries a reason code)
 +-- ServiceError                 a dev service (Mosquitto, Kafka, InfluxDB) could not be provisioned
 +-- SinkError                    a sink (InfluxDB, Kafka) refused or failed a write
      +-- SinkBackpressure        the sink asks to retry later (`retry_after_s`)
"""

from __future__ import annotations


class ParkmonError(Exception):
    """Root of all parkmon errors."""


class ConfigError(ParkmonError):
    pass


class ParkFileError(ParkmonError):
    """A park file failed validation. `problems` holds one actionable line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))

    def __reduce__(self) -> tuple[type, tuple[str, list[str]]]:  # picklable across processes
        return (type(self), (self.source, self.problems))


class PayloadError(ParkmonError):
    """A payload or reading was rejected. `reason` is a stable reason code (see contracts.Reason)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class ServiceError(ParkmonError):
    pass


class SinkError(ParkmonError):
    pass


class SinkBackpressure(SinkError):
    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)
