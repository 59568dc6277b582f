"""Acceptance experiments of knowledge distillation on MNIST-1D (issue 4): label-efficient and equal-data KD.

Teacher `cnn1d(64)` and student `cnn1d(16)`, `fit_one_cycle`, settings from settings.ini
(`kdbook.settings.book_settings`). Three splits (`mnist1d_dls`' default): 3,500 training signals, 500 validation
signals (a stratified share of MNIST-1D's 4,000 training signals) and `dls.test`, MNIST-1D's 1,000 held-out signals.
For every seed: train a teacher with the book's strong recipe (3x the settings' epochs, 120, with
`InputNoise(0.1, max_shift=2)`), then students that differ only in their recipe (none gets more epochs or
augmentation than its teacher). The ensemble row distils from 3 teachers: the seed's own and those of the next two
seeds of the list, cyclically. Every job records its valid accuracy, its test accuracy and its top-1 agreement with
its teacher on the test split. Prints the teacher's line and two tables, mean ± std over seeds, and the time per run.

Protocol: this script chooses nothing (alpha, T, lr, wd, epochs come from settings.ini or the row's name). The one
choice the book makes from these tables, the best-tuned scratch recipe of table (b), is made on valid accuracy;
every comparison is reported on test accuracy.

    OMP_NUM_THREADS=1 python benchmarks/kd_experiments.py            # 5 seeds, 2 worker processes
    OMP_NUM_THREADS=1 python benchmarks/kd_experiments.py --quick    # 2 epochs per 40 (teacher 6): a smoke test
    OMP_NUM_THREADS=1 python benchmarks/kd_experiments.py --report kd_results.json  # the tables of a saved run

The loaders are kdbook's own `mnist1d_dls` (batch-level `kdbook.data.TensorDL`, the loader users get); the
training order is seeded per run.
"""
from __future__ import annotations
import argparse, json, os, time, multiprocessing as mp
from pathlib import Path

# (table, row name, job key): the order of the rows in the printed tables
ROWS_A = [('a', 'scratch, 100% labels', 'scratch40'),
          ('a', 'scratch, 10% labels', 'scratch_l10'),
          ('a', 'KD, 10% labels + soft targets of all inputs', 'kd_l10'),
          ('a', 'scratch, 5% labels', 'scratch_l5'),
          ('a', 'KD, 5% labels + soft targets of all inputs', 'kd_l5'),
          ('a', 'KD, no labels (alpha=1)', 'kd_l0')]
ROWS_B = [('b', 'scratch, 40 ep (lr 1e-2, wd 1e-2)', 'scratch40'),
          ('b', 'scratch, 40 ep (lr 3e-3, wd 1e-2)', 'scratch40_lr3e-3'),
          ('b', 'scratch, 40 ep (lr 1e-2, wd 1e-1)', 'scratch40_wd1e-1'),
          ('b', 'KD, 40 ep', 'kd40'),
          ('b', 'scratch, 60 ep', 'scratch60'),
          ('b', 'KD, 60 ep', 'kd60'),
          ('b', 'scratch + InputNoise, 60 ep', 'scratch60_noise'),
          ('b', 'KD + InputNoise (consistent teaching), 60 ep', 'kd60_noise'),
          ('b', 'KD from an ensemble of 3 teachers, 60 ep', 'kd60_ens'),
          ('b', 'scratch, 120 ep', 'scratch120'),
          ('b', 'KD, 120 ep', 'kd120')]

# Most telling jobs first, so a run stopped early (see --report) still answers (a) and (b)
ORDER = ['scratch40', 'scratch_l10', 'kd_l10', 'kd40', 'scratch60', 'kd60', 'scratch_l5', 'kd_l5', 'scratch40_wd1e-1',
         'scratch40_lr3e-3', 'kd60_noise', 'scratch60_noise', 'kd60_ens', 'kd_l0', 'scratch120', 'kd120']

def job_spec(key, s):
    "Recipe of the student job `key`: epochs, lr, wd, label share, KD settings, augmentation"
    e = s['epochs']
    d = dict(epochs=e, lr=s['lr'], wd=s['wd'], keep=None, kd=False, alpha=s['alpha'], T=s['temperature'],
             noise=False, ensemble=False)
    if key.startswith('scratch_l') or key.startswith('kd_l'):
        d['keep'] = int(key.split('_l')[1])/100
        d['kd'] = key.startswith('kd')
        if d['keep'] == 0: d['alpha'] = 1.
        return d
    n = int(''.join(c for c in key.split('_')[0] if c.isdigit()))
    d['epochs'] = n*e//40
    d['kd'] = key.startswith('kd')
    if key.endswith('lr3e-3'): d['lr'] = 3e-3
    if key.endswith('wd1e-1'): d['wd'] = 1e-1
    d['noise'] = key.endswith('noise')
    d['ensemble'] = key.endswith('ens')
    return d

