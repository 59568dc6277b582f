"""Acceptance experiments of knowledge distillation on MNIST-1D (issue 4): label-efficient and equal-data KD.

Teacher `cnn1d(64)` and student `cnn1d(16)`, `fit_one_cycle`, settings from settings.ini
(`kdbook.settings.book_settings`).
For every seed: train a teacher (40 epochs), then students that differ only in their recipe. Prints two tables,
mean ± std over seeds of the validation accuracy and of the top-1 agreement with the teacher, and the time per run.

    OMP_NUM_THREADS=1 python benchmarks/kd_experiments.py            # 3 seeds, 2 worker processes: 6 min measured on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/kd_experiments.py --quick    # 2 seeds, 2 epochs: a smoke test of the script
    OMP_NUM_THREADS=1 python benchmarks/kd_experiments.py --chapters # one seed: the MNIST-1D tables of book chapters 3-6

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
    "`mnist1d_dls` on the CPU: kdbook's batch-level loader (`TensorDL`), the one users get; training order seeded"
    from kdbook.data import mnist1d_dls
    return mnist1d_dls(bs=bs, seed=seed, device='cpu', num_workers=0)

def _preds(model, dl):
    import torch
    model.eval()
    with torch.no_grad(): return torch.cat([model(xb) for xb,_ in dl]).argmax(1), torch.cat([yb for _,yb in dl])

def train_teacher(args):
    "Train the teacher of one seed; return its state dict, accuracy and time"
    seed, s = args
    _setup()
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from fastai.callback.all import ProgressCallback
    from kdbook.models import cnn1d
    dls = fast_dls(s['bs'], seed)
    set_seed(seed)
    learn = Learner(dls, cnn1d(s['teacher_width']), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(s['epochs'], s['lr'], wd=s['wd'])
    secs = time.perf_counter() - t
    p,y = _preds(learn.model, dls.valid)
    return dict(seed=seed, key='teacher', acc=float((p == y).float().mean()), agree=1.0, secs=secs,
                state={k: v.clone() for k,v in learn.model.state_dict().items()})

def train_student(args):
    "Train one student recipe for one seed; return accuracy, agreement with its teacher and time"
    seed, key, s, teacher_states = args
    _setup()
    import torch
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from fastai.callback.all import ProgressCallback
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
    teachers = [load(st) for st in (teacher_states.values() if d['ensemble'] else [teacher_states[seed]])]
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
    p,y = _preds(learn.model, dls.valid)
    with torch.no_grad(): pt = torch.cat([teacher(xb) for xb,_ in dls.valid]).argmax(1)
    return dict(seed=seed, key=key, acc=float((p == y).float().mean()), agree=float((p == pt).float().mean()), secs=secs)

CHAPTER_JOBS = [('03 sweep', f'T={T}', dict(T=T)) for T in (1, 2, 8, 16)] + \
               [('03 sweep', f'alpha={a}', dict(alpha=a)) for a in (0.5, 1.0)] + \
               [('04 hard vs soft', 'hard_kd_loss, 100% labels', dict(loss='hard')),
                ('04 hard vs soft', 'hard_kd_loss, 10% labels', dict(loss='hard', keep=0.1)),
                ('05 features', 'hint on block2 (FitNets), 10% labels', dict(kd=False, hint=True, keep=0.1)),
                ('06 weight transfer', 'random init, 10 epochs', dict(kd=False, epochs=10)),
                ('06 weight transfer', 'transferred init, 10 epochs', dict(kd=False, epochs=10, transfer=True)),
                ('06 weight transfer', 'transferred init, 40 epochs', dict(kd=False, transfer=True)),
                ('06 weight transfer', 'transferred init, 40 epochs, KD', dict(transfer=True))]

def chapter_job(args):
    "One student of the chapters' MNIST-1D tables (seed of settings.ini, teacher given): accuracy, agreement, time"
    chapter, name, kw, s, state = args
    _setup()
    import torch
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from fastai.callback.all import ProgressCallback
    from kdbook.models import cnn1d, transfer_weights
    from kdbook.losses import kd_loss, hard_kd_loss, fitnet_loss
    from kdbook.data import mask_labels
    from kdbook.teacher import Teacher
    from kdbook.distill import KDCallback, FeatureKDCallback
    from kdbook.soft_targets import SoftTargetCache
    seed = s['seed']
    dls = fast_dls(s['bs'], seed)
    if kw.get('keep'): dls = mask_labels(dls, kw['keep'], seed=seed)
    teacher = cnn1d(s['teacher_width']); teacher.load_state_dict(state); teacher.eval()
    t = Teacher(teacher)  # one Teacher for KDCallback and FeatureKDCallback
    cbs = []
    if kw.get('kd', True):
        cbs.append(KDCallback(t, loss_func=hard_kd_loss if kw.get('loss') == 'hard' else kd_loss, alpha=kw.get('alpha', s['alpha']),
                              T=kw.get('T', s['temperature']), cache=SoftTargetCache.build(teacher, dls.train)))
    if kw.get('hint'): cbs.append(FeatureKDCallback(t, 'block2', loss_func=fitnet_loss, weight=1.))
    set_seed(seed)
    m = cnn1d(s['student_width'])
    if kw.get('transfer'): transfer_weights(teacher, m)
    learn = Learner(dls, m, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(kw.get('epochs', s['epochs']), s['lr'], wd=s['wd'])
    secs = time.perf_counter() - t
    p,y = _preds(learn.model, dls.valid)
    pt,_ = _preds(teacher, dls.valid)
    return dict(chapter=chapter, name=name, acc=float((p == y).float().mean()), agree=float((p == pt).float().mean()), secs=secs)

def _fmt(vals, pct=True):
    import numpy as np
    if not vals: return 'not run'
    v = np.array(vals)*(100 if pct else 1)
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"

def tables(results, n_seeds):
    "Markdown tables (a), (b) and the teacher row from a list of result dicts"
    import numpy as np
    by = {}
    for r in results: by.setdefault(r['key'], []).append(r)
    out = []
    t = by.get('teacher', [])
    out.append(f"Teacher cnn1d(64), {n_seeds} seeds: valid acc {_fmt([r['acc'] for r in t])} %, "
               f"{np.mean([r['secs'] for r in t]) if t else float('nan'):.0f} s per run\n")
    for name,rows in (('(a) label-efficient distillation', ROWS_A), ('(b) equal data', ROWS_B)):
        out += [f"### {name}\n", "| student cnn1d(16) | valid acc % | top-1 agreement with teacher % | s per run | seeds |",
                "|---|---|---|---|---|"]
        for _,label,key in rows:
            rs = by.get(key, [])
            secs = f"{np.mean([r['secs'] for r in rs]):.0f}" if rs else '-'
            out.append(f"| {label} | {_fmt([r['acc'] for r in rs])} | {_fmt([r['agree'] for r in rs])} | {secs} | {len(rs)} |")
        out.append('')
    return '\n'.join(out)

def run_chapters(s, a):
    "Train the seed's teacher, then the chapter students; print one table"
    t0, ctx, res = time.perf_counter(), mp.get_context('spawn'), []
    with ctx.Pool(a.workers) as pool:
        tr = pool.apply(train_teacher, ((s['seed'], s),))
        print(f"teacher seed {s['seed']}: acc {tr['acc']:.4f} ({tr['secs']:.0f}s)", flush=True)
        for r in pool.imap(chapter_job, [(c, n, kw, s, tr['state']) for c,n,kw in CHAPTER_JOBS]):
            res.append(r); Path(a.out).write_text(json.dumps(res, indent=1))
            print(f"[{time.perf_counter()-t0:6.0f}s] {r['chapter']} | {r['name']}: acc {r['acc']:.4f} agree {r['agree']:.4f} ({r['secs']:.0f}s)", flush=True)
    print("\n| chapter | student cnn1d(16), seed %d | valid acc %% | agreement %% | s |\n|---|---|---|---|---|" % s['seed'])
    for r in res: print(f"| {r['chapter']} | {r['name']} | {100*r['acc']:.1f} | {100*r['agree']:.1f} | {r['secs']:.0f} |")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, default=3, help='number of seeds (settings.ini seed, +1, +2, ...)')
    ap.add_argument('--workers', type=int, default=2, help='parallel worker processes (1 thread each)')
    ap.add_argument('--quick', action='store_true', help='2 epochs per 40: a smoke test')
    ap.add_argument('--only', default='', help='comma-separated job keys to run (default: all)')
    ap.add_argument('--out', default='/tmp/kd_results.json', help='JSON file of the raw results (written as they come)')
    ap.add_argument('--chapters', action='store_true', help="run the chapters' one-seed MNIST-1D tables instead")
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
    if a.chapters: return run_chapters(s, a)
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
            print(f"[{time.perf_counter()-t0:6.0f}s] teacher seed {r['seed']}: acc {r['acc']:.4f} ({r['secs']:.0f}s)", flush=True)
        jobs = [(sd, k, s, teachers) for k in keys for sd in seeds]
        for r in pool.imap_unordered(train_student, jobs):
            results.append(r); save()
            print(f"[{time.perf_counter()-t0:6.0f}s] {r['key']} seed {r['seed']}: acc {r['acc']:.4f} "
                  f"agree {r['agree']:.4f} ({r['secs']:.0f}s)", flush=True)
    print(f"\nTotal wall time {time.perf_counter()-t0:.0f} s, {a.workers} workers, {len(seeds)} seeds, settings: "
          f"epochs={s['epochs']} lr={s['lr']} wd={s['wd']} bs={s['bs']} alpha={s['alpha']} T={s['temperature']}\n")
    print(tables(results, len(seeds)))

if __name__ == '__main__': main()
