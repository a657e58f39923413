"""A distill run answers SIGINT and SIGTERM (a checkpoint of the step it stopped at, the run recorded
`interrupted`, the exact command that resumes it, exit 130 / 143), owns its --out folder (a second run
there is refused), and its record in the manifest stays true while it trains: only a run whose
process is gone is marked `interrupted`."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time

import duckdb

from dimefm_pipeline.store.manifest import Manifest
from tests.conftest import run_cli

STEPS = 100000  # far more than the test lets it train: it is always stopped


def _start(cache, student, out, *extra):
    args = ["distill", "--cache", cache, "--out", out, "--student", student, "--steps", str(STEPS), "--batch-size", "8",
            "--text-batch-size", "8", "--workers", "2", "--augment", "none", "--log-every", "1",
            "--checkpoint-every", "1000", *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "dimefm_pipeline", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _steps(out) -> list[int]:
    try:
        with open(out / "metrics.csv", newline="") as f:
            return [int(r["step"]) for r in csv.DictReader(f)]
    except (FileNotFoundError, KeyError):
        return []


def _wait_for_steps(proc, out, n, timeout=120):
    t0 = time.monotonic()
    while len(_steps(out)) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - t0 < timeout, "the run did not train"
        time.sleep(0.2)


def _runs(cache):
    con = duckdb.connect(str(cache), read_only=True)
    try:
        return con.execute("SELECT run_id, kind, status FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


def test_sigint_saves_the_step_records_interrupted_and_prints_the_resume_command(cache_copy, tmp_path):
    cache, student = cache_copy
    out = tmp_path / "out dir, o'brien é"
    proc = _start(cache, student, out)
    _wait_for_steps(proc, out, 3)
    # a reopen of the manifest by another process while the run trains leaves its record alone
    Manifest(cache).close()
    assert _runs(cache)[-1][1:] == ("distill", "running")
    # a second run on the same --out is refused while the first trains, and writes nothing there
    second = run_cli("distill", "--cache", cache, "--out", out, "--student", student, "--steps", "5", "--batch-size", "8",
                     "--log-every", "1")
    assert second.returncode == 2 and "another dimefm distill is writing to --out" in second.stderr, second.stderr
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group, loader workers included
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    line = [x for x in err.splitlines() if x.startswith("interrupted: ")]
    assert len(line) == 1 and "Traceback" not in err, err[-3000:]
    steps = _steps(out)
    stopped = steps[-1]
    assert steps == list(range(1, stopped + 1))  # every step logged once, the second run logged nothing
    assert (out / "checkpoints" / f"step_{stopped:08d}.pt").exists()  # the step it stopped at is saved
    assert _runs(cache)[-1][1:] == ("distill", "interrupted")
    resume = line[0].split("Resume with: ", 1)[1]
    words = shlex.split(resume)
    assert words[:2] == ["dimefm", "distill"] and "--resume" in words and str(out) in words
    r = run_cli(*words[1:], "--stop-after", "2")  # the printed command, as a shell would run it
    assert r.returncode == 0, r.stderr[-3000:]
    assert _steps(out) == list(range(1, stopped + 3))  # it went on from the saved step: none lost, none twice
    assert _runs(cache)[-1][2] == "stopped"


def test_sigterm_exits_143_and_a_killed_run_is_marked_interrupted_by_the_next_writer(cache_copy, tmp_path):
    cache, student = cache_copy
    proc = _start(cache, student, tmp_path / "a")
    _wait_for_steps(proc, tmp_path / "a", 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "interrupted: distill stopped by SIGTERM" in err, err[-3000:]
    assert _runs(cache)[-1][2] == "interrupted"
    proc = _start(cache, student, tmp_path / "b")
    _wait_for_steps(proc, tmp_path / "b", 2)
    # SIGKILL to the job (as a scheduler ends one): nothing runs, the record says `running` until a
    # writer sees the process is gone. (Loader workers forked before the kill share the run's lock
    # until they notice their parent is gone.)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _runs(cache)[-1][2] == "running"
    Manifest(cache).close()
    assert _runs(cache)[-1][2] == "interrupted"


def test_a_full_disk_at_a_checkpoint_is_one_error_and_the_resume_completes(cache_copy, tmp_path):
    import resource

    cache, student = cache_copy
    out = tmp_path / "out"
    args = ["distill", "--cache", cache, "--out", out, "--student", student, "--steps", "6", "--batch-size", "8",
            "--text-batch-size", "8", "--workers", "0", "--augment", "none", "--log-every", "1", "--checkpoint-every", "2"]
    r = run_cli(*args, "--stop-after", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    saved = out / "checkpoints" / "step_00000002.pt"
    limit = saved.stat().st_size - 1  # the next checkpoint no longer fits; the manifest and the metrics do
    assert cache.stat().st_size < limit

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "dimefm_pipeline", *map(str, args), "--resume"], capture_output=True,
                       text=True, preexec_fn=full_disk, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("error: cannot write the checkpoint of step 4") and "File too large" in lines[0]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.pt"]  # kept whole, no partial file
    assert _runs(cache)[-1][2] == "failed"
    r = run_cli(*args, "--resume")  # space freed
    assert r.returncode == 0, r.stderr[-3000:]
    assert _steps(out) == list(range(1, 7))  # the steps logged by the failed run are redone once, none lost