def _setup():
    import torch
    torch.set_num_threads(1)

def fast_dls(bs, seed):
    "`mnist1d_dls` on the CPU, three splits (train, valid, `dls.test`): kdbook's batch-level loader, seeded order"
    from kdbook.data import mnist1d_dls
    return mnist1d_dls(bs=bs, seed=seed, device='cpu', num_workers=0)

def _preds(model, dl):
    "Top-1 predictions and labels of `model` over `dl` (kdbook.report's, in eval mode)"
    from kdbook.report import top1_preds
    return top1_preds(model, dl)

def _acc(p, y): return float((p == y).float().mean())

def teacher_epochs(s):
    "Epochs of the strong teacher: `kdbook.pipeline.teacher_epochs` of the settings' epochs (3x: 120)"
    from kdbook.pipeline import teacher_epochs as for_students
    return for_students(s['epochs'])

def train_teacher(args):
    "Train the teacher of one seed with the strong recipe; return its state dict, valid and test accuracy, time"
    seed, s = args
    _setup()
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from fastai.callback.all import ProgressCallback  # noqa: F401 (adds `Learner.no_bar`)
    from kdbook.models import cnn1d
    from kdbook.data import InputNoise
    dls = fast_dls(s['bs'], seed)
    set_seed(seed)
    learn = Learner(dls, cnn1d(s['teacher_width']), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    cbs=InputNoise(0.1, max_shift=2))
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(teacher_epochs(s), s['lr'], wd=s['wd'])
    secs = time.perf_counter() - t
    valid_acc, test_acc = (_acc(*_preds(learn.model, dl)) for dl in (dls.valid, dls.test))
    return dict(seed=seed, key='teacher', valid_acc=valid_acc, test_acc=test_acc, test_agree=1.0, secs=secs,
                state={k: v.clone() for k,v in learn.model.state_dict().items()})

def ensemble_seeds(seed, seeds, n=3):
    "The seeds of the ensemble's teachers for `seed`: its own and the next `n-1` of `seeds`, cyclically"
    i = seeds.index(seed)
    return [seeds[(i+j) % len(seeds)] for j in range(min(n, len(seeds)))]

