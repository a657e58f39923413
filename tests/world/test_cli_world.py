"""`dimefm world images|texts` end to end through the typer app."""

from __future__ import annotations

import tarfile

import pytest
from typer.testing import CliRunner

from dimefm_pipeline.cli import app, main


def test_world_images_and_texts_commands_write_corpora(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["world", "images", str(tmp_path / "wds"), "--n", "7", "--format", "webdataset",
                              "--per-shard", "4", "--seed", "3"])
    assert res.exit_code == 0, res.output
    shards = sorted((tmp_path / "wds").glob("*.tar"))
    assert len(shards) == 2
    with tarfile.open(shards[1]) as tf:
        assert tf.getnames() == ["00000004.png", "00000005.png", "00000006.png"]
    res = runner.invoke(app, ["world", "texts", str(tmp_path / "s.txt"), "--n", "50", "--distractor-share", "0"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 50


def test_bad_format_is_a_one_line_error_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["world", "texts", str(tmp_path / "s.csv"), "--n", "5", "--format", "csv"])
    assert exc.value.code == 2
    assert "unknown text format 'csv'" in capsys.readouterr().err
