"""The ``layerseg`` console script: the Rust command line, run in this process."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from layerseg import run_cli

    # `layerseg demo` fetches its sample with this interpreter's layerseg.samples.
    os.environ.setdefault("LAYERSEG_PYTHON", sys.executable)
    sys.exit(run_cli(["layerseg", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
