"""``python -m layerseg.samples``: see :mod:`layerseg.samples.cli`."""

from layerseg.samples.cli import main

raise SystemExit(main())
