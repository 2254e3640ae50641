"""Mosquitto ACL from park files: each enterprise's device user may publish only its own readings
topic, the gateway user may read every readings topic of the parks.

    parkmon park acl kalundborg.yaml [more.yaml ...] [--gateway-user gateway]
                     [--device-user 'dev_{enterprise}'] [-o acl]

Topic layout (docs/contracts.md): devices publish on `parkmon/<park>/<enterprise>/readings`; the
gateway subscribes `parkmon/<park>/+/readings` (or `$share/<group>/...`, which Mosquitto checks
against the same ACL). Everything not granted is denied: a device cannot read, cannot publish for
another enterprise or another park, and the gateway cannot publish. Park and enterprise ids are
`[A-Za-z0-9_-]` (the park file's schema), so no id can smuggle an MQTT wildcard or a new ACL line
into the file; user names are checked here for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from parkmon.contracts import mqtt_subscription, mqtt_topic
from parkmon.park.model import Park

_USER = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
DEFAULT_GATEWAY_USER = "gateway"
DEFAULT_DEVICE_USER = "dev_{enterprise}"


def device_user(template: str, park_id: str, enterprise_id: str) -> str:
    """The MQTT user name of an enterprise's devices (`{enterprise}` and `{park}` substituted)."""
    name = template.format(enterprise=enterprise_id, park=park_id)
    _check_user(name)
    return name


def _check_user(name: str) -> None:
    if _USER.fullmatch(name) is None:
        raise ValueError(f"MQTT user name {name!r}: use 1-128 of A-Z a-z 0-9 _ . @ - "
                         "(no spaces, no MQTT wildcards)")


def mosquitto_acl(parks: Iterable[Park], *, gateway_user: str = DEFAULT_GATEWAY_USER,
                  device_user_template: str = DEFAULT_DEVICE_USER) -> str:
    """The text of a Mosquitto `acl_file` for `parks` (deterministic: sorted by id)."""
    parks = sorted(parks, key=lambda p: p.id)
    _check_user(gateway_user)
    lines = ["# Mosquitto ACL written by `parkmon park acl` from "
             + ", ".join(p.id for p in parks) + ". Do not edit: regenerate from the park files.",
             "# Anything not granted here is denied.", "",
             "# the ingest gateway (and edge mode) reads every enterprise's readings",
             f"user {gateway_user}"]
    lines += [f"topic read {mqtt_subscription(p.id)}" for p in parks]
    users: dict[str, list[str]] = {}
    for p in parks:
        for e in sorted(p.enterprises, key=lambda e: e.id):
            users.setdefault(device_user(device_user_template, p.id, e.id), []).append(
                mqtt_topic(p.id, e.id))
    if gateway_user in users:
        raise ValueError(f"device user {gateway_user!r} is also the gateway user")
    for user, topics in users.items():
        lines += ["", f"user {user}"] + [f"topic write {t}" for t in topics]
    return "\n".join(lines) + "\n"
