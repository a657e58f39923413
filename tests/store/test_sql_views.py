"""The `*_embeddings` SQL views in a plain DuckDB client: from any working directory, after the
cache folder moved, in folders whose names hold spaces, quotes, commas and non-ASCII letters, and
with an error that says what to do where they cannot find their shards."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from dimefm_pipeline.store.manifest import Manifest

ODD = "o'brien, data é [1]"  # a quote, a comma, spaces, a non-ASCII letter and glob brackets

CLIENT = """
import sys, duckdb
path, setup = sys.argv[1], sys.argv[2:]
if setup and setup[0] == "attach":
    con = duckdb.connect()
    con.execute("ATTACH ? AS m (READ_ONLY)".replace("?", "'" + path.replace("'", "''") + "'"))
    con.execute("USE m")
    setup = setup[1:]
else:
    con = duckdb.connect(path, read_only=True)
for s in setup:
    con.execute(s)
print(con.execute("SELECT count(*) FROM image_embeddings").fetchall()[0][0],
      con.execute("SELECT count(*) FROM text_embeddings").fetchall()[0][0],
      con.execute("SELECT count(*) FROM image_embeddings i, text_embeddings t "
                  "WHERE list_cosine_similarity(i.embedding, t.embedding) > -2").fetchall()[0][0])
"""


def _client(path, cwd, *setup):
    """A plain DuckDB client in a process of its own (no dimefm import), started in `cwd`."""
    return subprocess.run([sys.executable, "-c", CLIENT, str(path), *setup], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def odd_cache(tiny_cache, tmp_path):
    """The tiny cache copied into a folder with an awkward name, two levels below `tmp_path`."""
    cache, _ = tiny_cache
    dst = tmp_path / ODD / "manifests"
    shutil.copytree(cache.parent, dst)
    with Manifest(dst / cache.name):  # a read-write open, as any dimefm command does
        pass
    return dst / cache.name


def test_views_read_from_any_folder_with_an_odd_folder_name(odd_cache, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    expected = "64 60 3840"
    for cwd, path in ((elsewhere, odd_cache),  # absolute path, another folder
                      (tmp_path / ODD, "manifests/" + odd_cache.name),  # relative path, as `duckdb -readonly manifests/run1.duckdb`
                      (odd_cache.parent, odd_cache.name),  # the manifest's own folder
                      ("/", odd_cache)):
        out = _client(path, cwd)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == expected.split(), (cwd, path)


def test_views_move_with_the_cache_folder(odd_cache, tmp_path):
    moved = tmp_path / "moved, é'"
    shutil.move(str(odd_cache.parent), str(moved))
    out = _client(moved / odd_cache.name, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["64", "60"]


def test_attached_manifest_says_what_to_do_then_works_with_a_search_path(tiny_cache, tmp_path):
    cache, _ = tiny_cache
    out = _client(cache, tmp_path, "attach")
    assert out.returncode != 0
    assert "SET file_search_path" in out.stderr and "open the manifest itself" in out.stderr
    out = _client(cache, tmp_path, "attach", f"SET file_search_path = '{cache.parent}'")
    assert out.returncode == 0, out.stderr


def test_a_changed_temp_directory_is_named_in_the_error(tiny_cache, tmp_path):
    cache, _ = tiny_cache
    out = _client(cache, tmp_path, f"SET temp_directory = '{tmp_path / 'scratch'}'")
    assert out.returncode != 0 and "temp_directory" in out.stderr


@pytest.mark.skipif(shutil.which("duckdb") is None, reason="the duckdb CLI is not installed")
def test_duckdb_cli_from_the_project_root(odd_cache, tmp_path):
    out = subprocess.run(["duckdb", "-readonly", f"{ODD}/manifests/{odd_cache.name}", "-csv", "-noheader", "-c",
                          "SELECT count(*) FROM image_embeddings"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "64"
