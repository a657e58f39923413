"""DIME-FM loss terms against hand-computed values on tiny inputs, plus their invariants."""

import inspect
import math

import pytest
import torch

from dimefm_pipeline.core.losses import LossConfig, TeacherTargets, dimefm_losses, ensemble_losses, kl_rows

S = 100.0


# ---- reference implementation with explicit Python loops (float64, no torch) ----


def _unit(rows):
    out = []
    for row in rows:
        norm = math.sqrt(sum(v * v for v in row))
        out.append([v / norm for v in row])
    return out


def _logits(xs, ys):
    return [[S * sum(a * b for a, b in zip(x, y)) for y in ys] for x in xs]


def _log_softmax(row, tau):
    scaled = [v / tau for v in row]
    top = max(scaled)
    log_z = top + math.log(sum(math.exp(v - top) for v in scaled))
    return [v - log_z for v in scaled]


def _kl(teacher, student, tau):
    total = 0.0
    for a_row, b_row in zip(teacher, student):
        log_p, log_q = _log_softmax(a_row, tau), _log_softmax(b_row, tau)
        total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))
    return total / len(teacher)


def _hand(ti, tt, si, st, mined=None):
    """Every term from method.md / docs/losses.md, written out with loops."""
    ti, tt, si, st = (_unit(t.double().tolist()) for t in (ti, tt, si, st))
    out = {
        "vl": _kl(_logits(ti, tt), _logits(si, st), 1.0) + _kl(_logits(tt, ti), _logits(st, si), 1.0),
        "pvl": 2 * _kl(_logits(ti, ti), _logits(si, ti), 3.0),
        "udist": 2 * _kl(_logits(ti, ti), _logits(si, si), 7.0),
        "vl_text": _kl(_logits(tt, ti), _logits(st, ti), 1.0) + _kl(_logits(ti, tt), _logits(ti, st), 1.0),
        "pvl_text": 2 * _kl(_logits(tt, tt), _logits(st, tt), 3.0),
        "udist_text": 2 * _kl(_logits(tt, tt), _logits(st, st), 7.0),
    }
    if mined is not None:
        mt = _unit(mined.double().tolist())
        out["pvl_mined"] = 2 * _kl(_logits(ti, mt), _logits(si, mt), 3.0)
    return out


def _batch(seed=0, n=3, m=4, d=4):
    g = torch.Generator().manual_seed(seed)
    # small-magnitude perturbations keep the s=100 softmax rows away from one-hot, so every term is
    # a non-trivial number
    ti = torch.randn(n, d, generator=g) + 2.0
    tt = torch.randn(m, d, generator=g) + 2.0
    si = ti + 0.3 * torch.randn(n, d, generator=g)
    st = tt + 0.3 * torch.randn(m, d, generator=g)
    return ti, tt, si, st


def _close(value: torch.Tensor, expected: float):
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_image_terms_in_reference_mode_match_hand_computed_values():
    ti, tt, si, _ = _batch()
    out = dimefm_losses(ti, tt, si, tt, w_udist=0.5)
    hand = _hand(ti, tt, si, tt)
    assert set(out) == {"vl", "pvl", "udist", "total"}
    for key in ("vl", "pvl", "udist"):
        assert hand[key] > 1e-3, key
        _close(out[key], hand[key])
    _close(out["total"], 0.7 * hand["vl"] + 0.3 * hand["pvl"] + 0.5 * hand["udist"])


def test_image_terms_with_student_text_use_student_sentences_in_vl():
    ti, tt, si, st = _batch(seed=1)
    out = dimefm_losses(ti, tt, si, st)
    hand = _hand(ti, tt, si, st)
    for key in ("vl", "pvl", "udist"):
        _close(out[key], hand[key])
    _close(out["total"], 0.7 * hand["vl"] + 0.3 * hand["pvl"])


def test_text_tower_terms_match_hand_computed_values():
    ti, tt, si, st = _batch(seed=2)
    out = dimefm_losses(ti, tt, si, st, w_udist=0.1, train_text=True, w_vl_text=0.4, w_pvl_text=0.6)
    hand = _hand(ti, tt, si, st)
    assert set(out) == {"vl", "pvl", "udist", "vl_text", "pvl_text", "udist_text", "total"}
    for key in ("vl_text", "pvl_text", "udist_text"):
        assert hand[key] > 1e-3, key
        _close(out[key], hand[key])
    expected = 0.7 * hand["vl"] + 0.3 * hand["pvl"] + 0.1 * hand["udist"]
    # w_udist_text was not given, so it follows w_udist
    expected += 0.4 * hand["vl_text"] + 0.6 * hand["pvl_text"] + 0.1 * hand["udist_text"]
    _close(out["total"], expected)


