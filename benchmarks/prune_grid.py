"""Pruning by default: kdbook's `PruneCallback(sparsity=s)`, the call a user writes first, against fasterai 0.4.1's
best schedule on a grid of jobs that kdbook's defaults were not tuned on, 3 seeds each, side by side in one run.

The grid (MNIST-1D from `mnist1d_dls`, 4,000 training and 1,000 validation signals; `fit_one_cycle`, wd 1e-2):
- models: an MLP (`mlp(40, (128, 128), 10)`, 22.8k weights) and a CNN (`cnn1d(64)`, the book's teacher, 28.1k);
- fits: short (8 epochs) and long (30 epochs);
- starting points: pruning from scratch (random init, lr 1e-2) and fine-tuning the trained dense model of the same
  seed (lr 3e-3);
- global magnitude sparsity of 50% and 90% over every conv and linear weight (the head included).
kdbook runs `PruneCallback(s)` with nothing else set. fasterai runs `SparsifyCallback(s, 'weight', 'global',
large_final, schedule, layer_type=(Conv1d, Linear))` once with each of its named schedules (`one_shot`, `iterative`,
`agp`, `one_cycle`, `cos`, `lin`, with their own default windows; `dsd` ends dense and is left out); its best
schedule is the one with the highest mean accuracy in that cell. Times are the fits' wall times, measured in the same
worker processes, kdbook's and fasterai's runs of a cell interleaved.

fasterai needs torchvision, which does not import in kdbook's venv, so this runs in a separate benchmark environment
(not part of kdbook's install, not run in CI):

    python3 -m venv /work/benchenv
    /work/benchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 fasterai==0.4.1
    /work/benchenv/bin/pip install -e /path/to/kdbook
    OMP_NUM_THREADS=1 /work/benchenv/bin/python benchmarks/prune_grid.py --jobs 2 --holdout 3 --first-seed 10 \
        --out benchmarks/prune_grid.json
    OMP_NUM_THREADS=1 /work/benchenv/bin/python benchmarks/prune_grid.py --callback-cost --out benchmarks/prune_grid.json
    OMP_NUM_THREADS=1 /work/benchenv/bin/python benchmarks/prune_grid.py --recheck 16 --out benchmarks/prune_grid.json

(the saved run: seeds 10-12 choose fasterai's best schedule, seeds 13-15 run kdbook and that schedule again; kdbook's
windows and 32 steps at 90% were chosen on seeds 0-5, its 16 steps at 50% checked on seeds 10-15 before they were
adopted, so seeds 16-18 run both once more).
`--time model,fit,start,sparsity,schedule` times one cell alone, kdbook and fasterai alternating in one process (the
grid's own times come from two worker processes at once, so they are noisy), `--reps` rounds, `--clock cpu` for the
process's CPU time; with `--out` it adds the ratio to the JSON. `--callback-cost --out JSON` times the events of
kdbook's callback and of fasterai's best schedule in every cell of a saved grid, 2 seeds each, and adds what their
difference implies for the fit-time ratio (the machine's drift between fits is larger than that difference).
`--recheck 16 --out JSON` runs kdbook and each cell's selected schedule once more on seeds 16-18, which no choice of
either side has seen (the default's 16 AGP steps at 50% sparsity were adopted after a check on seeds 10-15).
`--only-kdbook` runs the kdbook side alone in kdbook's own venv (for choosing defaults: `--kdbook-kw` passes
PruneCallback arguments, e.g. '{"pct_start": 0.1, "pct_end": 0.6}'). The pruning chapter reads the JSON.
`prune_grid.json` holds the runs of the second default (global magnitude, 32/16 mask updates); after the default
became LAMP at every batch (chosen on `prune_jobs.py`'s jobs), its kdbook side was run again on seeds 10-12:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_grid.py --only-kdbook --first-seed 10 --seeds 3 \
        --out benchmarks/prune_grid_lamp.json
"""
import argparse, contextlib, io, itertools, json, multiprocessing as mp, platform, statistics, time
from pathlib import Path
import torch
from torch import nn

