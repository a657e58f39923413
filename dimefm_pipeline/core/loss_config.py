"""The loss options as a torch-free dataclass, so configs and the CLI load without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dimefm_pipeline.core.options import option


@dataclass(frozen=True)
class LossConfig:
    """The loss options of recipes and the CLI: `dimefm_losses(..., train_text=..., **cfg.as_kwargs())`.
    Whether the mirrored text-tower terms are trained follows from the text tower (a student's own
    tower trains them; the teacher's cannot), so it is not an option here."""

    logit_scale: float = option(100.0, "Fixed similarity scale s (the reference does not learn it).")
    tau_vl: float = option(1.0, "Temperature of the image-text terms.")
    tau_pvl: float = option(3.0, "Temperature of the pseudo-caption terms (also the mined variant).")
    tau_udist: float = option(7.0, "Temperature of the uni-modal terms.")
    w_vl: float = option(0.7, "Weight of VL in the total loss.")
    w_pvl: float = option(0.3, "Weight of P-VL in the total loss.")
    w_udist: float = option(0.0, "Weight of UDist in the total loss (off in the reference's published run).")
    w_vl_text: float | None = option(None, "Weight of the text tower's VL term (default: --w-vl); the text-tower terms "
                                           "are trained with a student text tower.")
    w_pvl_text: float | None = option(None, "Weight of the text tower's P-VL term (default: --w-pvl).")
    w_udist_text: float | None = option(None, "Weight of the text tower's UDist term (default: --w-udist).")
    w_pvl_mined: float = option(0.0, "Weight of P-VL with mined sentences as pseudo captions.")
    local_loss: bool = option(False, "Under DDP: rows of the local batch only (columns stay global).")

    def as_kwargs(self) -> dict:
        """The options as keyword arguments of `dimefm_losses`."""
        return asdict(self)
