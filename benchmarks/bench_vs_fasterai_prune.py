"""kdbook vs fasterai 0.4.1 pruning on the same jobs: accuracy and wall time of each, side by side in one run.

fasterai needs torchvision, which does not import in kdbook's venv, so this script runs in a separate
benchmark environment (not part of kdbook's install, not run in CI):

    python3 -m venv /work/benchenv
    /work/benchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 fasterai==0.4.1
    /work/benchenv/bin/pip install -e /path/to/kdbook          # ~5 GB in all, several minutes
    OMP_NUM_THREADS=1 /work/benchenv/bin/python benchmarks/bench_vs_fasterai_prune.py [--epochs 40] [--seeds 2]

Jobs (MNIST-1D, `cnn1d(64)`, `fit_one_cycle(epochs, 1e-2, wd=1e-2)`, same data, seeds and schedule shape):
1. unstructured: train from scratch while pruning conv and linear weights to 90% global magnitude sparsity,
   dense for the first 10% of training, AGP (cubic) ramp until 70%, then constant. kdbook: `PruneCallback`
   with `combine_scheds`; fasterai: `SparsifyCallback(granularity='weight', context='global',
   criteria=large_final, schedule=Schedule(sched_agp, start_pct=0.1, end_pct=0.7))`. fasterai updates the masks
   every batch of the ramp; kdbook every `--every` batches (default 1, the same).
2. structured: from one dense model trained for `epochs`, remove 50% of the channels of every conv layer
   (local, L2-magnitude, output layer kept) and retrain for `epochs`. kdbook: `prune_learner_channels` then a
   fit; fasterai: `PruneCallback(0.5, Schedule(sched_oneshot, start_pct=0), 'local', large_final)` in the fit.
The runs alternate kdbook, fasterai, kdbook, fasterai, ...; times are medians over seeds, accuracies means.
"""
import argparse, contextlib, io, statistics, time
import torch
from torch import nn
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import combine_scheds, SchedNo
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d, count_params
from kdbook.schedules import SchedAgp
from kdbook import prune as kp


EVERY = 1 # kdbook's mask update period in batches (--every); fasterai updates whenever its schedule moves


def learner(seed):
    torch.manual_seed(seed)
    learn = Learner(mnist1d_dls(valid_pct=None), cnn1d(64), metrics=accuracy)
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, ProgressCallback)))
    learn.logger = lambda *a, **k: None
    return learn


def timed_fit(learn, epochs, cbs=None):
    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out): learn.fit_one_cycle(epochs, 1e-2, wd=1e-2, cbs=cbs)
    return time.perf_counter() - t


def unstructured(lib, seed, epochs):
    learn = learner(seed)
    if lib == 'kdbook':
        sched = combine_scheds([0.1, 0.6, 0.3], [SchedNo(0., 0.), SchedAgp(0., 1.), SchedNo(1., 1.)])
        cb = kp.PruneCallback(0.9, schedule=sched, every=EVERY, scope='global') # fasterai's ranking
    else:
        from fasterai.sparse.all import SparsifyCallback
        from fasterai.core.criteria import large_final
        from fasterai.core.schedule import Schedule, sched_agp
        cb = SparsifyCallback(0.9, 'weight', 'global', large_final, Schedule(sched_agp, start_pct=0.1, end_pct=0.7),
                              layer_type=(nn.Conv1d, nn.Linear))
    t = timed_fit(learn, epochs, cb)
    return dict(acc=float(learn.validate()[1]), time=t, sparsity=float(kp.sparsity_report(learn.model).sparsity.iloc[-1]))


def structured(lib, seed, epochs, dense_sd):
    learn = learner(seed)
    learn.model.load_state_dict(dense_sd)
    t = time.perf_counter()
    if lib == 'kdbook':
        kp.prune_learner_channels(learn, 0.5)
        cb = None
    else:
        from fasterai.prune.all import PruneCallback
        from fasterai.core.criteria import large_final
        from fasterai.core.schedule import Schedule, sched_oneshot
        from fasterai.core.granularity import Granularities
        # fasterai 0.4.1 maps Conv1d to Linear's granularities, which have no 'filter': add it (dims 1-based
        # over the weight, the 1-D analogue of fasterai's Conv2d table), else its PruneCallback raises on a Conv1d
        Granularities._granularities[nn.Conv1d] = {'weight': 0, 'shared_weight': 1, 'channel': 2, 'kernel': 3, 'filter': (2, 3),
                                                   'shared_channel': (1, 2), 'shared_kernel': (1, 3), 'layer': (1, 2, 3)}
        cb = PruneCallback(0.5, Schedule(sched_oneshot, start_pct=0.), 'local', large_final,
                           example_inputs=learn.dls.valid.one_batch()[0][:2])
    timed_fit(learn, epochs, cb)
    t = time.perf_counter() - t
    return dict(acc=float(learn.validate()[1]), time=t, params=count_params(learn.model))


def report(name, res):
    for lib, rs in res.items():
        keys = [k for k in rs[0] if k not in ('acc', 'time')]
        accs = ', '.join(f"{r['acc']:.4f}" for r in rs)
        extra = ', '.join(f"{k} {statistics.mean(r[k] for r in rs):.4g}" for k in keys)
        print(f"[{name}] {lib:8s} acc {statistics.mean(r['acc'] for r in rs):.4f} (runs: {accs}), "
              f"time median {statistics.median(r['time'] for r in rs):.1f}s, {extra}")
    k, f = (statistics.median(r['time'] for r in res[l]) for l in ('kdbook', 'fasterai'))
    print(f"[{name}] time ratio kdbook/fasterai = {k/f:.2f}")


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=40)
    p.add_argument('--seeds', type=int, default=2)
    p.add_argument('--part', default='all', choices=['unstructured', 'structured', 'all'])
    p.add_argument('--every', type=int, default=1, help="kdbook's mask update period in batches")
    a = p.parse_args()
    EVERY = a.every
    import fasterai; print(f"torch {torch.__version__}, fasterai {fasterai.__version__}, {torch.get_num_threads()} threads")
    if a.part in ('unstructured', 'all'):
        res = {'kdbook': [], 'fasterai': []}
        for s in range(a.seeds):
            for lib in res: res[lib].append(unstructured(lib, s, a.epochs))
        report('unstructured 90%', res)
    if a.part in ('structured', 'all'):
        dense = learner(0); timed_fit(dense, a.epochs)
        print(f"[structured] dense acc {float(dense.validate()[1]):.4f}, params {count_params(dense.model)}")
        sd = {k: v.clone() for k, v in dense.model.state_dict().items()}
        res = {'kdbook': [], 'fasterai': []}
        for s in range(a.seeds):
            for lib in res: res[lib].append(structured(lib, s, a.epochs, sd))
        report('structured 50% channels', res)