MODELS = ('mlp', 'cnn')
FITS = {'short': 8, 'long': 30}
STARTS = ('scratch', 'finetune')
SPARSITIES = (0.5, 0.9)
FASTERAI_SCHEDULES = ('one_shot', 'iterative', 'agp', 'one_cycle', 'cos', 'lin')
LR = {'scratch': 1e-2, 'finetune': 3e-3}
_dense_cache = {}


def _model(name):
    from kdbook.models import mlp, cnn1d
    return mlp(40, (128, 128), 10) if name == 'mlp' else cnn1d(64)


def _learner(model):
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.callback.progress import ProgressCallback
    import fastai.callback.schedule  # noqa: F401  (patches Learner.fit_one_cycle)
    from kdbook.data import mnist1d_dls
    learn = Learner(mnist1d_dls(valid_pct=None), model, metrics=accuracy)
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, ProgressCallback)))
    learn.logger = lambda *a, **k: None
    return learn


def _fit(learn, epochs, lr, cbs=None, clock=time.perf_counter):
    "fit_one_cycle with fasterai's prints silenced; seconds of `clock` (wall by default)"
    t = clock()
    with contextlib.redirect_stdout(io.StringIO()): learn.fit_one_cycle(epochs, lr, wd=1e-2, cbs=cbs)
    return clock() - t


def dense(model, fit, seed):
    "The dense model of this seed trained with the fit's recipe: (state_dict, accuracy, seconds), once per worker"
    key = (model, fit, seed)
    if key not in _dense_cache:
        torch.manual_seed(seed)
        learn = _learner(_model(model))
        t = _fit(learn, FITS[fit], LR['scratch'])
        _dense_cache[key] = ({k: v.clone() for k, v in learn.model.state_dict().items()},
                             float(learn.validate()[1]), t)
    return _dense_cache[key]


def _callback(lib, sched, s, kdbook_kw, layer_type=(nn.Conv1d, nn.Linear)):
    if lib == 'kdbook':
        from kdbook.prune import PruneCallback
        return PruneCallback(s, **kdbook_kw)
    from fasterai.sparse.all import SparsifyCallback
    from fasterai.core.criteria import large_final
    from fasterai.core import schedule as fs
    proto = getattr(fs, sched)    # fasterai's schedules are module-level objects with state: copy this one
    fresh = fs.Schedule(proto.sched_func, proto.start_pct, proto.end_pct, proto.start_val, proto.end_val)
    return SparsifyCallback(s, 'weight', 'global', large_final, fresh, layer_type=layer_type) # a fraction


def _start(model, fit, start, seed):
    "The Learner a grid fit starts from, in a worker of one thread: the seed's initial model, or its dense model"
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    m = _model(model)
    if start == 'finetune': m.load_state_dict(dense(model, fit, seed)[0])
    return _learner(m)


def run(task, clock=time.perf_counter):
    "One pruning fit of the grid: accuracy, measured sparsity, seconds"
    lib, sched, model, fit, start, s, seed, kdbook_kw = task
    learn = _start(model, fit, start, seed)
    t = _fit(learn, FITS[fit], LR[start], cbs=_callback(lib, sched, s, kdbook_kw), clock=clock)
    from kdbook.prune import sparsity_report
    sp = float(sparsity_report(learn.model).sparsity.iloc[-1])
    return dict(lib=lib, schedule=sched, model=model, fit=fit, start=start, sparsity=s, seed=seed,
                acc=float(learn.validate()[1]), measured_sparsity=sp, seconds=t)


def dense_run(task):
    model, fit, seed = task
    torch.set_num_threads(1)
    return task, dense(model, fit, seed)


