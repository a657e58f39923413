"""The accounting itself: a reader whose records do not match its listing stops the run, naming the
entries, instead of losing them silently."""

from __future__ import annotations

import pytest

from dimefm_pipeline.formats.accounting import AccountingError, Tally, accounted, check_unit
from dimefm_pipeline.formats.base import ImageRecord, Listing, TextRecord


def _drain(items, **kw):
    tally = Tally()
    out = list(accounted(items, "unit 0 of source 1", tally, **kw))
    return out, tally.listed


def test_every_listed_entry_gives_one_record():
    records = [ImageRecord(0, "a.png", 0), ImageRecord(1, "b.png", 1, error="not an image")]
    out, listed = _drain([Listing((0, 1), ("a.png", "b.png")), *records])
    assert out == records and listed == 2


def test_an_entry_without_a_record_stops_the_run_naming_it():
    with pytest.raises(AccountingError, match=r"dimefm bug: unit 0 of source 1: 1 listed entries gave no record: b\.png"):
        _drain([Listing((0, 1), ("a.png", "b.png")), ImageRecord(0, "a.png", 0)])


def test_an_entry_given_twice_or_a_record_not_listed_stops_the_run():
    with pytest.raises(AccountingError, match="more than one record: 0"):
        _drain([Listing((0,)), ImageRecord(0, "a", 0), ImageRecord(0, "a", 0)])
    with pytest.raises(AccountingError, match="not listed: 7"):
        _drain([Listing((0,)), ImageRecord(0, "a", 0), ImageRecord(7, "x", 0)])
    with pytest.raises(AccountingError, match="not listed: (the rest|k)"):
        _drain([Listing(("j",)), ImageRecord(0, "j", 0, entry="j"), ImageRecord(1, "k", 0, entry="k")])


def test_a_line_may_give_several_sentences_but_not_none():
    out, listed = _drain([Listing((4, 5)), TextRecord(0, "k#0", "a", None, 4), TextRecord(1, "k#1", "b", None, 4),
                          TextRecord(2, "6", None, "empty line", 5)], several=True)
    assert listed == 3
    with pytest.raises(AccountingError, match="gave no record: 5"):
        _drain([Listing((4, 5)), TextRecord(0, "k#0", "a", None, 4)], several=True)
    with pytest.raises(AccountingError, match="not listed: -1"):  # a reader that names no entry is caught too
        _drain([Listing((4,)), TextRecord(0, "k", "a", None, 4), TextRecord(1, "x", "b", None)], several=True)


def test_a_unit_balances_its_records_against_items_errors_and_duplicates():
    check_unit("u", 10, 6, 3, 1)
    with pytest.raises(AccountingError, match="10 entries read, but 6 cached \\+ 2 recorded \\+ 1 duplicates = 9"):
        check_unit("u", 10, 6, 2, 1)
