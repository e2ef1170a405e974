"""The ``layerseg`` console script: the Rust command line, run in this process."""

from __future__ import annotations

import sys


def main() -> None:
    from layerseg import run_cli

    sys.exit(run_cli(["layerseg", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