def train_student(args):
    "Train one student recipe for one seed; return valid and test accuracy, test agreement with its teacher, time"
    seed, key, s, teacher_states = args
    _setup()
    import torch
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from fastai.callback.all import ProgressCallback  # noqa: F401 (adds `Learner.no_bar`)
    from kdbook.models import cnn1d
    from kdbook.data import InputNoise, mask_labels
    from kdbook.teacher import Teacher
    from kdbook.distill import KDCallback
    from kdbook.soft_targets import SoftTargetCache
    d = job_spec(key, s)
    dls = fast_dls(s['bs'], seed)
    if d['keep'] is not None: dls = mask_labels(dls, d['keep'], seed=seed)
    def load(st):
        m = cnn1d(s['teacher_width']); m.load_state_dict(st); return m.eval()
    seeds = sorted(teacher_states)
    teachers = [load(teacher_states[sd]) for sd in (ensemble_seeds(seed, seeds) if d['ensemble'] else [seed])]
    teacher = Teacher(teachers)
    cbs = []
    if d['noise']: cbs.append(InputNoise(std=0.1, max_shift=2))
    if d['kd']:
        cache = None if d['noise'] else SoftTargetCache.build(teacher, dls.train)
        cbs.append(KDCallback(teacher, alpha=d['alpha'], T=d['T'], cache=cache))
    set_seed(seed)
    learn = Learner(dls, cnn1d(s['student_width']), loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(d['epochs'], d['lr'], wd=d['wd'])
    secs = time.perf_counter() - t
    valid_acc = _acc(*_preds(learn.model, dls.valid))
    p,y = _preds(learn.model, dls.test)
    with torch.no_grad(): pt = torch.cat([teacher(xb) for xb,_ in dls.test]).argmax(1)
    return dict(seed=seed, key=key, valid_acc=valid_acc, test_acc=_acc(p, y), test_agree=_acc(p, pt), secs=secs)

def _fmt(vals, pct=True):
    import numpy as np
    if not vals: return 'not run'
    v = np.array(vals)*(100 if pct else 1)
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"

def tables(results, n_seeds):
    "Markdown tables (a), (b) and the teacher line from a list of result dicts"
    import numpy as np
    by = {}
    for r in results: by.setdefault(r['key'], []).append(r)
    out = []
    t = by.get('teacher', [])
    out.append(f"Teacher cnn1d(64), {n_seeds} seeds: valid acc {_fmt([r['valid_acc'] for r in t])} %, "
               f"test acc {_fmt([r['test_acc'] for r in t])} %, "
               f"{np.mean([r['secs'] for r in t]) if t else float('nan'):.0f} s per run\n")
    for name,rows in (('(a) label-efficient distillation', ROWS_A), ('(b) equal data', ROWS_B)):
        out += [f"## {name}\n",
                "| student cnn1d(16) | valid acc % | test acc % | test agreement % | s per run | seeds |",
                "|---|---|---|---|---|---|"]
        for _,label,key in rows:
            rs = by.get(key, [])
            secs = f"{np.mean([r['secs'] for r in rs]):.0f}" if rs else '-'
            out.append(f"| {label} | {_fmt([r['valid_acc'] for r in rs])} | {_fmt([r['test_acc'] for r in rs])} | "
                       f"{_fmt([r['test_agree'] for r in rs])} | {secs} | {len(rs)} |")
        out.append('')
    return '\n'.join(out)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, default=5, help='number of seeds (settings.ini seed, +1, +2, ...)')
    ap.add_argument('--workers', type=int, default=2, help='parallel worker processes (1 thread each)')
    ap.add_argument('--quick', action='store_true', help='2 epochs per 40: a smoke test')
    ap.add_argument('--only', default='', help='comma-separated job keys to run (default: all)')
    ap.add_argument('--out', default='/tmp/kd_results.json', help='JSON file of the raw results (written as they come)')
    ap.add_argument('--report', default='', help='only print the tables of a JSON file written by an earlier run')
    a = ap.parse_args()
    if a.report:
        d = json.loads(Path(a.report).read_text())
        return print(tables(d['results'], len({r['seed'] for r in d['results']})))
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from kdbook.settings import book_settings
    s = book_settings(Path(__file__).resolve().parent.parent)
    if a.quick: s['epochs'] = 2
    seeds = [s['seed'] + i for i in range(a.seeds)]
    keys = ORDER
    if a.only: keys = [k for k in keys if k in a.only.split(',')]
    t0, results = time.perf_counter(), []
    def save():
        Path(a.out).write_text(json.dumps(dict(settings=s, results=[{k: v for k,v in r.items() if k != 'state'}
                                                                      for r in results]), indent=1))
    ctx = mp.get_context('spawn')
    with ctx.Pool(a.workers) as pool:
        teachers = {}
        for r in pool.imap_unordered(train_teacher, [(sd, s) for sd in seeds]):
            teachers[r['seed']] = r['state']; results.append(r); save()
            print(f"[{time.perf_counter()-t0:6.0f}s] teacher seed {r['seed']}: valid {r['valid_acc']:.4f} "
                  f"test {r['test_acc']:.4f} ({r['secs']:.0f}s)", flush=True)
        jobs = [(sd, k, s, teachers) for k in keys for sd in seeds]
        for r in pool.imap_unordered(train_student, jobs):
            results.append(r); save()
            print(f"[{time.perf_counter()-t0:6.0f}s] {r['key']} seed {r['seed']}: valid {r['valid_acc']:.4f} "
                  f"test {r['test_acc']:.4f} agree {r['test_agree']:.4f} ({r['secs']:.0f}s)", flush=True)
    print(f"\nTotal wall time {time.perf_counter()-t0:.0f} s, {a.workers} workers, {len(seeds)} seeds, settings: "
          f"epochs={s['epochs']} (teacher {teacher_epochs(s)}, InputNoise(0.1, max_shift=2)) lr={s['lr']} "
          f"wd={s['wd']} bs={s['bs']} alpha={s['alpha']} T={s['temperature']}\n")
    print(tables(results, len(seeds)))

if __name__ == '__main__': main()
