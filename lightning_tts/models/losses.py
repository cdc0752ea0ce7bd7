"""Training losses of the acoustic model, one small class each."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lightning_tts.models.acoustic import AcousticOutput, lengths_to_mask
from lightning_tts.models.alignment import ForwardSumLoss, binarization_loss


def masked_l1(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over real frames: pred/target (B, T, C), lengths (B,)."""
    t = min(pred.shape[1], target.shape[1])
    mask = lengths_to_mask(lengths.clamp_max(t), t)[:, :, None].to(pred.dtype)
    return (torch.abs(pred[:, :t] - target[:, :t]) * mask).sum() / (mask.sum() * pred.shape[2]).clamp_min(1.0)


@dataclass
class LossConfig:
    """Weights and schedule of ``AcousticLoss`` (the ``loss`` config section).

    Attributes:
        duration_weight: weight of the log-duration MSE.
        align_weight: weight of the forward-sum (CTC) alignment loss.
        bin_weight: final weight of the binarisation loss.
        bin_start: step at which the binarisation loss starts.
        bin_warmup: steps over which its weight ramps from 0 to ``bin_weight``.
        variance_weight: weight of the pitch and energy MSEs.
    """

    duration_weight: float = 0.1
    align_weight: float = 1.0
    bin_weight: float = 1.0
    bin_start: int = 300
    bin_warmup: int = 300
    variance_weight: float = 0.1


class AcousticLoss(nn.Module):
    """mel L1 + duration MSE (log domain) + forward-sum alignment + warmed-up binarisation (+ pitch/energy).

    With a postnet, ``mel_loss`` scores the refined output and ``decoder_mel_loss`` (added with weight 1,
    as Tacotron 2 sums the losses before and after its postnet) the decoder's mel before it, so the decoder
    keeps learning the whole spectrum.

    Args:
        config: weights and schedule (``LossConfig``).
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        c = config
        self.duration_weight, self.align_weight, self.bin_weight = c.duration_weight, c.align_weight, c.bin_weight
        self.bin_start, self.bin_warmup, self.variance_weight = c.bin_start, c.bin_warmup, c.variance_weight
        self.forward_sum = ForwardSumLoss()

    def bin_scale(self, step: int) -> float:
        """Binarisation weight at ``step``: 0 before ``bin_start``, then a linear ramp to ``bin_weight``."""
        return self.bin_weight * min(1.0, max(0.0, (step - self.bin_start) / max(1, self.bin_warmup)))

    def forward(self, out: AcousticOutput, mels: torch.Tensor, mel_lengths: torch.Tensor,
                token_lengths: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """All terms and their weighted sum ``loss``; ``out`` must be teacher-forced."""
        assert out.attn_log is not None and out.attn_soft is not None and out.attn_hard is not None
        token_mask = lengths_to_mask(token_lengths, out.log_durations.shape[1]).to(mels.dtype)
        mel_loss = masked_l1(out.mel, mels, mel_lengths)
        dur_target = torch.log1p(out.durations.to(mels.dtype))
        duration_loss = ((out.log_durations - dur_target) ** 2 * token_mask).sum() / token_mask.sum()
        align_loss = self.forward_sum(out.attn_log, token_lengths, mel_lengths)
        bin_loss = binarization_loss(out.attn_hard, out.attn_soft)
        terms = {"mel_loss": mel_loss, "duration_loss": duration_loss, "align_loss": align_loss, "bin_loss": bin_loss}
        total = mel_loss + self.duration_weight * duration_loss + self.align_weight * align_loss
        if out.decoder_mel is not None:
            terms["decoder_mel_loss"] = masked_l1(out.decoder_mel, mels, mel_lengths)
            total = total + terms["decoder_mel_loss"]
        total = total + self.bin_scale(step) * bin_loss
        for name in ("pitch", "energy"):
            pred, target = getattr(out, name), getattr(out, f"{name}_target")
            if pred is not None and target is not None:
                terms[f"{name}_loss"] = ((pred - target) ** 2 * token_mask).sum() / token_mask.sum()
                total = total + self.variance_weight * terms[f"{name}_loss"]
        terms["loss"] = total
        return terms