def summarize(runs, denses):
    "One row per grid cell: dense, kdbook's default, fasterai's best schedule (by mean accuracy), time ratio"
    mean = lambda xs: statistics.mean(xs)
    rows = []
    for model, fit, start, s in itertools.product(MODELS, FITS, STARTS, SPARSITIES):
        cell = [r for r in runs if (r['model'], r['fit'], r['start'], r['sparsity']) == (model, fit, start, s)]
        if not cell: continue
        kd = [r for r in cell if r['lib'] == 'kdbook']
        fa = {sc: [r for r in cell if r['lib'] == 'fasterai' and r['schedule'] == sc] for sc in FASTERAI_SCHEDULES}
        fa = {k: v for k, v in fa.items() if v}
        d = mean([r['acc'] for r in denses if (r['model'], r['fit']) == (model, fit)])
        row = dict(model=model, fit=fit, start=start, sparsity=s, dense=round(100 * d, 2),
                   kdbook=round(100 * mean([r['acc'] for r in kd]), 2),
                   kdbook_std=round(100 * statistics.pstdev([r['acc'] for r in kd]), 2))
        if fa:
            best = max(fa, key=lambda k: mean([r['acc'] for r in fa[k]]))
            fb = fa[best]
            row.update(fasterai_best=best, fasterai=round(100 * mean([r['acc'] for r in fb]), 2),
                       fasterai_std=round(100 * statistics.pstdev([r['acc'] for r in fb]), 2))
            row['diff'] = round(row['kdbook'] - row['fasterai'], 2)
            row['time_ratio'] = round(statistics.median(r['seconds'] for r in kd) /
                                      statistics.median(r['seconds'] for r in fb), 3)
        row['kdbook_vs_dense'] = round(row['kdbook'] - row['dense'], 2)
        rows.append(row)
    return rows


def time_cell(model, fit, start, s, schedule, reps=5, clock='wall'):
    """kdbook's default and one fasterai schedule on one cell, alternating in one process (the order flips every
    round): median seconds of each, wall clock or the process's CPU time (one thread: the same work, less noise from
    other processes)"""
    torch.set_num_threads(1)
    t, clk = {'kdbook': [], 'fasterai': []}, {'wall': time.perf_counter, 'cpu': time.process_time}[clock]
    for i in range(reps):
        for lib in (list(t) if i % 2 == 0 else list(t)[::-1]):
            t[lib].append(run((lib, schedule, model, fit, start, s, i % 3, {}), clock=clk)['seconds'])
    k, f = statistics.median(t['kdbook']), statistics.median(t['fasterai'])
    print(f"[time] {model} {fit} {start} {s}: kdbook {k:.2f} s, fasterai {schedule} {f:.2f} s, ratio {k/f:.3f} "
          f"(medians of {reps}, alternating, {clock} clock)")
    return k / f


_EVENTS = ('before_fit', 'before_epoch', 'before_train', 'before_batch', 'after_pred', 'after_loss', 'before_backward',
           'after_backward', 'before_step', 'after_step', 'after_batch', 'after_train', 'before_validate',
           'after_validate', 'after_epoch', 'after_fit')


def callback_cost(task):
    """One fit of the grid with the pruning callback's events timed (process CPU time): (seconds inside the callback,
    seconds of the whole fit). The two libraries' fits differ only by their callback, so the fit-time ratio they imply,
    (fit without callback + kdbook's) / (fit without callback + fasterai's), is free of the machine's drift between
    two fits, which on a shared host is larger than the difference being measured."""
    lib, sched, model, fit, start, s, seed = task
    learn, cb, inside = _start(model, fit, start, seed), _callback(lib, sched, s, {}), [0.]
    for ev in _EVENTS:
        f = getattr(type(cb), ev, None)
        if f is None: continue
        def timed(_f=f):
            t = time.process_time()
            try: return _f(cb)
            finally: inside[0] += time.process_time() - t
        setattr(cb, ev, timed)
    total = _fit(learn, FITS[fit], LR[start], cbs=cb, clock=time.process_time)
    return task, inside[0], total


def callback_costs(rows, seeds=(0, 1), jobs=2):
    "Each cell's kdbook default against fasterai's best schedule there: callback ms per fit and the implied ratio"
    tasks = [(lib, r['fasterai_best'], r['model'], r['fit'], r['start'], r['sparsity'], seed)
             for r in rows for seed in seeds for lib in ('kdbook', 'fasterai')]
    with mp.get_context('fork').Pool(jobs) as pool: res = pool.map(callback_cost, tasks, chunksize=1)
    out = []
    for r in rows:
        mine = [x for x in res if x[0][2:6] == (r['model'], r['fit'], r['start'], r['sparsity'])]
        cb = {lib: statistics.mean(c for t, c, _ in mine if t[0] == lib) for lib in ('kdbook', 'fasterai')}
        plain = statistics.mean(total - c for _, c, total in mine)
        out.append(dict(model=r['model'], fit=r['fit'], start=r['start'], sparsity=r['sparsity'],
                        fasterai_schedule=r['fasterai_best'], kdbook_ms=round(1e3 * cb['kdbook'], 1),
                        fasterai_ms=round(1e3 * cb['fasterai'], 1), fit_without_callback_s=round(plain, 2),
                        implied_ratio=round((plain + cb['kdbook']) / (plain + cb['fasterai']), 3)))
    return out


