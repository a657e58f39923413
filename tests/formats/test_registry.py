"""Source formats are one module each: the registry finds them, and nothing outside them asks which
format a source is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dimefm_pipeline.formats as formats
from dimefm_pipeline.encode.config import EncodeConfig
from dimefm_pipeline.encode.run import encode
from tests.conftest import plain_duckdb

PACKAGE = Path(formats.__file__).resolve().parents[1]
FORMAT_MODULES = {"folder.py", "webdataset.py", "parquet.py", "tsv.py", "lines.py"}

NEW_FORMAT = '''
from dimefm_pipeline.formats.base import check_text
from dimefm_pipeline.formats.lines import LineFormat


class CommaText(LineFormat):
    name = "commatext"
    suffixes = {"text": (".ctxt",)}

    def parse(self, lineno, line, options):
        key, _, text = line.partition(",")
        yield key, *check_text(text)


FORMATS = (CommaText(),)
'''


def test_every_format_is_found():
    assert set(formats.registry()) == {"folder", "webdataset", "parquet", "tsv", "txt", "jsonl"}


def _asks_for_a_format(node: ast.Compare) -> bool:
    """`spec.fmt == "parquet"`, `unit.fmt in ("tsv", ...)`: a source's or unit's format compared with a
    format's name (the world generator's own output settings, `cfg.fmt`, are another thing)."""
    sides = [node.left, *node.comparators]
    asked = any(isinstance(s, ast.Attribute) and s.attr in ("fmt", "format")
                and not (isinstance(s.value, ast.Name) and s.value.id.endswith("cfg")) for s in sides)
    names = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return asked and bool(names & set(formats.registry()))


def test_no_module_outside_the_formats_asks_for_a_format_by_name():
    """A comparison with a format's name outside that format's module would be a second place to
    edit for a format."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for path in PACKAGE.rglob("*.py")
             if not (path.parent.name == "formats" and path.name in FORMAT_MODULES)
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Compare) and _asks_for_a_format(node)]
    assert found == []


@pytest.fixture
def extra_format(tmp_path, monkeypatch):
    """A sentence format added as one module (here in a folder on the package's search path)."""
    folder = tmp_path / "more_formats"
    folder.mkdir()
    (folder / "commatext.py").write_text(NEW_FORMAT)
    monkeypatch.setattr(formats, "__path__", [*formats.__path__, str(folder)])
    formats.registry.cache_clear()
    yield
    formats.registry.cache_clear()


def test_a_new_format_is_one_module(extra_format, teacher, tmp_path):
    (tmp_path / "s.ctxt").write_text("a,a red circle\nb,a blue square\nc,\n")
    cache = tmp_path / "m.duckdb"
    s = encode(EncodeConfig("text", (str(tmp_path / "s.ctxt"),), str(cache), teacher=str(teacher[0]),
                            pretrained=str(teacher[1]), workers=0), progress=False)
    assert (s.items, s.errors) == (2, 1)
    con = plain_duckdb(cache)
    assert con.execute("SELECT format FROM sources").fetchall() == [("commatext",)]
    assert con.execute("SELECT key, text FROM text_embeddings ORDER BY key").fetchall() == [("a", "a red circle"),
                                                                                              ("b", "a blue square")]
    con.close()
