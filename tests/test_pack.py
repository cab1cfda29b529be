"""harness.training.pack: a member of a pack gives the result its replication gives trained alone
(harness.training.loop.train), on scikit-learn's digits: histories, stopping epochs, metrics and
entropy profiles, for the dense autoencoder and the CNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.training import engines, members, pack, packing
from harness.data import load_splits
from harness.entropy import entropy_loss
from harness.study import Replication, build_config, flatten
from harness.training.dispatch import run_replications
from harness.training.loop import run_replication, train

RTOL = 1e-4  # batched kernels sum in another order than the lone run's


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", None, n_train=300, n_val=150)


def configs(common: dict, lams, seeds) -> list:
    return [build_config({**common, "lam": lam, "seed": seed}) for lam in lams for seed in seeds]


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-7)


def assert_same(lone, packed) -> None:
    """The packed outcome is the lone one: same status and stopping, close numbers."""
    assert (packed.status, packed.error) == (lone.status, lone.error)
    assert [h["epoch"] for h in packed.history] == [h["epoch"] for h in lone.history]
    for a, b in zip(lone.history, packed.history):
        assert a.keys() == b.keys()
        assert all(close(a[k], b[k]) for k in a), (a, b)
    assert packed.metrics.keys() == lone.metrics.keys()
    for key in ("stop_epoch", "best_epoch", "hit_max_epochs"):
        assert packed.metrics.get(key) == lone.metrics.get(key), key
    assert all(close(lone.metrics[k], packed.metrics[k]) for k in lone.metrics), (lone.metrics, packed.metrics)
    assert len(packed.profiles) == len(lone.profiles)
    for a, b in zip(lone.profiles, packed.profiles):
        assert {k: v for k, v in a.items() if k != "value"} == {k: v for k, v in b.items() if k != "value"}
        assert math.isclose(a["value"], b["value"], rel_tol=RTOL, abs_tol=1e-4)


def check_pack(cfgs, splits) -> list:
    packed = pack.train_pack(cfgs, splits, "cpu")
    for config, outcome in zip(cfgs, packed):
        assert_same(train(config, splits, "cpu"), outcome)
    return packed


DENSE = {
    "dataset": "digits", "model": "dense_ae", "task": "reconstruction", "latent": 40,  # >= 32: LAPACK log|det|
    "net.latent_activation": "relu", "net.output_activation": "linear",
    "train.lr": 0.05, "train.max_epochs": 25, "train.patience": 2, "data.n_train": 300, "data.n_val": 150,
}


def test_dense_members_match_lone_runs_through_early_stopping(digits):
    packed = check_pack(configs(DENSE, [0.0, 1e-2, 1.0], [0, 1]), digits)
    stops = [o.metrics["stop_epoch"] for o in packed]
    assert min(stops) < 25 and len(set(stops)) > 1  # members stop at different epochs: the pack compacts
    assert {o.metrics["grad_ratio"] > 0 for o in packed} == {True, False}  # λ = 0 has no guidance gradient


def test_dense_sigmoid_log_form_total_monitor_last_weights(digits):
    common = {
        "dataset": "digits", "model": "dense_ae", "task": "reconstruction", "latent": 16, "train.max_epochs": 4,
        "entropy.form": "log", "train.monitor": "total", "train.restore_best": False,
        "data.n_train": 300, "data.n_val": 150,
    }
    check_pack(configs(common, [0.0, 1e-3], [0, 1]), digits)


def test_total_float32_monitor_members_match_lone_runs(digits):
    """monitor=total_float32 packs, and the float32 term (log form: it moves with the
    weights) decides stopping as in a lone run, not as the task loss would."""
    common = {**DENSE, "train.monitor": "total_float32", "entropy.form": "log", "train.max_epochs": 12, "train.patience": 1}
    assert packing.pack_key(build_config({**common, "lam": 1e-3, "seed": 0})) is not None
    packed = check_pack(configs(common, [0.0, 1e-2, 1.0], [0, 1]), digits)
    by_task = pack.train_pack(configs({**common, "train.monitor": "task"}, [0.0, 1e-2, 1.0], [0, 1]), digits, "cpu")
    stops = [o.metrics["stop_epoch"] for o in packed]
    assert stops[:2] == [o.metrics["stop_epoch"] for o in by_task[:2]]  # λ = 0: the same loss
    assert stops != [o.metrics["stop_epoch"] for o in by_task]


def test_stopping_rules_share_one_trained_member_and_each_stops_as_alone(digits, monkeypatch):
    """Replications that differ only in what early stopping monitors, its patience or
    min-delta, the epoch cap, or which weights they report train as one member: 2 seeds ×
    2 λ × 4 stopping rules are 16 replications on 4 members, each one's result still what
    it gives trained alone (its own stopping epoch, best weights, metrics)."""
    sizes = []
    init = members.Pack.__init__
    monkeypatch.setattr(members.Pack, "__init__", lambda self, members, *a, **k: (sizes.append(len(members)), init(self, members, *a, **k))[1])
    common = {**DENSE, "entropy.form": "log", "train.max_epochs": 12, "train.patience": 1}
    rules = [{}, {"train.monitor": "total_float32"}, {"train.patience": 3, "train.min_delta": 1e-4},
             {"train.max_epochs": 2, "train.restore_best": False}]
    cfgs = [build_config({**common, **rule, "lam": lam, "seed": seed})
            for lam in (0.0, 1e-2) for seed in (0, 1) for rule in rules]
    packed = check_pack(cfgs, digits)
    assert sizes == [4]
    check_pack(cfgs[4:8], digits)  # a pack of one model trained for its 4 replications
    assert sizes == [4, 1]
    stops = [o.metrics["stop_epoch"] for o in packed]
    assert len(set(stops[4:8])) > 1  # one member, replications stopping at different epochs
    assert all(o.metrics["stop_epoch"] == 2 for o in packed[3::4])
    # the scheduler's groups keep a member's replications together and count members
    assert [len(g) for g in packing.pack_groups(cfgs, max_size=3)] == [12, 4]
    assert sum(o.wall_s for o in packed) > 0


def test_a_diverged_member_diverges_every_replication_it_trains_for():
    splits = load_splits("digits", None, n_train=200, n_val=100)
    common = {
        "dataset": "digits", "model": "dense_ae", "task": "reconstruction", "latent": 8,
        "net.latent_activation": "linear", "net.output_activation": "linear", "train.optimizer": "sgd",
        "train.lr": 3.0, "train.max_epochs": 5, "data.n_train": 200, "data.n_val": 100, "lam": 0.0,
    }
    cfgs = [build_config({**common, "seed": seed, "train.patience": patience}) for seed in (3, 2) for patience in (1, 7)]
    packed = check_pack(cfgs, splits)
    assert [o.status for o in packed] == ["diverged", "diverged", "done", "done"]


def test_term_led_counts_the_weights_the_guidance_outweighs_the_task_on(digits):
    """Digits' pixel 0 is always 0: the encoder weights on it get no task gradient, so even
    a guidance gradient 1e-4 the size of the task's leads there (8 of the 64 entries of the
    8 x 8 block): under Adam those weights follow the term."""
    assert float(digits.train_x.reshape(len(digits.train_x), -1)[:, 0].abs().max()) == 0
    common = {**DENSE, "latent": 8, "entropy.form": "log", "train.max_epochs": 3}
    packed = check_pack(configs(common, [0.0, 1e-7], [0, 1]), digits)
    assert [o.metrics["term_led"] for o in packed[:2]] == [0.0, 0.0]
    for o in packed[2:]:
        assert o.metrics["grad_ratio"] < 1e-3 and o.metrics["term_led"] >= 8 / 64


def test_cnn_members_match_lone_runs_through_early_stopping(digits):
    common = {
        "dataset": "digits", "model": "cnn", "task": "classification", "arch": (4,), "net.padding": "same",
        "placement": "all", "train.lr": 0.01, "train.max_epochs": 25, "train.patience": 2,
        "data.n_train": 300, "data.n_val": 150,
    }
    packed = check_pack(configs(common, [0.0, 1e-3, 1.0], [0, 1]), digits)
    stops = [o.metrics["stop_epoch"] for o in packed]
    assert min(stops) < 25 and len(set(stops)) > 1
    assert all(0.5 < o.metrics["val_acc"] <= 1 for o in packed)


def test_a_diverged_member_is_recorded_and_the_others_go_on():
    splits = load_splits("digits", None, n_train=200, n_val=100)
    common = {
        "dataset": "digits", "model": "dense_ae", "task": "reconstruction", "latent": 8,
        "net.latent_activation": "linear", "net.output_activation": "linear", "train.optimizer": "sgd",
        "train.lr": 3.0, "train.max_epochs": 5, "data.n_train": 200, "data.n_val": 100,
    }
    # seed 3 blows up at this step size, 2 does not. Seed 3's first epoch still trains (loss
    # 0.4), so its recorded row is compared to float tolerance; a run whose first epoch is
    # already at 1e5 would amplify the kernels' different rounding past any tolerance
    packed = check_pack(configs(common, [0.0], [3, 2]), splits)
    assert [o.status for o in packed] == ["diverged", "done"]
    assert packed[0].error.startswith("non-finite loss at epoch")


@pytest.mark.parametrize("latent_act, output_act", [("sigmoid", "sigmoid"), ("relu", "linear"), ("tanh", "sigmoid"),
                                                     ("linear", "linear")])
@pytest.mark.parametrize("stored_transposed", [True, False])
def test_the_dense_step_is_autograds_whatever_the_layout_and_the_buffers_held(latent_act, output_act, stored_transposed):
    """The hand-written dense step (loss, backward, its 2/n on the matmuls' alpha) gives what
    autograd gives through the model (the vmap engine), with the weights stored as the pack
    stores them, (P, in, out), or as the modules do; and reused buffers left full of NaN by
    an earlier step leak nothing (beta = 0 ignores a matmul's uninitialised input)."""
    from harness.models import DenseAutoencoder

    torch.manual_seed(0)
    size, batch, width, latent = 3, 5, 12, 4
    template = DenseAutoencoder(width, latent, latent_act, output_act)
    plain = [torch.randn(size, *p.shape) for p in template.parameters()]
    stored = [p.mT.contiguous().mT if stored_transposed and p.ndim == 3 else p for p in plain]
    x = torch.rand(size, batch, width)
    dense = engines.DenseEngine(template)
    dense.task_and_grads(stored, torch.rand(size, batch + 2, width), None)
    for buf in dense._buffers.values():
        buf.fill_(math.nan)
    task, _, grads = dense.task_and_grads(stored, x, None)
    reference = engines.VmapEngine(template, "reconstruction")
    ref_task, _, ref_grads = reference.task_and_grads([p.clone().requires_grad_() for p in plain], x, None)
    torch.testing.assert_close(task, ref_task)
    for g, ref, p in zip(grads, ref_grads, stored):
        assert g.stride() == p.stride()  # laid out as its weight: what the fused optimizer reads
        torch.testing.assert_close(g, ref)


# ---------------------------------------------------------------------------- the batched entropy term


@pytest.mark.parametrize("form", ["inverse", "log"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_dense_term_and_gradient_match_entropy_loss(form, precision):
    torch.manual_seed(0)
    ent = build_config({"entropy.form": form, "entropy.precision": precision}).entropy
    lam = torch.tensor([1e-3, 1.0, 10.0], dtype=torch.float64)
    for shape in [(6, 9), (9, 6), (130, 140)]:  # 6 wide: batched slogdet; 130: LAPACK per matrix
        weights = torch.randn(3, *shape) / shape[0] ** 0.5
        term = engines.PackEntropy([0], ["dense"], [weights.shape], ent)
        values, (grad,) = term.term_and_grads([weights], torch.arange(3), lam)
        for i in range(3):
            layer = nn.Linear(shape[1], shape[0])
            layer.weight.data.copy_(weights[i])
            ref = entropy_loss([layer], lam[i].item(), form=form, eps=ent.eps, precision=precision)
            ref.backward()
            k = min(shape)
            assert torch.allclose(values[i], ref.detach(), rtol=1e-5)
            ref_grad = layer.weight.grad[:k, :k]
            tol = 1e-6 if precision == "float64" else 1e-3  # float32 solves of a 130-wide block differ in rounding
            assert (grad[i] - ref_grad).norm() <= tol * ref_grad.norm()
            assert layer.weight.grad[k:].abs().sum() == 0 and layer.weight.grad[:, k:].abs().sum() == 0


@pytest.mark.parametrize("c11", ["all_channels", "first_channel"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_conv_term_and_gradient_match_entropy_loss(c11, reduce):
    torch.manual_seed(1)
    ent = build_config({"entropy.c11": c11, "entropy.reduce": reduce, "entropy.form": "inverse"}).entropy
    weights = torch.randn(2, 4, 3, 3, 3)
    term = engines.PackEntropy([0], ["conv"], [weights.shape], ent)
    lam = torch.tensor([0.1, 2.0], dtype=torch.float64)
    values, (grad,) = term.term_and_grads([weights], torch.arange(2), lam)
    full = torch.zeros_like(weights)
    term.add_into([full], [grad], torch.arange(2))
    for i in range(2):
        conv = nn.Conv2d(3, 4, 3)
        conv.weight.data.copy_(weights[i])
        ref = entropy_loss([conv], lam[i].item(), form="inverse", eps=ent.eps, c11=c11, reduce=reduce)
        ref.backward()
        assert torch.allclose(values[i], ref.detach(), rtol=1e-6)
        assert torch.allclose(full[i], conv.weight.grad, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------- grouping and results


def test_pack_key_groups_what_differs_only_in_lambda_and_seed():
    base = {"dataset": "digits", "model": "dense_ae", "latent": 8}
    a, b = build_config({**base, "lam": 0.1, "seed": 3}), build_config({**base, "lam": 0.0, "seed": 0})
    assert packing.pack_key(a) == packing.pack_key(b) is not None
    assert packing.pack_key(build_config({**base, "latent": 16})) != packing.pack_key(a)
    cnn = {"dataset": "digits", "model": "cnn", "task": "classification", "arch": (4,)}
    assert packing.pack_key(build_config({**cnn, "net.dropout": 0.5})) is None  # dropout draws from the global RNG
    assert packing.pack_key(build_config({**cnn, "train.lr_patience": 3})) is None  # a per-member learning rate
    assert packing.pack_key(build_config({**base, "latent": 0})) is None  # train() rejects it: runs alone, fails there
    c, d = build_config({**base, "lam": 1.0, "seed": 1}), build_config({**base, "lam": 1.0, "seed": 2})
    cfgs = [a, build_config({**base, "latent": 16}), b, build_config({**cnn, "net.dropout": 0.5}), c, d]
    assert packing.pack_groups(cfgs) == [[0, 2, 4, 5], [1], [3]]
    assert packing.pack_groups(cfgs, max_size=3) == [[0, 2, 4], [1], [3], [5]]
    assert packing.pack_groups(cfgs, max_size=lambda config: 1 if config.lam == 1.0 else 3) == [[0, 2], [1], [3], [4], [5]]


def test_replications_that_differ_only_in_their_stopping_rule_share_a_member():
    base = {"dataset": "digits", "model": "dense_ae", "latent": 8, "lam": 1e-3, "seed": 0}
    task = build_config(base)
    total = build_config({**base, "train.monitor": "total_float32", "train.patience": 3})
    other = build_config({**base, "seed": 1})
    assert packing.pack_key(task) == packing.pack_key(total) == packing.pack_key(other)
    assert packing.trajectory_key(task) == packing.trajectory_key(total) != packing.trajectory_key(other)
    assert packing.stopping_rule(task) != packing.stopping_rule(total)
    # a pack of 2 members holds the 2 replications of the first trajectory and the other one
    assert packing.pack_groups([task, other, total], max_size=2) == [[0, 1, 2]]
    assert packing.pack_groups([task, other, total], max_size=1) == [[0], [1], [2]]  # alone: no pack at all


def test_choose_pack_size_follows_free_memory_and_the_cache(monkeypatch):
    config = build_config({"dataset": "digits", "model": "dense_ae", "latent": 16})
    size = packing.choose_pack_size(config, (1, 8, 8), 10, "cpu")
    assert 1 <= size <= packing.MAX_PACK_CPU
    mnist_cnn = build_config({"dataset": "mnist", "model": "cnn", "task": "classification", "arch": (32,)})
    # the conv engine holds one member's activations at a time (32 x 32 x 26 x 26 a step, by
    # hand) beside every member's weights, gradients and Adam moments (54,410 floats each)
    params = 32 * 9 + 32 + 32 * 13 * 13 * 10 + 10
    activations = 32 * (784 + 2 * 32 * 26 * 26 + 2 * 32 * 13 * 13 + 10)  # input, conv, act, pool, flatten, logits
    by_traffic = (packing.CPU_PACK_BYTES - 4 * 3 * activations) // (4 * 4 * params)
    assert packing.choose_pack_size(mnist_cnn, (1, 28, 28), 10, "cpu") == min(by_traffic, packing.MAX_PACK_CPU_CNN)
    # E1's autoencoder: a step's working set, counted by hand, within CPU_PACK_BYTES
    for latent, size in ((20, 29), (80, 14)):
        params = 2 * 784 * latent + latent + 784
        activations = 32 * (784 + 2 * latent + 2 * 784)  # input, encoder and decoder outputs and activations
        per_member = 4 * (4 * params + 3 * activations)  # weights, gradients, Adam's moments; acts and grads
        assert packing.CPU_PACK_BYTES // per_member == size
        ae = build_config({"dataset": "mnist", "model": "dense_ae", "latent": latent})
        assert packing.choose_pack_size(ae, (1, 28, 28), 10, "cpu") == size
    monkeypatch.setattr(packing, "free_host_memory", lambda: 10_000)
    assert packing.choose_pack_size(config, (1, 8, 8), 10, "cpu") == 1


def test_a_pack_of_one_is_the_reference_loop(digits):
    cfgs = configs({**DENSE, "train.max_epochs": 3}, [0.0, 1e-2], [0])
    alone = pack.train_in_packs(cfgs, digits, "cpu", size=1)
    for config, outcome in zip(cfgs, alone):
        lone = train(config, digits, "cpu")
        assert outcome.history == lone.history and outcome.metrics == lone.metrics and outcome.wall_s > 0
    assert [len(o.history) for o in pack.train_in_packs(cfgs * 2, digits, "cpu", size=3)] == [3] * 4  # packs of 2 + 2


def test_run_replications_packs_and_returns_run_replications_dicts():
    base = {"dataset": "digits", "model": "dense_ae", "latent": 8, "train.max_epochs": 2, "data.n_train": 200, "data.n_val": 100}
    reps = [Replication("t", build_config({**base, "lam": lam, "seed": seed})) for lam in (0.0, 1e-3) for seed in (0, 1)]
    lone_cnn = build_config({"dataset": "digits", "model": "cnn", "task": "classification", "arch": (4,),
                             "net.dropout": 0.5, "train.max_epochs": 1, "data.n_train": 200, "data.n_val": 100})
    reps.insert(1, Replication("t", lone_cnn))
    results = run_replications(reps, device="cpu")
    assert [r["id"] for r in results] == [rep.id for rep in reps]
    assert all(r["status"] == "done" for r in results)
    reference = run_replication(reps[2], device="cpu")
    assert results[2].keys() == reference.keys()
    assert results[2]["config"] == reference["config"] and results[2]["wall_s"] > 0
    assert all(close(reference["metrics"][k], results[2]["metrics"][k]) for k in reference["metrics"])
    assert len({r["metrics"]["val_mse"] for r in results if "val_mse" in r["metrics"]}) == 4  # each its own


def test_wall_s_is_training_time_alone_or_packed(monkeypatch):
    """A lone run's wall_s, like a packed member's share, leaves out loading the data: a
    data set that takes 1 s to load does not count in it."""
    import time

    from harness.training import loop

    real = loop.splits_for

    def slow_splits(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "splits_for", slow_splits)
    rep = Replication("t", build_config({"dataset": "digits", "model": "dense_ae", "latent": 8,
                                         "train.max_epochs": 1, "data.n_train": 100, "data.n_val": 50}))
    clock = time.perf_counter()
    result = run_replication(rep, device="cpu")
    elapsed = time.perf_counter() - clock
    assert result["status"] == "done" and 0 < result["wall_s"] <= elapsed - 1.0


def test_flush_denormals_is_a_recorded_setting_on_for_training_and_restored(digits):
    """train.flush_denormals (on by default) flushes subnormal floats to zero in the
    training thread and restores the thread's mode afterwards; turning it off changes the
    replication's id. Everything recorded is the same either way, alone and packed: the
    histories, and the gradient diagnostics, measured with IEEE subnormals. At λ = 1e-33
    the term's float32 gradient is subnormal: flushed, it would change term_led."""
    from harness.training.numerics import float32_math, flushes_denormals

    base = build_config({**DENSE, "train.max_epochs": 2})
    off = build_config({**DENSE, "train.max_epochs": 2, "train.flush_denormals": False})
    assert base.train.flush_denormals and Replication("s", off).id != Replication("s", base).id
    before = flushes_denormals()
    with float32_math(base):
        assert flushes_denormals()
    with float32_math(off):
        assert not flushes_denormals()
    assert flushes_denormals() == before
    tiny = {**DENSE, "train.max_epochs": 2, "lam": 1e-33}
    flushed, kept = train(build_config(tiny), digits, "cpu"), train(build_config({**tiny, "train.flush_denormals": False}), digits, "cpu")
    assert flushed.history == kept.history and flushed.metrics == kept.metrics
    assert 0 < flushed.metrics["term_led"] <= 1 and 0 < flushed.metrics["grad_ratio"] < 1e-30
    packed = pack.train_pack(configs({**DENSE, "train.max_epochs": 2}, [0.0, 1e-33, 1e-2], [0, 1]), digits, "cpu")
    unflushed = pack.train_pack(configs({**DENSE, "train.max_epochs": 2, "train.flush_denormals": False},
                                        [0.0, 1e-33, 1e-2], [0, 1]), digits, "cpu")
    assert [o.history for o in packed] == [o.history for o in unflushed]
    assert [o.metrics for o in packed] == [o.metrics for o in unflushed]


def test_flushing_adams_subnormal_moments_leaves_the_weights_unchanged():
    """Why the flush is safe: a weight whose gradient was non-zero once and zero since (an
    MNIST pixel that is rarely lit) has Adam's first moment decay by 0.9 a step into the
    subnormal range, where the update it contributes is far below the weight's float32
    rounding. 800 steps of the fused Adam with and without the flush give the same bits."""
    from harness.training.numerics import flushes_denormals

    weights, before = [], flushes_denormals()
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        try:
            w = torch.nn.Parameter(torch.linspace(-0.05, 0.05, 512))
            opt = torch.optim.Adam([w], lr=1e-3, fused=True)
            for step in range(800):
                w.grad = torch.linspace(1e-6, 1e-4, 512) if step == 0 else torch.zeros(512)
                opt.step()
            m = opt.state[w]["exp_avg"]
            if not flush:  # the case the flush is for did occur
                assert ((m != 0) & (m.abs() < torch.finfo(torch.float32).tiny)).any()
            weights.append(w.detach().clone())
        finally:
            torch.set_flush_denormal(before)
    assert torch.equal(weights[0], weights[1])


def test_a_pack_that_cannot_start_fails_every_member_with_the_traceback(tmp_path):
    base = {"dataset": "mnist", "model": "dense_ae", "latent": 8}
    reps = [Replication("t", build_config({**base, "seed": seed})) for seed in (0, 1)]
    results = pack.run_pack(reps, device="cpu", data_dir=tmp_path)  # no MNIST there
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert all("Traceback" in r["error"] and str(tmp_path) in r["error"] for r in results)


def test_tf32_is_a_recorded_setting_that_a_cpu_computes_in_float32(digits):
    """train.tf32 sets CUDA's float32 matmul and convolution modes for the training and
    restores them; it changes the replication's id; a CPU trains the same numbers either
    way (alone and packed)."""
    from harness.training.numerics import float32_math

    base = build_config({**DENSE, "train.max_epochs": 2})
    tf32 = build_config({**DENSE, "train.max_epochs": 2, "train.tf32": True})
    assert Replication("s", tf32).id != Replication("s", base).id
    modes = lambda: (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    before = modes()
    with float32_math(tf32):
        assert modes() == ("tf32", "tf32")
    with float32_math(base):  # PyTorch's own default runs convolutions in TF32: off, explicitly
        assert modes() == ("ieee", "ieee")
    assert modes() == before
    lone, lone32 = train(base, digits, "cpu"), train(tf32, digits, "cpu")
    assert lone32.history == lone.history and lone32.metrics == lone.metrics
    packed = pack.train_pack(configs({**DENSE, "train.max_epochs": 2, "train.tf32": True}, [0.0, 1e-2], [0, 1]), digits, "cpu")
    reference = pack.train_pack(configs({**DENSE, "train.max_epochs": 2}, [0.0, 1e-2], [0, 1]), digits, "cpu")
    assert [o.history for o in packed] == [o.history for o in reference]
    assert modes() == before


def test_compile_is_a_recorded_setting_that_trains_the_eager_numbers(digits, monkeypatch):
    """train.compile runs the model (alone) or the pack's step (vmap engine) through
    torch.compile: a new id, the eager history to float tolerance, a member of a compiled
    pack the replication trained alone; a mode torch.compile lacks is refused when read."""
    from harness.study import StudyError, coerce

    cfgs = configs({**DENSE, "train.max_epochs": 3, "train.compile": "default"}, [0.0, 1e-2], [0, 1])
    eager_cfgs = [build_config({**flatten(config), "train.compile": "off"}) for config in cfgs]
    assert Replication("s", cfgs[0]).id != Replication("s", eager_cfgs[0]).id
    modes, compile_ = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: modes.append(kw["mode"]) or compile_(fn, **kw))
    eager = [train(config, digits, "cpu") for config in eager_cfgs]
    assert modes == []
    assert_same(eager[0], train(cfgs[0], digits, "cpu"))
    assert modes == ["default"]  # the module's forward
    packed = pack.train_pack(cfgs, digits, "cpu")
    assert modes == ["default"] * 2  # the pack's training step
    for lone, outcome in zip(eager, packed):
        assert_same(lone, outcome)
    with pytest.raises(StudyError, match="train.compile"):
        coerce("train.compile", "fast")  # as a study file or an override is read
