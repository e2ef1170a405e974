"""Issue 21: the Python face of the package speaks Python. Every public function has a typed
signature and documents each parameter; errors name the Python keyword, not only the CLI flag;
an unknown device is refused with the valid names."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import layerseg

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def _public_functions() -> list[str]:
    return [
        name
        for name in layerseg.__all__
        if callable(getattr(layerseg, name)) and not inspect.isclass(getattr(layerseg, name))
    ]


@pytest.mark.parametrize("name", _public_functions())
def test_public_functions_are_typed_and_document_every_parameter(name: str) -> None:
    function = getattr(layerseg, name)
    signature = inspect.signature(function)
    doc = inspect.getdoc(function) or ""
    assert len(doc) > 40, f"{name} has no docstring"
    assert "--help" not in doc and "see the CLI" not in doc, f"{name} sends users to the CLI"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name} -> ?"
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"
        assert re.search(rf"\b{parameter.name}\b", doc), (
            f"{name} does not document {parameter.name}"
        )
        if parameter.default is not inspect.Parameter.empty:
            assert "Default" in doc or "default" in doc, f"{name} names no default"


def _says_the_python_keyword(message: str) -> None:
    """A message that quotes a ``--flag`` also names a Python keyword (``name=``)."""
    if re.search(r"(?<![\w-])--[a-z]", message):
        assert re.search(r"\b[a-z_]+=", message), f"only a CLI flag: {message}"


def test_errors_tell_a_python_user_the_keyword(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(0.0, 100.0, (24, 24, 24)).astype(np.float32)
    affine = np.eye(4)
    # A profile that places tumours inside an organ, without one.
    with pytest.raises(ValueError) as synthesis:
        layerseg.synthesize(image, affine, profile="liver-ct")
    assert "organ_mask=" in str(synthesis.value)
    _says_the_python_keyword(str(synthesis.value))
    # A label map with values besides 0 and 1, and no word on which are tumour.
    label = np.zeros((24, 24, 24), np.uint8)
    label[8:12, 8:12, 8:12] = 2
    layerseg.write_image(tmp_path / "image.nii.gz", image, affine)
    layerseg.write_labels(tmp_path / "label.nii.gz", label, affine)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(
        '{"training": [{"image": "image.nii.gz", "label": "label.nii.gz"}]}', encoding="utf-8"
    )
    with pytest.raises(ValueError) as labels:
        layerseg.finetune(datalist, tmp_path / "run", steps=1, device="cpu")
    assert "label_values=[1]" in str(labels.value)
    _says_the_python_keyword(str(labels.value))


def test_the_checker_catches_a_cli_only_message() -> None:
    with pytest.raises(AssertionError):
        _says_the_python_keyword("it segments inside an organ mask; pass one (--organ-mask)")
    _says_the_python_keyword("pass one (CLI --organ-mask, Python organ_mask=)")


def test_an_unknown_device_is_refused_from_python(sample_dirs: dict[str, Path]) -> None:
    """``device="gpu"`` was silently taken for cuda; it is no name of ours."""
    image = np.zeros((16, 16, 16), np.float32)
    with pytest.raises(ValueError, match=DEVICE_NAMES) as refused:
        layerseg.segment(image, np.eye(4), device="gpu")
    assert '"gpu"' in str(refused.value)
    _says_the_python_keyword(str(refused.value))


def test_an_unknown_device_is_refused_from_the_cli(
    layerseg_bin: Path, sample_dirs: dict[str, Path], tmp_path: Path
) -> None:
    scan = sample_dirs["itk_t1"] / "image.nii.gz"
    proc = subprocess.run(
        [str(layerseg_bin), "segment", str(scan), "--out", str(tmp_path / "m.nii.gz"),
         "--device", "gpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert '"gpu"' in proc.stderr and DEVICE_NAMES in proc.stderr
    assert not (tmp_path / "m.nii.gz").exists()
