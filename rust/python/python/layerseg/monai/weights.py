"""Weights: LayerSeg safetensors and model cards, MONAI's BasicUNet, a bundle's ``model.pt``."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets.basic_unet import BasicUNet

from layerseg import _layerseg

PathLike = str | os.PathLike[str]

#: One key per entry of MONAI's ``BasicUNet`` ``features``: (key, axis of the width).
_WIDTH_KEYS = (
    ("conv_0.conv_0.conv.weight", 0),
    ("down_1.convs.conv_0.conv.weight", 0),
    ("down_2.convs.conv_0.conv.weight", 0),
    ("down_3.convs.conv_0.conv.weight", 0),
    ("down_4.convs.conv_0.conv.weight", 0),
    ("upcat_1.convs.conv_0.conv.weight", 0),
)


def basic_unet_shape(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``in_channels``, ``out_channels`` and ``features`` of a BasicUNet state dict."""
    needed = [k for k, _ in _WIDTH_KEYS] + ["final_conv.weight"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(
            f"not the weights of a MONAI BasicUNet: no {', '.join(missing[:3])}"
            + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
        )
    first = state["conv_0.conv_0.conv.weight"]
    final = state["final_conv.weight"]
    if first.ndim != 5 or final.ndim != 5:
        raise ValueError("not the weights of a 3D BasicUNet: its convolutions are not 3D")
    return {
        "in_channels": int(first.shape[1]),
        "out_channels": int(final.shape[0]),
        "features": tuple(int(state[k].shape[axis]) for k, axis in _WIDTH_KEYS),
    }


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model weights not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file: {e}") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad files
        raise ValueError(f"{path}: not a PyTorch state dict readable with weights_only: {e}") from e
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a CheckpointSaver file with several objects
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in state.items()}


def load_weights(
    network: torch.nn.Module, path: PathLike, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Load LayerSeg weights (``.safetensors``, or a ``torch.save``-d state dict such as a
    bundle's ``models/model.pt``) into a MONAI ``BasicUNet`` and return it (on ``device`` when
    given). Weights of another width or channel count are refused with a message naming both
    shapes; ``.pt`` files are read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    state = _read_state_dict(path)
    want = network.state_dict()
    try:
        have_shape = basic_unet_shape(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    try:
        want_shape = basic_unet_shape(want)
    except ValueError as e:
        raise ValueError(f"the network is not a MONAI BasicUNet: {e}") from e
    if have_shape != want_shape:
        raise ValueError(
            f"{path}: weights of another width: they are a BasicUNet with features "
            f"{list(have_shape['features'])} (in_channels {have_shape['in_channels']}, "
            f"out_channels {have_shape['out_channels']}), but the network has features "
            f"{list(want_shape['features'])} (in_channels {want_shape['in_channels']}, "
            f"out_channels {want_shape['out_channels']}); build the network with the weights' "
            "features (in a bundle: --network_def#features)"
        )
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"{path}: the names do not match MONAI's BasicUNet: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    network.load_state_dict(state, strict=True)
    if device is not None:
        network = network.to(device)
    return network


def read_model_card(path: PathLike) -> dict[str, Any]:
    """A LayerSeg model card (``NAME.json`` beside ``NAME.safetensors``), checked by LayerSeg's
    Rust core as the runtime checks it: format 1, a BasicUNet, ``config`` with ``in_channels``,
    ``out_channels`` and six positive ``features``. Raises ``FileNotFoundError``, or
    ``LayerSegError`` (a ``ValueError``) naming the file and the fault."""
    card: dict[str, Any] = json.loads(_layerseg.read_model_card(path))
    return card


def basic_unet(
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    in_channels: int = 1,
    out_channels: int = 3,
) -> BasicUNet:
    """MONAI's 3D ``BasicUNet`` with MONAI's defaults, as LayerSeg's Rust network mirrors it."""
    return BasicUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(int(f) for f in features),
    )


def export_bundle_model(weights: PathLike, card: PathLike, out: PathLike) -> Path:
    """Write LayerSeg weights as a MONAI bundle's ``models/model.pt``.

    ``weights`` (``.safetensors``) must fit the network its model card ``card`` describes; the
    result is ``torch.save`` of the plain BasicUNet state dict, which MONAI's ``CheckpointLoader``
    and ``torch.load(weights_only=True)`` read. ``out`` is written atomically (a failed export
    leaves no file and an existing one untouched); its folder is created. Returns ``out``.
    """
    info = read_model_card(card)["config"]
    net = basic_unet(info["features"], info["in_channels"], info["out_channels"])
    load_weights(net, weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    _layerseg.write_bytes_atomic(out, buffer.getvalue())
    return out
