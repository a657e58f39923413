"""Two gloo ranks with `gather_features` reproduce one process on the concatenated batch.

What is compared, for a global batch split across 2 ranks:
- loss: with `local_loss=False` every rank's loss equals the single-process loss; with
  `local_loss=True` (equal local sizes) the mean of the two ranks' losses equals it.
- feature gradients: rank r's gradient on its own student features, divided by the world size (which
  is what DDP's gradient averaging does), equals the single-process gradient on those rows.
- parameter gradients: student towers wrapped in DistributedDataParallel end up with exactly the
  single-process parameter gradients after DDP's all-reduce average.
"""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dimefm_pipeline.core import distributed
from dimefm_pipeline.core.losses import dimefm_losses

WORLD = 2
DIM = 8
RTOL, ATOL = 1e-4, 1e-6

# name -> (loss options, image split, text split, reference mode)
CASES = {
    "reference_global": (dict(w_udist=0.2), [4, 4], [3, 3], True),
    "reference_local": (dict(w_udist=0.2, local_loss=True), [4, 4], [3, 3], True),
    "both_towers_global": (dict(w_udist=0.2, train_text=True, w_pvl_mined=0.1), [4, 4], [3, 3], False),
    "both_towers_local": (dict(w_udist=0.2, train_text=True, w_pvl_mined=0.1, local_loss=True), [4, 4], [3, 3], False),
    "uneven_global": (dict(w_udist=0.2, train_text=True, w_pvl_mined=0.1), [5, 3], [2, 4], False),
}


def _global_batch():
    g = torch.Generator().manual_seed(0)
    n, m = 8, 6
    ti = torch.randn(n, DIM, generator=g) + 1.0
    tt = torch.randn(m, DIM, generator=g) + 1.0
    return {
        "ti": ti,
        "tt": tt,
        "si": ti + 0.5 * torch.randn(n, DIM, generator=g),
        "st": tt + 0.5 * torch.randn(m, DIM, generator=g),
        "mined": torch.randn(n, 2, DIM, generator=g) + 1.0,
        "x_img": torch.randn(n, 5, generator=g),
        "x_txt": torch.randn(m, 3, generator=g),
    }


class _Towers(torch.nn.Module):
    """Stand-in student: a linear image tower and a linear text tower."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.image = torch.nn.Linear(5, DIM)
        self.text = torch.nn.Linear(3, DIM)

    def forward(self, x_img, x_txt):
        return self.image(x_img), self.text(x_txt)


def _feature_run(data, opts, reference, gather, rows=None, text_rows=None):
    """Loss terms and student-feature gradients for the given slice of the global batch."""
    rows = rows or slice(None)
    text_rows = text_rows or slice(None)
    ti, tt = data["ti"][rows], data["tt"][text_rows]
    si = data["si"][rows].clone().requires_grad_(True)
    st = tt if reference else data["st"][text_rows].clone().requires_grad_(True)
    mined = data["mined"][rows] if "w_pvl_mined" in opts else None
    out = dimefm_losses(ti, tt, si, st, mined_text=mined, gather=gather, **opts)
    out["total"].backward()
    return {
        "loss": {k: v.item() for k, v in out.items()},
        "grad_si": si.grad.clone(),
        "grad_st": None if reference else st.grad.clone(),
    }


def _module_run(data, opts, model, rows=None, text_rows=None, gather=False):
    rows = rows or slice(None)
    text_rows = text_rows or slice(None)
    si, st = model(data["x_img"][rows], data["x_txt"][text_rows])
    mined = data["mined"][rows] if "w_pvl_mined" in opts else None
    out = dimefm_losses(data["ti"][rows], data["tt"][text_rows], si, st, mined_text=mined, gather=gather, **opts)
    out["total"].backward()
    inner = model.module if hasattr(model, "module") else model
    return {name: p.grad.clone() for name, p in inner.named_parameters()}


def _slices(split, rank):
    start = sum(split[:rank])
    return slice(start, start + split[rank])


def _worker(rank, port, out_dir):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        CUDA_VISIBLE_DEVICES="",  # two ranks on one box: gloo on CPU whatever the box has
    )
    torch.set_num_threads(1)
    init = distributed.init_distributed()
    result = {
        "init": (init[0], init[1], init[2], str(init[3])),
        "is_main": distributed.is_main(),
        "broadcast": distributed.broadcast_object({"chosen_by": rank} if rank == 0 else None),
    }
    data = _global_batch()
    for name, (opts, img_split, txt_split, reference) in CASES.items():
        rows, text_rows = _slices(img_split, rank), _slices(txt_split, rank)
        result[name] = _feature_run(data, opts, reference, True, rows, text_rows)
    for local_loss in (False, True):
        opts = dict(w_udist=0.2, train_text=True, local_loss=local_loss)
        model = torch.nn.parallel.DistributedDataParallel(_Towers())
        result[f"ddp_local{local_loss}"] = _module_run(data, opts, model, _slices([4, 4], rank), _slices([3, 3], rank), gather=True)
    distributed.barrier()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    distributed.destroy()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
def test_init_and_object_helpers_under_two_gloo_ranks(ranks):
    assert [r["init"] for r in ranks] == [(0, 2, 0, "cpu"), (1, 2, 1, "cpu")]
    assert [r["is_main"] for r in ranks] == [True, False]
    assert [r["broadcast"] for r in ranks] == [{"chosen_by": 0}, {"chosen_by": 0}]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_process_on_the_concatenated_batch(ranks, case):
    opts, img_split, txt_split, reference = CASES[case]
    single = _feature_run(_global_batch(), opts, reference, gather=True)  # no process group: no-op

    for key, value in single["loss"].items():
        per_rank = [r[case]["loss"][key] for r in ranks]
        got = sum(per_rank) / WORLD if opts.get("local_loss") else per_rank
        expected = value if opts.get("local_loss") else [value] * WORLD
        assert got == pytest.approx(expected, rel=RTOL, abs=ATOL), key

    for grad, split in (("grad_si", img_split), ("grad_st", txt_split)):
        if single[grad] is None:
            continue
        averaged = torch.cat([r[case][grad] for r in ranks]) / WORLD
        assert [len(r[case][grad]) for r in ranks] == split
        torch.testing.assert_close(averaged, single[grad], rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("local_loss", [False, True])
def test_ddp_parameter_gradients_match_one_process(ranks, local_loss):
    opts = dict(w_udist=0.2, train_text=True, local_loss=local_loss)
    single = _module_run(_global_batch(), opts, _Towers())
    for r in ranks:
        got = r[f"ddp_local{local_loss}"]
        assert set(got) == set(single)
        for name in single:
            assert single[name].abs().sum() > 0, name
            torch.testing.assert_close(got[name], single[name], rtol=RTOL, atol=ATOL)


def test_outside_torchrun_everything_is_a_single_process_no_op(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    rank, world, local_rank, device = distributed.init_distributed()
    assert (rank, world, local_rank) == (0, 1, 0)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert distributed.is_main() and distributed.world_size() == 1
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.barrier()
    x = torch.randn(3, 4)
    rows, cols = distributed.gather_features(x, local_loss=True)
    assert rows is x and cols is x
