"""harness.perf.bench: its figures, not its speed (timings are never asserted)."""

from __future__ import annotations

import argparse
import math

import pytest

from harness.perf import bench
from harness.data import load_splits
from harness.study import build_config, load_study


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_model_flops_are_the_dense_autoencoders_matmuls():
    """Per example: forward 2 matmuls of D x L (2 FLOPs a multiply-add) = 4DL; backward the
    decoder's weight and input gradients and the encoder's weight gradient = 6DL."""
    config = build_config({"dataset": "digits", "model": "dense_ae", "latent": 16})
    splits = load_splits("digits", None, n_train=64, n_val=32)
    train, evaluate = bench.model_flops(config, splits)
    d, latent = 64, 16
    assert (train, evaluate) == (10 * d * latent, 4 * d * latent)


def test_first_cell_is_every_lambda_and_seed_of_the_first_other_values():
    study = load_study("studies/quickstart.py")  # latent 16, 32 x lam 0, 1e-3 x seeds 0-2
    cell = bench.first_cell(study)
    assert {(c.lam, c.seed) for c in cell} == {(lam, s) for lam in (0.0, 1e-3) for s in range(3)}
    assert {c.latent for c in cell} == {16}
    assert [c.latent for c in bench.first_cell(study.with_overrides(["latent=32"]))] == [32] * 6
    # a stopping-rule axis (which a pack trains once for both) stays at its first value
    monitors = bench.first_cell(study.with_overrides(["train.monitor=task,total_float32"]))
    assert len(monitors) == 6 and {c.train.monitor for c in monitors} == {"task"}


def test_matmul_peak_is_a_rate():
    assert bench.matmul_peak("cpu", n=128, repeats=2) > 1e6


def test_bench_prints_both_paths_their_ratio_and_the_pack_size(capsys):
    args = parse("studies/quickstart.py", "latent=16", "--epochs", "1", "--n-train", "128", "--plain-reps", "2",
                 "--repeats", "1", "--workers", "2", "--pack-size", "3")
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "6 replications" in out and "1 epoch(s) on 128 examples" in out and "validation 32" in out  # 359 x 128/1437
    for needle in ("matmul peak", "plain loop (DataLoader", "packed (harness, packs of", "reps/h", "of peak", "speed-up",
                   "pack size", "spread (harness run --workers 2: 2 processes x", "speed-up spread / plain",
                   "packs of up to 3)", "matmul ceiling", "in the 2 processes at once", "subnormal floats: flushed"):
        assert needle in out, needle


def test_result_figures_follow_from_the_timings():
    r = bench.BenchResult(members=10, epochs=1, n_train=100, n_val=10, device="cpu", threads=2, peak_flops=1e11,
                          plain_reps=2, plain_s=4.0, packed_s=5.0, flops_per_rep=1e9, pack_size=64)
    assert r.plain_reps_per_hour == pytest.approx(1800) and r.packed_reps_per_hour == pytest.approx(7200)
    assert r.speedup == pytest.approx(4.0)
    assert math.isclose(r.packed_flops / r.peak_flops, 0.02)
    assert "4.0x" in r.report("s", "latent=8") and "spread" not in r.report("s", "latent=8")
    spread = bench.BenchResult(**{**vars(r), "workers": 2, "spread_s": 2.5})
    assert spread.spread_reps_per_hour == pytest.approx(14400)
    assert "speed-up spread / plain: 8.0x" in spread.report("s", "latent=8")
    assert "ceiling" not in spread.report("s", "latent=8")  # not measured: not printed
    ceiling = bench.BenchResult(**{**vars(spread), "ceiling_flops": 4e9, "spread_ceiling_flops": 1e10})
    assert "4.0 GFLOP/s in one process (4% of peak; packed reaches 50% of it)" in ceiling.report("s", "latent=8")
    assert "10.0 GFLOP/s in the 2 processes at once (10% of peak; spread reaches 40% of it)" in ceiling.report("s", "")
    assert "subnormal" not in r.report("s", "")  # IEEE in both paths: nothing to say
    flushed = bench.BenchResult(**{**vars(r), "flush_denormals": True})
    assert "subnormal floats: flushed to zero in the harness's paths" in flushed.report("s", "")
    assert "subnormal" not in bench.BenchResult(**{**vars(flushed), "device": "cuda"}).report("s", "")
    # the determinants' LAPACK differs between a 1-thread worker and a several-thread process: said
    assert "determinants" not in spread.report("s", "")
    mkl = bench.BenchResult(**{**vars(spread), "torch_lapack_on_one_thread": True})
    assert ("torch's LU (MKL) in 1-thread processes (the spread's workers), scipy's LAPACK on 2 threads"
            in mkl.report("s", ""))
    assert "determinants" not in bench.BenchResult(**{**vars(mkl), "threads": 1}).report("s", "")  # one path
    assert "determinants" not in bench.BenchResult(**{**vars(mkl), "device": "cuda"}).report("s", "")


def test_bad_options_are_one_line_user_errors():
    with pytest.raises(bench.BenchError, match="--epochs"):
        bench.run(parse("studies/quickstart.py", "--epochs", "0"))


def test_the_spread_defaults_to_harness_runs_layout():
    """One worker per core on the CPU, GPU_AUTO_WORKERS on a GPU (at most a core each), as
    `harness run` lays a sweep out by default; never more than there are replications."""
    import os

    from harness.workers import GPU_AUTO_WORKERS

    cores = len(os.sched_getaffinity(0))
    assert bench.default_workers(70, "cpu") == min(cores, 70) and bench.default_workers(1, "cpu") == 1
    assert bench.default_workers(70, "cuda") == min(GPU_AUTO_WORKERS, cores) and bench.default_workers(1, "cuda:0") == 1


def test_whole_process_times_harness_run_and_the_plain_loop_as_processes(capsys):
    """--whole-process runs `harness run` (into a throwaway database) and the plain loop as
    fresh processes on the study's own replications; a failing one is one line."""
    args = parse("studies/quickstart.py", "latent=16", "lam=0", "seed=0:2", "train.max_epochs=1",
                 "data.n_train=64", "data.n_val=32", "--whole-process", "--repeats", "1", "--workers", "1")
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "whole process, start-up and validation included, 2 replications: harness run" in out
    assert "plain loop" in out and "speed-up harness run / plain:" in out
    no_data = parse("studies/quickstart.py", "latent=16", "lam=0", "seed=0", "dataset=cifar10", "--whole-process",
                    "--data-dir", "/nonexistent")
    with pytest.raises(bench.BenchError, match="harness.cli failed: .*(CIFAR|cifar)"):
        bench.run(no_data)
