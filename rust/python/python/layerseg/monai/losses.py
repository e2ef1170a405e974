"""The training losses as ``torch.nn.Module`` s, the same computations as LayerSeg's Rust trainer
(``rust/torch/src/losses.rs``), and the network's output channels."""

from __future__ import annotations

import torch

#: Output channel of the healthy (normal) layer n̂, as in the Rust network.
HEALTHY_CHANNEL = 0
#: Output channel of the tumour layer ŝ.
TUMOUR_CHANNEL = 1
#: Output channel of the mask logit m̂; ``sigmoid`` of it is the tumour probability.
MASK_CHANNEL = 2

#: The Dice loss's smoothing constant, in numerator and denominator (as in the Rust loss).
DICE_SMOOTH = 1e-7


def mask_probability(pred: torch.Tensor) -> torch.Tensor:
    """``sigmoid`` of the mask channel of a channel-first prediction ``(3, ...)``, kept as one
    channel ``(1, ...)`` (a ``MetaTensor`` stays one). For a batch use ``pred[:, 2:3]``."""
    if pred.ndim < 1 or pred.shape[0] != 3:
        raise ValueError(
            "expected a channel-first prediction with 3 channels (healthy layer, tumour layer, "
            f"mask logit), got shape {tuple(pred.shape)}"
        )
    return torch.sigmoid(pred[MASK_CHANNEL : MASK_CHANNEL + 1].float())


