"""Every entry a source holds ends as exactly one of: cached, or recorded with its reason (texts
also: skipped as a duplicate). Readers list a block's entries by plain enumeration (`Listing`:
every file, tar member, row or line) before they interpret them, and `accounted` holds each record
they give against that list: an entry that gives no record, or two, is a dimefm bug, and the run
stops naming the entries instead of dropping them silently. Stage one checks the same balance again
per unit when it writes it, and per source in the manifest at the end of every encode.
"""

from __future__ import annotations

from collections import Counter

from dimefm_pipeline.core.errors import DimefmError
from dimefm_pipeline.formats.base import Listing


class AccountingError(DimefmError):
    """Listed entries and the records given for them disagree: a bug in dimefm, not in the data."""


def bug(where: str, what: str) -> AccountingError:
    return AccountingError(f"dimefm bug: {where}: {what} (the run stopped rather than lose them silently; please "
                           "report it with this line)")


def _named(ids, names: dict, limit: int = 5) -> str:
    shown = [str(names.get(i, i)) for i in list(ids)[:limit]]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(shown) + more


class Tally:
    """What a read block listed, once its records are all given."""

    def __init__(self):
        self.listed = 0


def accounted(items, where: str, tally: Tally, *, several: bool = False):
    """The records of `items` (a reader's output: `Listing`s and records), checked against its
    listings when the last one is given. A record names its entry by `entry` (texts) or `pos`;
    `several`: an entry may give more than one record (a TSV line with several captions)."""
    listed: list = []
    names: dict = {}
    seen: list = []
    for item in items:
        if isinstance(item, Listing):
            listed.extend(item.entries)
            names.update(zip(item.entries, item.names))
            continue
        entry = getattr(item, "entry", None)
        seen.append(item.pos if entry is None else entry)
        yield item
    counts = Counter(seen)
    missing = [e for e in listed if e not in counts]
    extra = [e for e in counts if e not in set(listed)]
    twice = [] if several else [e for e, n in counts.items() if n > 1]
    if missing:
        raise bug(where, f"{len(missing)} listed entries gave no record: {_named(missing, names)}")
    if extra:
        raise bug(where, f"{len(extra)} records for entries that were not listed: {_named(extra, names)}")
    if twice:
        raise bug(where, f"{len(twice)} entries gave more than one record: {_named(twice, names)}")
    tally.listed += len(seen)


def check_unit(where: str, listed: int, cached: int, recorded: int, duplicates: int = 0) -> None:
    """A finished unit: every record it was given is cached, recorded or a duplicate."""
    if listed != cached + recorded + duplicates:
        raise bug(where, f"{listed} entries read, but {cached} cached + {recorded} recorded + {duplicates} duplicates "
                         f"= {cached + recorded + duplicates}")
