"""One progress display for every rank of stage one: each rank writes its count to
`CACHE/_progress/rank-R.json` every few seconds; rank 0 adds the others' to its own."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from dimefm_pipeline.formats import format_named


class RankProgress:
    """Records read so far by every rank, for one progress display on rank 0: each rank writes its
    count to `CACHE/_progress/rank-R.json` every few seconds; rank 0 adds the others' to its own.
    The total is the planned number of records when every unit's is known (folders, Parquet, sentence
    files), else the number of units."""

    EVERY = 5.0  # seconds between writes (and reads)

    def __init__(self, cache_dir: Path, rank: int, world: int, pending: list):
        self.folder, self.rank, self.world = cache_dir / "_progress", rank, world
        counts = [format_named(u.fmt).planned_records(u) for u in pending]
        self.by_records = all(c is not None for c in counts)
        self.total = sum(counts) if self.by_records else len(pending)
        self.mine = {"records": 0, "items": 0, "units": 0}
        self.others = {"records": 0, "items": 0, "units": 0}
        self._last = 0.0
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank-{rank}.json").unlink(missing_ok=True)

    def add(self, *, records: int = 0, items: int = 0, units: int = 0, refresh: bool = False) -> None:
        self.mine["records"] += records
        self.mine["items"] += items
        self.mine["units"] += units
        if time.time() - self._last >= self.EVERY or units or refresh:
            self._last = time.time()
            if self.rank:
                _write_json(self.folder / f"rank-{self.rank}.json", self.mine)
            elif self.world > 1:
                self.others = {"records": 0, "items": 0, "units": 0}
                for r in range(1, self.world):
                    for k, v in _read_json(self.folder / f"rank-{r}.json").items():
                        self.others[k] += v

    def flush(self) -> None:
        """This rank's last count (the other ranks' display may lag it by up to EVERY seconds)."""
        if self.rank:
            _write_json(self.folder / f"rank-{self.rank}.json", self.mine)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def done(self) -> tuple[float, int]:
        """(completed in the display's unit, items cached) over all ranks."""
        key = "records" if self.by_records else "units"
        return self.mine[key] + self.others[key], self.mine["items"] + self.others["items"]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
