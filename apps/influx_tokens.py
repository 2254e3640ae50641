"""`parkmon influx-tokens`: least-privilege InfluxDB 2 tokens, one per parkmon service.

    PARKMON_INFLUX_URL=... PARKMON_INFLUX_ORG=parkmon PARKMON_INFLUX_BUCKET=parkmon \\
    PARKMON_INFLUX_TOKEN=<operator or all-access token> \\
      parkmon influx-tokens --env-file influx-tokens.env [--roles streams,alerts,grafana,ledger]
                            [--revoke-old]

| role      | used by                                   | permission on the bucket |
|-----------|-------------------------------------------|--------------------------|
| `streams` | `parkmon streams worker`, `parkmon edge`  | write                    |
| `alerts`  | `parkmon alerts` (annotations)            | write                    |
| `grafana` | Grafana's InfluxDB data source            | read                     |
| `ledger`  | `parkmon ledger sync` (reads the KPIs)    | read                     |

No parkmon service reads what it writes or writes what it reads, so no token has both; none can
touch another bucket, create buckets, users or tokens. Each token's description is
`parkmon <role> <bucket>`; `--revoke-old` deletes the earlier tokens with the same description
after the new ones exist (rotation: write the new env file, restart the services, done).

The tokens are secrets: they are written only to `--env-file` (mode 0600; `-` prints them to
stdout, for a pipe into a secret store) as `PARKMON_INFLUX_TOKEN_<ROLE>=...`; the operator token is
read from the environment and never printed. Everything goes through the InfluxDB HTTP API
(`/api/v2/authorizations`), with one httpx transport that tests can replace.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from parkmon.errors import ConfigError, ParkmonError

#: role -> (actions on the bucket, the services that use it)
ROLES: dict[str, tuple[tuple[str, ...], str]] = {
    "streams": (("write",), "parkmon streams worker, parkmon edge"),
    "alerts": (("write",), "parkmon alerts (annotations)"),
    "grafana": (("read",), "Grafana data source"),
    "ledger": (("read",), "parkmon ledger sync"),
}


@dataclass(frozen=True, slots=True)
class CreatedToken:
    role: str
    id: str
    token: str
    description: str
    actions: tuple[str, ...]

    def __repr__(self) -> str:  # never the token itself
        return f"CreatedToken(role={self.role!r}, id={self.id!r}, actions={self.actions!r})"


class InfluxAdmin:
    """The few InfluxDB 2 API calls needed, with an operator token."""

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None,
                 timeout_s: float = 15.0) -> None:
        self._client = httpx.Client(base_url=url.rstrip("/"), transport=transport,
                                    timeout=timeout_s, trust_env=False,
                                    headers={"Authorization": f"Token {token}",
                                             "Accept": "application/json"})

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, *, missing: Any = ..., **kw: Any) -> Any:
        """The JSON answer; `missing` (when given) is returned for a 404."""
        try:
            r = self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ParkmonError(f"InfluxDB {method} {path}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 404 and missing is not ...:
            return missing
        if r.status_code >= 300:
            raise ParkmonError(f"InfluxDB {method} {path}: HTTP {r.status_code} "
                               f"{r.text[:300]}")
        return r.json() if r.content else None

    def org_id(self, org: str) -> str:
        orgs = self._call("GET", "/api/v2/orgs", params={"org": org}, missing={}).get("orgs", [])
        if not orgs:
            raise ConfigError(f"InfluxDB has no organisation {org!r} (PARKMON_INFLUX_ORG)")
        return str(orgs[0]["id"])

    def bucket_id(self, org_id: str, bucket: str) -> str:
        found = self._call("GET", "/api/v2/buckets", params={"orgID": org_id, "name": bucket},
                           missing={}).get("buckets", [])
        if not found:
            raise ConfigError(f"InfluxDB has no bucket {bucket!r} (PARKMON_INFLUX_BUCKET)")
        return str(found[0]["id"])

    def create(self, org_id: str, bucket_id: str, actions: tuple[str, ...],
               description: str) -> tuple[str, str]:
        body = {"orgID": org_id, "description": description, "status": "active",
                "permissions": [{"action": a, "resource": {"type": "buckets", "id": bucket_id,
                                                            "orgID": org_id}}
                                for a in actions]}
        auth = self._call("POST", "/api/v2/authorizations", json=body)
        return str(auth["id"]), str(auth["token"])

    def with_description(self, org_id: str, description: str) -> list[str]:
        auths = self._call("GET", "/api/v2/authorizations",
                           params={"orgID": org_id}).get("authorizations", [])
        return [str(a["id"]) for a in auths if a.get("description") == description]

    def delete(self, auth_id: str) -> None:
        self._call("DELETE", f"/api/v2/authorizations/{auth_id}")


def description(role: str, bucket: str) -> str:
    return f"parkmon {role} {bucket}"


def create_tokens(admin: InfluxAdmin, org: str, bucket: str, roles: list[str], *,
                  revoke_old: bool = False) -> tuple[list[CreatedToken], int]:
    """Create one token per role; with `revoke_old`, then delete the earlier ones of the same
    roles. Returns the new tokens and how many old ones were deleted."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ConfigError(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    org_id = admin.org_id(org)
    bucket_id = admin.bucket_id(org_id, bucket)
    old = {r: admin.with_description(org_id, description(r, bucket)) for r in roles}
    created = []
    for r in roles:
        actions = ROLES[r][0]
        auth_id, token = admin.create(org_id, bucket_id, actions, description(r, bucket))
        created.append(CreatedToken(r, auth_id, token, description(r, bucket), actions))
    revoked = 0
    if revoke_old:
        for ids in old.values():
            for auth_id in ids:
                admin.delete(auth_id)
                revoked += 1
    return created, revoked


