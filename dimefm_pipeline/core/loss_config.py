"""The loss options as a torch-free dataclass, so configs and the CLI load without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dimefm_pipeline.core.options import option


COMBINES = ("mean", "mixture")  # how several teachers' targets combine (`losses.ensemble_losses`)


def direct_term_weights(w_vl, w_pvl, w_vl_text, w_pvl_text, w_pvl_mined, train_text: bool) -> dict:
    """Flag -> weight of P-VL, mined P-VL and, with a student text tower, its VL and P-VL twins: the
    terms whose student side holds a teacher's own features (text weights default to the image ones)."""
    out = {"--w-pvl": w_pvl, "--w-pvl-mined": w_pvl_mined}
    if train_text:
        out["--w-vl-text"] = w_vl if w_vl_text is None else w_vl_text
        out["--w-pvl-text"] = w_pvl if w_pvl_text is None else w_pvl_text
    return out


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

    def direct_weights(self, train_text: bool) -> dict:
        """Flag -> weight of the terms that compare the student's features with a teacher's directly
        (a teacher of another dim than the student's cannot give them)."""
        return direct_term_weights(self.w_vl, self.w_pvl, self.w_vl_text, self.w_pvl_text, self.w_pvl_mined, train_text)

    def as_kwargs(self) -> dict:
        """The options as keyword arguments of `dimefm_losses`."""
        return asdict(self)