class _LayerSegLoss(torch.nn.Module):
    """What the two losses share: the weights of their named ``TERMS``, the check of the
    prediction's shape, the batch Dice on the mask channel, and ``forward`` as the weighted sum
    of :meth:`terms`."""

    TERMS: tuple[str, ...] = ()

    def __init__(self, **weights: float) -> None:
        super().__init__()
        self.weights = {name: float(weights[name]) for name in self.TERMS}

    @staticmethod
    def _check_prediction(input: torch.Tensor) -> None:
        if input.ndim != 5 or input.shape[1] != 3:
            raise ValueError(
                "prediction must be (B, 3, D, H, W): healthy layer, tumour layer, mask logit; "
                f"got {tuple(input.shape)}"
            )

    @staticmethod
    def _batch_dice(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 - (2·Σ p·target + 1e-7) / (Σ p + Σ target + 1e-7), one ratio over the batch."""
        intersection = (p * target).sum()
        return 1.0 - (2.0 * intersection + DICE_SMOOTH) / (p.sum() + target.sum() + DICE_SMOOTH)

    def _with_total(
        self, out: dict[str, torch.Tensor], device: torch.device
    ) -> dict[str, torch.Tensor]:
        out["total"] = sum(
            (self.weights[k] * out[k] for k in self.TERMS), torch.zeros((), device=device)
        )
        return out

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term as a differentiable float32 scalar, and their weighted sum as ``total``."""
        raise NotImplementedError

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(input, target)["total"]


class LayerDecompositionLoss(_LayerSegLoss):
    """The layer-decomposition training loss (Zhang et al. 2021; ``method.md`` section 5), the
    same computation as LayerSeg's Rust trainer (``rust/torch/src/losses.rs``).

    ``forward(input, target)``: ``input`` is the network output ``(B, 3, D, H, W)`` (healthy
    layer n̂, tumour layer ŝ, mask logit m̂); ``target`` stacks the targets the same way: healthy
    layer N, tumour layer T and the binary mask M. With p = sigmoid(m̂), everything in float32:

    - ``dice`` = 1 - (2·Σ p·M + 1e-7) / (Σ p + Σ M + 1e-7), one ratio over the whole batch;
    - ``healthy`` = mean |n̂ - N| and ``tumour`` = mean |ŝ - T| over every voxel;
    - ``healthy_in_tumour`` / ``tumour_in_tumour``: the same errors averaged over the tumour voxels
      (M > 0.5) only, and 0 unless the batch has both tumour and other voxels;
    - the loss is Σ weight · term, all weights 1 by default as in the paper.

    :meth:`terms` returns every term. MONAI trainers call it as ``loss_function(pred, label)``.
    """

    TERMS = ("dice", "healthy", "tumour", "healthy_in_tumour", "tumour_in_tumour")

    def __init__(
        self,
        dice: float = 1.0,
        healthy: float = 1.0,
        tumour: float = 1.0,
        healthy_in_tumour: float = 1.0,
        tumour_in_tumour: float = 1.0,
    ) -> None:
        super().__init__(
            dice=dice,
            healthy=healthy,
            tumour=tumour,
            healthy_in_tumour=healthy_in_tumour,
            tumour_in_tumour=tumour_in_tumour,
        )

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term as a differentiable float32 scalar, and their weighted sum as ``total``."""
        self._check_prediction(input)
        if target.shape != input.shape:
            raise ValueError(
                "target must be (B, 3, D, H, W) like the prediction (healthy layer, tumour layer, "
                f"mask); got {tuple(target.shape)} for a prediction {tuple(input.shape)}"
            )
        pred = input.float()
        target = target.float()
        healthy_t = target[:, HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1]
        tumour_t = target[:, TUMOUR_CHANNEL : TUMOUR_CHANNEL + 1]
        mask = target[:, MASK_CHANNEL : MASK_CHANNEL + 1]
        healthy_error = (pred[:, HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1] - healthy_t).abs()
        tumour_error = (pred[:, TUMOUR_CHANNEL : TUMOUR_CHANNEL + 1] - tumour_t).abs()
        p = torch.sigmoid(pred[:, MASK_CHANNEL : MASK_CHANNEL + 1])
        dice = self._batch_dice(p, mask)
        selected = (mask > 0.5).float()
        count = selected.sum()
        # 1 when the batch has tumour and non-tumour voxels, else 0; no device synchronisation.
        active = ((count > 0) & (count < selected.numel())).float()
        scale = active / count.clamp_min(1.0)
        out = {
            "dice": dice,
            "healthy": healthy_error.mean(),
            "tumour": tumour_error.mean(),
            "healthy_in_tumour": (healthy_error * selected).sum() * scale,
            "tumour_in_tumour": (tumour_error * selected).sum() * scale,
        }
        return self._with_total(out, p.device)


class FinetuneLoss(_LayerSegLoss):
    """The supervised fine-tuning loss, the same computation as LayerSeg's Rust
    ``finetune_losses`` (``rust/torch/src/losses.rs``; ``layerseg finetune``).

    ``forward(input, target)``: ``input`` is the network output ``(B, 3, D, H, W)``; ``target``
    is ``(B, 2, D, H, W)``: channel 0 the binary label y, channel 1 the image x the network saw
    (or ``(B, 1, D, H, W)``, the label alone, which drops the two layer terms). With m̂ the mask
    logit, p = sigmoid(m̂), n̂ / ŝ the healthy / tumour layers, everything in float32:

    - ``dice`` = 1 - (2·Σ p·y + 1e-7) / (Σ p + Σ y + 1e-7), one ratio over the whole batch;
    - ``bce`` = mean binary cross-entropy of m̂ against y;
    - ``healthy`` = mean |n̂ - x| over the voxels outside the labelled tumour (y <= 0.5);
    - ``recomposition`` = mean |ŝ·p' + n̂·(1 - p') - x| with p' = p detached;
    - the loss is Σ weight · term; the weights default to Rust's (1, 1, 1, 0.1).

    The layer terms keep the decomposition usable while the labels move the shared decoder.
    """

    TERMS = ("dice", "bce", "healthy", "recomposition")

    def __init__(
        self,
        dice: float = 1.0,
        bce: float = 1.0,
        healthy: float = 1.0,
        recomposition: float = 0.1,
    ) -> None:
        super().__init__(dice=dice, bce=bce, healthy=healthy, recomposition=recomposition)

    def terms(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term as a differentiable float32 scalar, and their weighted sum as ``total``."""
        self._check_prediction(input)
        if (
            target.ndim != 5
            or target.shape[1] not in (1, 2)
            or target.shape[0] != input.shape[0]
            or target.shape[2:] != input.shape[2:]
        ):
            raise ValueError(
                "target must be (B, 2, D, H, W) (label, image) or (B, 1, D, H, W) (label) on the "
                f"prediction's grid; got {tuple(target.shape)} for a prediction "
                f"{tuple(input.shape)}"
            )
        pred = input.float()
        target = target.float()
        y = target[:, :1]
        logit = pred[:, MASK_CHANNEL : MASK_CHANNEL + 1]
        p = torch.sigmoid(logit)
        dice = self._batch_dice(p, y)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, y)
        zero = torch.zeros((), device=pred.device)
        healthy_l1, recomposition = zero, zero
        if target.shape[1] == 2:
            x = target[:, 1:2]
            healthy = pred[:, HEALTHY_CHANNEL : HEALTHY_CHANNEL + 1]
            tumour = pred[:, TUMOUR_CHANNEL : TUMOUR_CHANNEL + 1]
            outside = (y <= 0.5).float()
            healthy_l1 = ((healthy - x).abs() * outside).sum() / outside.sum().clamp_min(1.0)
            recomposed = (tumour - healthy) * p.detach() + healthy
            recomposition = (recomposed - x).abs().mean()
        out = {"dice": dice, "bce": bce, "healthy": healthy_l1, "recomposition": recomposition}
        return self._with_total(out, pred.device)
