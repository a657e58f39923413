"""CLI options come from the config dataclasses: every field has its option, with the config's default,
and the flags scripts use keep their names."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from dimefm_pipeline.encode.config import IMAGE_ONLY
from dimefm_pipeline.cli import app
from dimefm_pipeline.cli.options import config_options
from dimefm_pipeline.core.loss_config import LossConfig
from dimefm_pipeline.distill.config import DistillConfig
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.mine.config import MineConfig
from dimefm_pipeline.world.teacher import TeacherTrainConfig

# The flags of each command before its options were made from the configs: scripts rely on them.
FLAGS = {
    ("distill",): ["--cache", "--out", "--student", "--init", "--text-tower", "--batch-size", "--text-batch-size",
                   "--epochs", "--steps", "--lr", "--lr-min", "--warmup", "--warmup-lr", "--wd", "--beta1", "--beta2",
                   "--eps", "--grad-clip-norm", "--workers", "--augment", "--views", "--text-filter", "--mined-share",
                   "--w-vl", "--w-pvl", "--w-udist", "--w-pvl-mined", "--tau-vl", "--tau-pvl", "--tau-udist",
                   "--local-loss", "--checkpoint-every", "--log-every", "--resume", "--allow-schedule-change",
                   "--stop-after", "--seed", "--precision", "--tensorboard", "--verify-cache", "--item-timeout",
                   "--micro-batch"],
    ("mine",): ["--cache", "--k", "--engine", "--nprobe", "--gpu", "--cpu", "--image-block", "--text-block"],
    ("encode", "images"): ["--cache", "--cache-dir", "--teacher", "--pretrained", "--batch-size", "--workers",
                           "--shard-size", "--precision", "--item-timeout", "--views", "--view-augment", "--view-seed",
                           "--image-column", "--key-column"],
    ("encode", "texts"): ["--cache", "--cache-dir", "--teacher", "--pretrained", "--batch-size", "--workers",
                          "--shard-size", "--precision", "--item-timeout", "--text-field", "--key-field", "--text-column",
                          "--key-column"],
    ("world", "train-teacher"): ["--out", "--steps", "--batch-size", "--lr", "--seed", "--threads", "--install"],
}
CONFIGS = {("distill",): (DistillConfig, LossConfig), ("mine",): (MineConfig,), ("encode", "images"): (EncodeConfig,),
           ("encode", "texts"): (EncodeConfig,), ("world", "train-teacher"): (TeacherTrainConfig,)}


def _command(path):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", list(FLAGS), ids=" ".join)
def test_the_flags_scripts_use_are_all_there(path):
    opts = {o for p in _command(path).params for o in (*p.opts, *p.secondary_opts)}
    assert set(FLAGS[path]) <= opts, set(FLAGS[path]) - opts


@pytest.mark.parametrize("path", list(CONFIGS), ids=" ".join)
def test_every_config_field_is_an_option_with_the_configs_default(path):
    params = {p.name: p for p in _command(path).params}
    for cls in CONFIGS[path]:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli"):
                continue
            if path == ("encode", "texts") and f.name in IMAGE_ONLY:
                continue  # views and image limits are images'
            if isinstance(f.default, tuple):
                assert tuple(params[f"{f.name}__{i}"].default for i in range(len(f.default))) == f.default
            elif f.default is dataclasses.MISSING:
                assert params[f.name].required, f.name
            else:
                assert params[f.name].default == f.default, f.name


def _parsed(args):
    """The DistillConfig a command made of DistillConfig's and LossConfig's options builds from `args`."""
    got = []
    cli = typer.Typer()

    @cli.command()
    @config_options(DistillConfig, LossConfig)
    def run(given: dict):
        got.append(DistillConfig.from_dict(given))

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return got[0]


def test_options_left_out_give_the_configs_defaults_and_given_ones_land_in_their_fields():
    assert _parsed(["--cache", "c.duckdb", "--out", "o"]) == DistillConfig("c.duckdb", "o")
    cfg = _parsed(["--cache", "c.duckdb", "--out", "o", "--beta2", "0.98", "--wd", "0.1", "--lr-min", "1e-6", "--w-vl", "0.5",
                   "--local-loss", "--resume", "--steps", "7"])
    assert cfg == DistillConfig("c.duckdb", "o", betas=(0.9, 0.98), weight_decay=0.1, min_lr=1e-6, steps=7, resume=True,
                                loss=LossConfig(w_vl=0.5, local_loss=True))