def env_lines(tokens: list[CreatedToken]) -> str:
    out = ["# parkmon InfluxDB tokens (least privilege); give each service only its own as "
           "PARKMON_INFLUX_TOKEN"]
    for t in tokens:
        out.append(f"# {t.role}: {' + '.join(t.actions)} on the bucket; {ROLES[t.role][1]}")
        out.append(f"PARKMON_INFLUX_TOKEN_{t.role.upper()}={t.token}")
    return "\n".join(out) + "\n"


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None,
         transport: httpx.BaseTransport | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    p = argparse.ArgumentParser(prog="parkmon influx-tokens", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--roles", default=",".join(ROLES),
                   help=f"comma-separated, of {', '.join(ROLES)} (default: all)")
    p.add_argument("--bucket", help="bucket (default PARKMON_INFLUX_BUCKET)")
    p.add_argument("--env-file", required=True,
                   help="write PARKMON_INFLUX_TOKEN_<ROLE>=... here (mode 0600); '-': stdout")
    p.add_argument("--revoke-old", action="store_true",
                   help="delete the earlier parkmon tokens of these roles afterwards")
    args = p.parse_args(argv)
    from parkmon.config import InfluxSettings

    try:
        s = InfluxSettings()
        if s.token is None:
            raise ConfigError("set the operator (or an all-access) token in PARKMON_INFLUX_TOKEN")
        bucket = args.bucket or s.bucket
        admin = InfluxAdmin(s.url, s.token.get_secret_value(), transport=transport)
        try:
            tokens, revoked = create_tokens(admin, s.org, bucket,
                                            [r.strip() for r in args.roles.split(",") if r.strip()],
                                            revoke_old=args.revoke_old)
        finally:
            admin.close()
    except ParkmonError as exc:
        print(f"parkmon influx-tokens: {exc}", file=err)
        return 2 if isinstance(exc, ConfigError) else 1
    text = env_lines(tokens)
    if args.env_file == "-":
        out.write(text)
    else:
        fd = os.open(args.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(args.env_file, 0o600)
    for t in tokens:
        print(f"created {t.role}: {' + '.join(t.actions)} on bucket {bucket!r} (id {t.id})",
              file=err)
    if args.revoke_old:
        print(f"revoked {revoked} earlier token(s)", file=err)
    return 0