def test_non_default_temperatures_and_scale_are_used():
    ti, tt, si, _ = _batch(seed=3)
    out = dimefm_losses(ti, tt, si, tt, logit_scale=20.0, tau_vl=2.0, tau_pvl=0.5, tau_udist=4.0, w_udist=1.0)
    u = [_unit(t.double().tolist()) for t in (ti, tt, si)]

    def lg(x, y):
        return [[20.0 * sum(a * b for a, b in zip(r, c)) for c in y] for r in x]

    ti_, tt_, si_ = u
    _close(out["vl"], _kl(lg(ti_, tt_), lg(si_, tt_), 2.0) + _kl(lg(tt_, ti_), lg(tt_, si_), 2.0))
    _close(out["pvl"], 2 * _kl(lg(ti_, ti_), lg(si_, ti_), 0.5))
    _close(out["udist"], 2 * _kl(lg(ti_, ti_), lg(si_, si_), 4.0))


def test_mined_pvl_matches_hand_computed_value_for_one_and_k_mined_sentences():
    ti, tt, si, _ = _batch(seed=4)
    g = torch.Generator().manual_seed(5)
    mined = torch.randn(3, 4, generator=g) + 2.0
    out = dimefm_losses(ti, tt, si, tt, mined_text=mined, w_pvl_mined=0.25)
    hand = _hand(ti, tt, si, tt, mined=mined)
    assert hand["pvl_mined"] > 1e-3
    _close(out["pvl_mined"], hand["pvl_mined"])
    _close(out["total"], 0.7 * hand["vl"] + 0.3 * hand["pvl"] + 0.25 * hand["pvl_mined"])

    # n x k x d: each image's k mined sentences are normalised, averaged and re-normalised
    mined_k = torch.randn(3, 2, 4, generator=g) + 2.0
    averaged = [
        [(a + b) / 2 for a, b in zip(*_unit(row.double().tolist()))] for row in mined_k
    ]
    out_k = dimefm_losses(ti, tt, si, tt, mined_text=mined_k, w_pvl_mined=0.25)
    _close(out_k["pvl_mined"], _hand(ti, tt, si, tt, mined=torch.tensor(averaged))["pvl_mined"])


