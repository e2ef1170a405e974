"""The README's Python snippet runs as written (issue 21: it raised NameError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_snippet_runs(sample_dirs: dict[str, Path], tmp_path: Path) -> None:
    text = README.read_text()
    section = text.split("## Python\n", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LAYERSEG_PROGRESS": "lines"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dice = float(proc.stdout.strip().splitlines()[-1])
    assert 0.0 <= dice <= 1.0
    assert (tmp_path / "mask.nii.gz").exists() and (tmp_path / "mask_copy.nii.gz").exists()
