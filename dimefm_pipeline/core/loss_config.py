"""The loss options as a torch-free dataclass, so configs and the CLI load without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LossConfig:
    """The loss options of recipes and the CLI: `dimefm_losses(..., train_text=..., **cfg.as_kwargs())`.
    Whether the mirrored text-tower terms are trained follows from the text tower (a student's own
    tower trains them; the teacher's cannot), so it is not an option here."""

    logit_scale: float = 100.0  # fixed similarity scale s; the reference does not learn it
    tau_vl: float = 1.0  # temperature of the image-text terms
    tau_pvl: float = 3.0  # temperature of the pseudo-caption terms (also the mined variant)
    tau_udist: float = 7.0  # temperature of the uni-modal terms
    w_vl: float = 0.7  # weight of VL in total
    w_pvl: float = 0.3  # weight of P-VL in total
    w_udist: float = 0.0  # weight of UDist in total (off in the reference's published run)
    w_vl_text: float | None = None  # None: same as w_vl (the text-tower terms are on with a student text tower)
    w_pvl_text: float | None = None  # None: same as w_pvl
    w_udist_text: float | None = None  # None: same as w_udist
    w_pvl_mined: float = 0.0  # weight of P-VL with mined sentences as pseudo captions
    local_loss: bool = False  # rows: local batch only, columns: global batch (under DDP)

    def as_kwargs(self) -> dict:
        """The options as keyword arguments of `dimefm_losses`."""
        return asdict(self)