def holdout_rows(runs, rows):
    "kdbook's default against the schedule each cell selected, both run again on fresh seeds: no selection bias"
    res = []
    for row in rows:
        key = (row['model'], row['fit'], row['start'], row['sparsity'])
        cell = [r for r in runs if (r['model'], r['fit'], r['start'], r['sparsity']) == key]
        kd = [100 * r['acc'] for r in cell if r['lib'] == 'kdbook']
        fa = [100 * r['acc'] for r in cell if r['lib'] == 'fasterai']
        res.append(dict(zip(('model', 'fit', 'start', 'sparsity'), key), fasterai_schedule=row.get('fasterai_best'),
                        kdbook=round(statistics.mean(kd), 2), fasterai=round(statistics.mean(fa), 2) if fa else None,
                        diff=round(statistics.mean(kd) - statistics.mean(fa), 2) if fa else None))
    return res


def recheck(rows, first_seed, seeds=3, jobs=2, kdbook_kw=None):
    """kdbook's default and the fasterai schedule each cell of `rows` selected, run again on `seeds` seeds from
    `first_seed`, on which no choice was made: (one row per cell, from `holdout_rows`; the runs)"""
    sds = range(first_seed, first_seed + seeds)
    with mp.get_context('fork').Pool(jobs) as pool:
        for key, val in pool.map(dense_run, sorted({(r['model'], r['fit'], sd) for r in rows for sd in sds})):
            _dense_cache[key] = val
    libs = lambda r: [('kdbook', 'default')] + ([('fasterai', r['fasterai_best'])] if 'fasterai_best' in r else [])
    tasks = [(lib, sc, r['model'], r['fit'], r['start'], r['sparsity'], seed, kdbook_kw or {})
             for r in rows for seed in sds for lib, sc in libs(r)]
    with mp.get_context('fork').Pool(jobs) as pool: runs = pool.map(run, tasks, chunksize=1) # dense models inherited
    return holdout_rows(runs, rows), runs