def test_kl_rows_is_torch_batchmean_kl_without_tau_squared():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    expected = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(b / 3.0, 1), torch.softmax(a / 3.0, 1)
    )
    assert kl_rows(a, b, tau=3.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_is_zero_when_student_equals_teacher_in_reference_mode():
    ti, tt, _, _ = _batch(seed=7)
    mined = torch.randn(3, 4) + 1.0
    # raw features: a different norm per row must not matter
    out = dimefm_losses(ti, tt, ti * torch.tensor([[2.0], [0.5], [3.0]]), tt, w_udist=1.0, mined_text=mined, w_pvl_mined=1.0)
    for key, value in out.items():
        assert abs(value.item()) < 1e-5, key


def test_loss_is_zero_when_both_student_towers_equal_the_teacher():
    ti, tt, _, _ = _batch(seed=8)
    out = dimefm_losses(ti, tt, ti.clone() * 4.0, tt.clone() * 0.25, w_udist=1.0, train_text=True)
    assert {"vl_text", "pvl_text", "udist_text"} <= set(out)
    for key, value in out.items():
        assert abs(value.item()) < 1e-5, key


def test_gradients_reach_only_student_features_in_both_towers_mode():
    ti, tt, si, st = (t.clone().requires_grad_(True) for t in _batch(seed=9))
    mined = (torch.randn(3, 2, 4) + 1.0).requires_grad_(True)
    out = dimefm_losses(ti, tt, si, st, w_udist=0.2, train_text=True, mined_text=mined, w_pvl_mined=0.1)
    out["total"].backward()
    assert ti.grad is None and tt.grad is None and mined.grad is None
    assert si.grad is not None and si.grad.abs().sum() > 0
    assert st.grad is not None and st.grad.abs().sum() > 0


def test_teacher_text_passed_as_student_text_gets_no_gradient():
    ti, tt, si, _ = (t.clone().requires_grad_(True) for t in _batch(seed=10))
    out = dimefm_losses(ti, tt, si, tt, w_udist=0.3)
    out["total"].backward()
    assert ti.grad is None and tt.grad is None
    assert si.grad.abs().sum() > 0


def test_zero_weight_terms_are_reported_but_not_differentiated():
    ti, tt, si, st = _batch(seed=11)
    si.requires_grad_(True)
    out = dimefm_losses(ti, tt, si, tt)  # w_udist defaults to 0
    assert out["udist"].item() > 0 and not out["udist"].requires_grad
    assert out["total"].requires_grad
    _close(out["total"], 0.7 * out["vl"].item() + 0.3 * out["pvl"].item())
    # no weight at all still yields a total that backpropagates (to zeros)
    zero = dimefm_losses(ti, tt, si, tt, w_vl=0.0, w_pvl=0.0)
    zero["total"].backward()
    assert zero["total"].item() == 0.0 and torch.count_nonzero(si.grad) == 0


def test_half_precision_features_give_float32_losses():
    # fp16 features (the cache's dtype, and what autocast produces) must not mean fp16 similarity maths:
    # at s = 100 an fp16 logit carries an error of about 0.03, far above these tolerances
    ti, tt, si, st = (t.half() for t in _batch(seed=12))
    out = dimefm_losses(ti, tt, si, st, train_text=True)
    ref = _hand(ti, tt, si, st)  # float64, from the same fp16 values
    for key in ("vl", "pvl", "udist", "vl_text", "pvl_text", "udist_text"):
        assert out[key].dtype == torch.float32
        assert out[key].item() == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key


def test_invalid_calls_are_rejected():
    ti, tt, si, st = _batch(seed=13)
    with pytest.raises(ValueError, match="train_text"):
        dimefm_losses(ti, tt, si, tt, train_text=True)
    with pytest.raises(ValueError, match="mined_text"):
        dimefm_losses(ti, tt, si, tt, w_pvl_mined=0.5)
    with pytest.raises(ValueError, match="dim"):
        dimefm_losses(ti, tt, torch.randn(3, 5), tt)
    with pytest.raises(ValueError, match="rows"):
        dimefm_losses(ti, tt, si[:2], tt)


def test_loss_config_defaults_match_the_function_signature():
    params = inspect.signature(ensemble_losses).parameters
    cfg = LossConfig()
    for key, value in cfg.as_kwargs().items():
        assert params[key].default == value, key
    assert (cfg.logit_scale, cfg.tau_vl, cfg.tau_pvl, cfg.tau_udist) == (100.0, 1.0, 3.0, 7.0)
    assert (cfg.w_vl, cfg.w_pvl, cfg.w_udist) == (0.7, 0.3, 0.0)


# ---- teacher ensembles ----


def _scaled(xs, ys, s):
    return [[s * sum(a * b for a, b in zip(x, y)) for y in ys] for x in xs]


def _mixture_kl(teachers, student, tau, weights):
    """KL from the weighted mixture of the teachers' row distributions to the student's, with loops."""
    total = 0.0
    for r, b_row in enumerate(student):
        p = [sum(w * math.exp(lp) for w, lp in zip(weights, col))
             for col in zip(*[_log_softmax(t[r], tau) for t in teachers])]
        log_q = _log_softmax(b_row, tau)
        total += sum(pi * (math.log(pi) - lq) for pi, lq in zip(p, log_q))
    return total / len(student)


def _two_teachers(d2=4):
    ti, tt, si, st = _batch(seed=5)
    g = torch.Generator().manual_seed(9)
    t2i, t2t = torch.randn(3, d2, generator=g) + 1.5, torch.randn(4, d2, generator=g) + 1.5
    return ti, tt, t2i, t2t, si, st


def test_ensemble_mean_weighs_each_teachers_terms_at_its_own_logit_scale():
    ti, tt, t2i, t2t, si, st = _two_teachers()
    out = ensemble_losses([TeacherTargets(ti, tt, logit_scale=100.0, weight=0.25),
                           TeacherTargets(t2i, t2t, logit_scale=40.0, weight=0.75)], si, st, train_text=True, w_udist=0.5)
    a_i, a_t, b_i, b_t, s_i, s_t = (_unit(x.double().tolist()) for x in (ti, tt, t2i, t2t, si, st))
    for name, hand in {
        "vl": lambda x_i, x_t, s: _kl(_scaled(x_i, x_t, s), _logits(s_i, s_t), 1.0) + _kl(_scaled(x_t, x_i, s), _logits(s_t, s_i), 1.0),
        "pvl": lambda x_i, x_t, s: 2 * _kl(_scaled(x_i, x_i, s), _logits(s_i, x_i), 3.0),
        "udist": lambda x_i, x_t, s: 2 * _kl(_scaled(x_i, x_i, s), _logits(s_i, s_i), 7.0),
        "vl_text": lambda x_i, x_t, s: _kl(_scaled(x_t, x_i, s), _logits(s_t, x_i), 1.0) + _kl(_scaled(x_i, x_t, s), _logits(x_i, s_t), 1.0),
        "udist_text": lambda x_i, x_t, s: 2 * _kl(_scaled(x_t, x_t, s), _logits(s_t, s_t), 7.0),
    }.items():
        _close(out[name], 0.25 * hand(a_i, a_t, 100.0) + 0.75 * hand(b_i, b_t, 40.0))


def test_ensemble_mixture_takes_the_kl_to_the_mixed_distributions_where_the_student_side_is_its_own():
    ti, tt, t2i, t2t, si, st = _two_teachers()
    teachers = [TeacherTargets(ti, tt, weight=0.25), TeacherTargets(t2i, t2t, logit_scale=40.0, weight=0.75)]
    out = ensemble_losses(teachers, si, st, combine="mixture", w_udist=0.5)
    mean = ensemble_losses(teachers, si, st, combine="mean", w_udist=0.5)
    a_i, a_t, b_i, b_t, s_i, s_t = (_unit(x.double().tolist()) for x in (ti, tt, t2i, t2t, si, st))
    w = (0.25, 0.75)
    _close(out["vl"], _mixture_kl([_scaled(a_i, a_t, S), _scaled(b_i, b_t, 40.0)], _logits(s_i, s_t), 1.0, w)
           + _mixture_kl([_scaled(a_t, a_i, S), _scaled(b_t, b_i, 40.0)], _logits(s_t, s_i), 1.0, w))
    _close(out["udist"], 2 * _mixture_kl([_scaled(a_i, a_i, S), _scaled(b_i, b_i, 40.0)], _logits(s_i, s_i), 7.0, w))
    _close(out["pvl"], mean["pvl"].item())  # the student side differs per teacher: a weighted mean in both
    assert out["vl"].item() < mean["vl"].item() - 1e-3  # KL is convex: the mixture's is below the mean's
    # one teacher, or the same teacher twice: both combinations are the one-teacher loss
    one = dimefm_losses(ti, tt, si, st, w_udist=0.5)
    twice = ensemble_losses([TeacherTargets(ti, tt, weight=0.5)] * 2, si, st, combine="mixture", w_udist=0.5)
    for name in ("vl", "pvl", "udist", "total"):
        assert twice[name].item() == pytest.approx(one[name].item(), rel=1e-5)


def test_teachers_of_other_dims_give_the_terms_that_compare_similarities_only():
    ti, tt, t2i, t2t, si, st = _two_teachers(d2=6)
    si.requires_grad_()
    with pytest.raises(ValueError, match="teacher 1 has dim 6, the student 4"):
        ensemble_losses([TeacherTargets(ti, tt), TeacherTargets(t2i, t2t)], si, st)
    out = ensemble_losses([TeacherTargets(ti, tt), TeacherTargets(t2i, t2t)], si, st, w_pvl=0.0, w_udist=0.5)
    assert torch.isfinite(out["total"]) and out["total"].requires_grad
    with pytest.raises(ValueError, match="teacher weights"):
        ensemble_losses([TeacherTargets(ti, tt, weight=-1.0), TeacherTargets(ti, tt)], si, st)


def test_weights_are_normalised_and_the_reference_mode_keeps_teacher_0s_sentences_at_weight_0():
    ti, tt, t2i, t2t, si, st = _two_teachers()
    one = dimefm_losses(ti, tt, si, st, w_udist=0.5)
    twice = ensemble_losses([TeacherTargets(ti, tt, weight=3.0)] * 2, si, st, w_udist=0.5)  # mean of two equal halves
    assert twice["total"].item() == pytest.approx(one["total"].item(), rel=1e-6)
    # teacher 0 gives no targets (weight 0) but its sentence rows still stand in for the student's
    out = ensemble_losses([TeacherTargets(ti, tt, weight=0.0), TeacherTargets(t2i, t2t)], si, tt)
    b_i, b_t, s_i, a_t = (_unit(x.double().tolist()) for x in (t2i, t2t, si, tt))
    _close(out["vl"], _kl(_logits(b_i, b_t), _logits(s_i, a_t), 1.0) + _kl(_logits(b_t, b_i), _logits(a_t, s_i), 1.0))
