"""The ``layerseg`` console script: the Rust command line, run in this process (it is part of the
libtorch runtime, ``layerseg-libtorch``)."""

from __future__ import annotations

import sys


def main() -> None:
    from layerseg import run_cli

    try:
        code = run_cli(["layerseg", *sys.argv[1:]])
    except ImportError as e:
        print(f"layerseg: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