def main(seeds=3, jobs=2, only_kdbook=False, kdbook_kw=None, out=None, models=MODELS, fits=tuple(FITS), holdout=0,
         first_seed=0):
    kdbook_kw = kdbook_kw or {}
    scheds = [('kdbook', 'default')] + ([] if only_kdbook else [('fasterai', sc) for sc in FASTERAI_SCHEDULES])
    tasks = [(lib, sc, m, f, st, s, seed, kdbook_kw)
             for m, f, st, s, seed in itertools.product(models, fits, STARTS, SPARSITIES,
                                                        range(first_seed, first_seed + seeds))
             for lib, sc in scheds]          # a cell's runs one after the other: kdbook's beside fasterai's
    t0 = time.time()
    with mp.get_context('fork').Pool(jobs) as pool:
        for key, val in pool.map(dense_run, list(itertools.product(models, fits,
                                                                   range(first_seed, first_seed + seeds)))):
            _dense_cache[key] = val
    denses = [dict(model=m, fit=f, seed=sd, acc=v[1], seconds=v[2]) for (m, f, sd), v in _dense_cache.items()
              if sd < first_seed + seeds]
    with mp.get_context('fork').Pool(jobs) as pool: runs = pool.map(run, tasks, chunksize=1) # the dense models inherited
    rows = summarize(runs, denses)
    held = []
    if holdout:                              # seeds never used to select fasterai's schedule
        held, hruns = recheck(rows, first_seed + seeds, holdout, jobs, kdbook_kw)
        runs = runs + [{**r, 'holdout': True} for r in hruns]
    import fastai
    env = dict(torch=torch.__version__, fastai=fastai.__version__, python=platform.python_version(), jobs=jobs,
               threads=1, seeds=seeds, first_seed=first_seed, holdout_seeds=holdout, kdbook_kw=kdbook_kw,
               seconds=round(time.time() - t0), date=time.strftime('%Y-%m-%d'))
    if not only_kdbook:
        import fasterai; env['fasterai'] = fasterai.__version__
    for r in runs:
        if abs(r['measured_sparsity'] - r['sparsity']) > 0.01:
            print(f"WARNING: {r['lib']} {r['schedule']} {r['model']} {r['fit']} {r['start']} reached "
                  f"{r['measured_sparsity']:.3f}, not {r['sparsity']}")
    res = dict(env=env, rows=rows, holdout=held, runs=runs, dense=denses)
    if out: Path(out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--only-kdbook', action='store_true')
    p.add_argument('--kdbook-kw', default='{}', help='PruneCallback keyword arguments, as JSON')
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--fits', default=','.join(FITS))
    p.add_argument('--holdout', type=int, default=0, help='fresh seeds on which kdbook and the selected schedule run again')
    p.add_argument('--first-seed', type=int, default=0, help='the first seed (default 0)')
    p.add_argument('--time', default=None, help="time one cell alone: 'model,fit,start,sparsity,fasterai_schedule'")
    p.add_argument('--reps', type=int, default=5, help='--time: rounds of each library')
    p.add_argument('--clock', default='wall', choices=('wall', 'cpu'), help='--time: wall clock or process CPU time')
    p.add_argument('--callback-cost', action='store_true',
                   help="time the callbacks' events in each cell of the saved grid (--out), kdbook against fasterai's best")
    p.add_argument('--recheck', type=int, default=None, metavar='FIRST_SEED',
                   help="with --out: run kdbook and each cell's selected schedule again on --seeds seeds from this one")
    p.add_argument('--out', default=None)
    a = p.parse_args()
    if a.time:
        m, f, st, sp, sc = a.time.split(',')
        r = time_cell(m, f, st, float(sp), sc, a.reps, a.clock)
        if a.out:                          # added to the grid's results, which the pruning chapter reads
            res = json.loads(Path(a.out).read_text())
            cells = [c for c in res.get('time_cells', []) if c['cell'] != a.time]
            res['time_cells'] = cells + [dict(cell=a.time, ratio=round(r, 3), reps=a.reps, clock=a.clock,
                                              date=time.strftime('%Y-%m-%d'))]
            Path(a.out).write_text(json.dumps(res, indent=1))
        raise SystemExit
    if a.recheck is not None:
        res = json.loads(Path(a.out).read_text())
        res['recheck'] = dict(rows=recheck(res['rows'], a.recheck, a.seeds, a.jobs)[0], first_seed=a.recheck,
                              seeds=a.seeds, date=time.strftime('%Y-%m-%d'))
        Path(a.out).write_text(json.dumps(res, indent=1))
        import pandas as pd
        print(pd.DataFrame(res['recheck']['rows']).to_string(index=False))
        raise SystemExit
    if a.callback_cost:
        res = json.loads(Path(a.out).read_text())
        res['callback_costs'] = callback_costs(res['rows'], (res['env'].get('first_seed', 0),
                                                             res['env'].get('first_seed', 0) + 1), a.jobs)
        res['callback_costs_env'] = dict(date=time.strftime('%Y-%m-%d'), seeds=2, jobs=a.jobs, clock='cpu')
        Path(a.out).write_text(json.dumps(res, indent=1))
        import pandas as pd
        print(pd.DataFrame(res['callback_costs']).to_string(index=False))
        raise SystemExit
    res = main(a.seeds, a.jobs, a.only_kdbook, json.loads(a.kdbook_kw), a.out, tuple(a.models.split(',')),
               tuple(a.fits.split(',')), a.holdout, a.first_seed)
    import pandas as pd
    pd.set_option('display.width', 200)
    print(json.dumps(res['env']))
    print(pd.DataFrame(res['rows']).to_string(index=False))
    if res['holdout']: print(pd.DataFrame(res['holdout']).to_string(index=False))
