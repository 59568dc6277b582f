"""What only a CUDA GPU can show: a CPU teacher handed to a GPU student stays frozen and unchanged (`same_weights`
compares on one device), fp16 training with KD, and the KD benchmark's models on the loader's device.
Skipped on machines without CUDA (CI has none); `benchmarks/gpu_run.py` and these tests are run on a lent GPU."""
import sys
from pathlib import Path
import pytest, torch
# imported here, not inside the tests, so that a renamed or moved name fails on every machine, not only on a GPU
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.callback.fp16 import MixedPrecision
import fastai.callback.progress  # Learner.no_bar
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d
from kdbook.teacher import snapshot, same_weights
from kdbook.distill import KDCallback
from kdbook.soft_targets import SoftTargetCache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (none on this machine)')
ROOT = Path(__file__).resolve().parents[1]


def test_cpu_teacher_on_gpu_student_fp16():
    dls = mnist1d_dls(bs=128)
    assert dls.device.type == 'cuda'
    torch.manual_seed(0)
    teacher = cnn1d(64)                       # on the CPU, as a user builds it
    snap = snapshot(teacher)                  # on the CPU too
    learn = Learner(dls, cnn1d(16), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    cbs=[KDCallback(teacher, alpha=0.5, T=4.), MixedPrecision()])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    assert next(teacher.parameters()).device.type == 'cuda'   # moved to the student's device ...
    assert same_weights(teacher, snap)                        # ... and unchanged, compared across devices
    assert not same_weights(learn.model, snapshot(cnn1d(16)))
    assert learn.recorder.values[-1][2] > 0.3


def test_bench_kd_runs_on_the_loader_device():
    sys.path.insert(0, str(ROOT/'benchmarks'))
    import bench_kd
    r_cache, r_online = bench_kd.main(rounds=1, bs=128)
    assert r_cache > 0 and r_online > 0


def test_cache_gathered_on_the_gpu_same_as_on_the_cpu():
    "The cache moved to the GPU once per fit gives the same training as the CPU cache (no per-batch host copy)"
    torch.manual_seed(0)
    teacher = cnn1d(32)
    res = {}
    for dev in ('cpu', 'cuda'):
        dls = mnist1d_dls(bs=128, n_train=1000, n_valid=200, device=dev)
        cache = SoftTargetCache.build(teacher, dls.train)
        torch.manual_seed(1)
        learn = Learner(dls, cnn1d(8), loss_func=CrossEntropyLossFlat(), cbs=KDCallback(cache=cache))
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
        assert learn.kd._dcache is None  # released after the fit
        res[dev] = [float(v) for v in learn.recorder.values[-1]]
    assert res['cpu'] == pytest.approx(res['cuda'], rel=1e-3)
