"""`dimefm mine` and `dimefm distill`: stage two. Their options are the fields of `MineConfig`,
`DistillConfig` and its `LossConfig` (defaults, help texts and flags are written there)."""

from __future__ import annotations


from dimefm_pipeline.cli import app, command_line
from dimefm_pipeline.cli.options import config_options
from dimefm_pipeline.core.loss_config import LossConfig
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.mine.config import MineConfig


@app.command("mine")
@config_options(MineConfig)
def mine(given: dict):
    """Pseudo-pair mining: the top-k cached sentences of every cached image, stored in the manifest.

    Under torchrun, ranks take disjoint image blocks; a killed mining resumes from its finished blocks."""
    from dimefm_pipeline.app.summaries import print_mine_summary
    from dimefm_pipeline.mine.run import mine_cache

    s = mine_cache(MineConfig(**given), command=command_line())
    if s is not None:
        print_mine_summary(s)


@app.command("distill")
@config_options(DistillConfig, LossConfig)
def distill_cmd(given: dict):
    """Stage two: train a small student against the cached teacher embeddings (DIME-FM losses)."""
    cfg = DistillConfig.from_dict(given)  # option mistakes: before torch loads
    from dimefm_pipeline.app.summaries import print_distill_result
    from dimefm_pipeline.distill.train import distill

    result = distill(cfg, command=command_line())
    if result is not None:
        print_distill_result(result)
