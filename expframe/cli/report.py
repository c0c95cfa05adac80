"""`expframe-report PATH...`: one table and a few figures from every run below the given folders
(report/summary.py says how runs are grouped); this module is the command line around it."""

import argparse
import logging
import re
import sys
from pathlib import Path

from expframe.cli.arguments import OneLineParser, positive_float
from expframe.errors import ConfigError, short_reason
from expframe.record import catalogue as figures
from expframe.record.atomic import check_writable
from expframe.report.summary import default_baseline, report


def default_out(args: argparse.Namespace) -> Path:
    """The first PATH for the plain report (the one a sweep writes itself); a view chosen with
    options goes beside it, in views/<options>/, so it never replaces the sweep's own report."""
    options = [
        ("by", args.by),
        ("metrics", args.metrics),
        ("sort", [args.sort] if args.sort else None),
        ("baseline", args.baseline),
        ("resolve", [f"{args.resolve:g}"] if args.resolve != 0.01 else None),
    ]
    chosen = [f"{name}-{'-'.join(values)}" for name, values in options if values]
    if not chosen:
        return args.paths[0]
    return args.paths[0] / "views" / re.sub(r"[^\w.=-]+", "_", "_".join(chosen))


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="expframe-report", description=__doc__.split("\n")[0].rstrip())
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders, run folders or any parent")
    parser.add_argument("--by", nargs="+", help="group (and with two keys, pivot) by these swept keys")
    parser.add_argument(
        "--metrics",
        nargs="+",
        help=f"columns to show (default {', '.join(figures.report_columns())}), any metrics.json figure",
    )
    parser.add_argument("--sort", help="sort rows by this metric (best first)")
    parser.add_argument(
        "--baseline",
        nargs="+",
        metavar="KEY=VALUE",
        help="the configuration to compare with (default: the project's defaults)",
    )
    parser.add_argument(
        "--resolve",
        type=positive_float,
        default=0.01,
        help="accuracy difference the seeds-needed line is for (default 0.01)",
    )
    parser.add_argument("--out", type=Path, help="where to write (default: the first PATH)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: PATH {missing[0]}: no such folder")
    baseline, named = None, None
    if args.baseline:
        bad = [b for b in args.baseline if "=" not in b]
        if bad:
            raise SystemExit(f"error: --baseline {bad[0]}: write KEY=VALUE (e.g. optimizer=sgd)")
        named = dict(b.split("=", 1) for b in args.baseline)
        baseline = {**default_baseline(), **named}
    out = args.out or default_out(args)
    try:
        check_writable("--out", str(out))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        markdown = report(
            args.paths, out, args.by, args.metrics, args.sort, not args.no_figures, baseline, args.resolve, named
        )
    except OSError as e:
        raise SystemExit(f"error: --out {out}: cannot write the report ({short_reason(e, 160)})") from None
    print(markdown)
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
