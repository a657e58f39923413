"""`dimefm info --verify`: every cache file against its recorded sha256, and the cache folder against
the manifest (files it does not know, files it knows that are gone)."""

from __future__ import annotations

from dimefm_pipeline.core.progress import progress_bar
from dimefm_pipeline.store.files import sha256_file
from dimefm_pipeline.store.manifest.connection import RUNS_DIR
from dimefm_pipeline.store.manifest.inspect import cache_files
from dimefm_pipeline.store.shards import COMMITS_DIR


def verify_cache(man, *, progress: bool = True) -> tuple[list[str], int, int]:
    """Findings (one line each), files checked and bytes hashed. `man`: a read-only Manifest."""
    cache_dir = man.cache_dir
    files = [(kind, cache_dir / rel, checksum) for kind, rel, checksum in cache_files(man)]
    findings, known, total = [], set(), 0
    sizes = {p: p.stat().st_size for _, p, _ in files if p.is_file()}
    with progress_bar(progress) as bar:
        task = bar.add_task("verify files", total=len(files))
        for kind, path, checksum in files:
            known.add(path)
            if path not in sizes:
                findings.append(f"missing {kind} file: {path}")
            elif sha256_file(path) != checksum:
                findings.append(f"{kind} file does not match its checksum: {path}")
            total += sizes.get(path, 0)
            bar.update(task, advance=1, description=f"verify files ({total / 2**20:,.1f} MiB hashed)")
    for path in sorted(p for p in cache_dir.rglob("*") if p.is_file()):
        if path in known:
            continue
        if path.parent.name in ("_progress", RUNS_DIR) or path.name == ".encode.lock":
            continue  # a running encode's progress counts, the locks of runs in progress, the stage-one lock
        if path.parent.name == COMMITS_DIR and path.parent.parent.parent.name == "teachers":
            findings.append(f"commit marker of an added teacher's shard (the next `dimefm encode teacher` with "
                            f"that teacher commits it): {path}")
        elif path.parent.name == COMMITS_DIR:
            findings.append(f"commit marker of a unit not in the manifest (the next encode commits it): {path}")
        else:
            findings.append(f"file not in the manifest: {path}")
    return findings, len(files), total
