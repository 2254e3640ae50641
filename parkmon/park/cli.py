"""`parkmon park check FILE`, `parkmon park show FILE`, `parkmon park generate -o FILE`,
`parkmon park acl FILE... [-o ACL]` (Mosquitto ACL: each enterprise's devices publish only on their
own readings topic, the gateway reads them all; see parkmon/park/acl.py).

Exit codes: 0 valid, 2 invalid file or bad usage (one line per problem on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from parkmon.errors import ParkFileError
from parkmon.park.loader import build_park, load_park
from parkmon.park.model import Park


def _fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.4g} {unit}/h"


def describe(park: Park) -> str:
    """Human-readable overview: enterprises, meters and the exchange network."""
    lines = [f"park {park.id}: {park.name} ({park.timezone})",
             f"  {len(park.enterprises)} enterprises, {len(park.meters)} meters, "
             f"{len(park.exchanges)} exchanges, {len(park.alternatives)} alternatives", ""]
    lines.append("enterprises and meters:")
    for e in park.enterprises:
        meters = park.meters_of.get(e.id, ())
        lines.append(f"  {e.id} - {e.name} [{e.sector}], {len(meters)} meters")
        for m in meters:
            what = m.carrier + (f":{m.material}" if m.material else "")
            origin = f" ({m.origin})" if m.origin else (f" (fate {m.fate})" if m.fate else "")
            x = park.exchange_of_meter.get(m.id)
            link = f"  <-> exchange {x.id}" if x else ""
            lines.append(f"    {m.id:<32} {m.direction:<8} {what:<28} {m.kind:<7} "
                         f"{m.unit:<6}{origin}{link}")
    lines.append("")
    lines.append("exchange network (supplier -> consumer):")
    for x in park.exchanges:
        what = x.carrier + (f":{x.material}" if x.material else "")
        lines.append(f"  {x.id}: {what}, nominal {_fmt_rate(x.nominal_rate, x.quantity_unit)}, "
                     f"loss {x.loss_fraction:.0%}, buffer {x.buffer_h:g} h, {x.criticality}")
        for s in x.suppliers:
            for c, share in zip(x.consumers, x.consumer_shares, strict=True):
                lines.append(f"    {s} -> {c}" + (f"  ({share:.0%})" if len(x.consumers) > 1 else ""))
        alts = park.alternatives_for(x.id)
        if alts:
            alt_text = ", ".join(f"{a.enterprise} {_fmt_rate(a.spare_capacity, a.quantity_unit)} "
                                 f"in {a.lead_time_h:g} h" for a in alts)
            lines.append(f"    alternatives: {alt_text}")
    if park.emission_factors:
        lines.append("")
        lines.append("emission factors (t CO2e per canonical unit):")
        for carrier, f in park.emission_factors.items():
            series = f", {len(f.series)}-point series" if f.series else ""
            lines.append(f"  {carrier:<12} {f.value:.6g} t/{f.per_unit}{series}  [{f.source}]")
    if park.products:
        lines.append("")
        lines.append("products: " + ", ".join(p.meter for p in park.products))
    if park.maintenance:
        lines.append("")
        lines.append(f"maintenance windows: {len(park.maintenance)}")
    return "\n".join(lines)


def _generate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import yaml

    from parkmon.park.generator import generate_park_data

    try:
        data = generate_park_data(args.enterprises, args.meters, seed=args.seed, park_id=args.park_id)
        build_park(data, source="<generated>")  # refuse to write a file that would not load
    except (ValueError, ParkFileError) as exc:
        print(f"parkmon park generate: {exc}", file=err)
        return 2
    text = yaml.safe_dump(data, sort_keys=False, width=120)
    if args.output == "-":
        out.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{args.output}: park {data['park']['id']!r}, {len(data['enterprises'])} enterprises, "
              f"{len(data['meters'])} meters, {len(data['exchanges'])} exchanges", file=out)
    return 0


def _acl(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from parkmon.park.acl import mosquitto_acl

    parks = []
    for path in args.files:
        try:
            parks.append(load_park(path))
        except ParkFileError as exc:
            print(f"{path}: {len(exc.problems)} problem(s)", file=err)
            for line in exc.problems:
                print(f"  {line}", file=err)
            return 2
    try:
        text = mosquitto_acl(parks, gateway_user=args.gateway_user,
                             device_user_template=args.device_user)
    except (ValueError, KeyError) as exc:
        print(f"parkmon park acl: {exc}", file=err)
        return 2
    if args.output == "-":
        out.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{args.output}: ACL for {', '.join(p.id for p in parks)}", file=err)
    return 0


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="parkmon park", description="check or show a park file")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="validate a park file").add_argument("file")
    sub.add_parser("show", help="print enterprises, meters and the exchange network").add_argument("file")
    gen = sub.add_parser("generate", help="write a synthetic park file (N enterprises, M meters)")
    gen.add_argument("--enterprises", type=int, default=500)
    gen.add_argument("--meters", type=int, default=10_000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--id", dest="park_id", help="park id (default synthetic<N>x<M>)")
    gen.add_argument("-o", "--output", required=True, help="file to write ('-' for stdout)")
    acl = sub.add_parser("acl", help="write a Mosquitto ACL file from park files")
    acl.add_argument("files", nargs="+", metavar="FILE")
    acl.add_argument("--gateway-user", default="gateway",
                     help="MQTT user of parkmon gateway / edge: reads every readings topic")
    acl.add_argument("--device-user", default="dev_{enterprise}",
                     help="MQTT user of an enterprise's devices ({enterprise}, {park}); "
                          "default dev_{enterprise}")
    acl.add_argument("-o", "--output", default="-", help="file to write (default '-': stdout)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.action == "generate":
        return _generate(args, out, err)
    if args.action == "acl":
        return _acl(args, out, err)
    try:
        park = load_park(args.file)
    except ParkFileError as exc:
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=err)
        for line in exc.problems:
            print(f"  {line}", file=err)
        return 2
    if args.action == "check":
        print(f"{args.file}: ok (park {park.id!r}: {len(park.enterprises)} enterprises, "
              f"{len(park.meters)} meters, {len(park.exchanges)} exchanges)", file=out)
    else:
        print(describe(park), file=out)
    return 0
