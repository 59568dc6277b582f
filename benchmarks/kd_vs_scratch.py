"""Distillation against the same student trained without its teacher, at equal budget, under the protocol of issue
"Results that survive a skeptic": choices on a validation split carved from the training data, results on a test
split that no choice saw, several seeds, mean +- std.

MNIST-1D as `mnist1d_dls(valid_pct=0.125)`: its 4,000 training signals split into 3,500 to train and 500 to validate
(stratified, split seed 0); its 1,000 test signals are the test split. Per seed:

- the teacher `cnn1d(--teacher-width)` (64) with the strongest recipe the book knows: `--epochs` of
  `fit_one_cycle(1e-2, wd=1e-2)` with `InputNoise(0.1, max_shift=2)`;
- for each student width in `--widths`: `cnn1d(w)` from scratch with exactly that recipe, and the same with
  `KDCallback(teacher, alpha, T)` added. `InputNoise` runs before the KD callback, so the teacher sees the same noisy,
  shifted view as the student (Beyer et al.'s "function matching", CVPR 2022). Every fit of a seed starts from the
  same seed and sees the same batches in the same order: the pair differs by the teacher alone.

`--mixup ALPHA` adds fastai's `MixUp(ALPHA)` to every fit of the run, the teacher's, the scratch students' and the KD
students' alike (a student never gets an ingredient its teacher did not). It runs after `InputNoise` (it mixes the
noisy views) and before `KDCallback`, so the teacher is asked about exactly the mixed input the student sees, and the
loss is `(1-alpha)*mixup_ce + alpha*kd`: the task term mixes the two labels, the KD term needs none (Beyer et al.'s
mixup-style "function matching"). MixUp's draws come from the seed's RNG and the frozen teacher draws nothing, so the
scratch and KD students still see the same mixed batches. Every row records `mixup` (None: off).

Each seed runs in its own process (`--jobs` at a time, one thread each); one JSON line per model, then the mean +- std
per model on both splits, and the paired difference KD - scratch per width (a difference smaller than its spread is
a tie).

    python benchmarks/kd_vs_scratch.py --seeds 0 1 2 3 4 --jobs 2 --json benchmarks/kd_vs_scratch.jsonl

Other alpha and T for the 16-channel student, where distillation has the most room (their runs beside it):

    python benchmarks/kd_vs_scratch.py --widths 16 --alpha 0.5 --T 4 --json benchmarks/kd_vs_scratch_w16_a0.5_T4.jsonl
    python benchmarks/kd_vs_scratch.py --widths 16 --alpha 0.9 --T 8 --json benchmarks/kd_vs_scratch_w16_a0.9_T8.jsonl
    python benchmarks/kd_vs_scratch.py --widths 16 --teacher-width 128 \
        --json benchmarks/kd_vs_scratch_w16_teacher128.jsonl

The pipeline's student width, 40, without and with mixup, then a schedule twice as long for everyone (teacher too):

    OMP_NUM_THREADS=1 python benchmarks/kd_vs_scratch.py --widths 40 --seeds 0 1 2 3 4 --jobs 1 \
        --json benchmarks/kd_vs_scratch_w40.jsonl
    OMP_NUM_THREADS=1 python benchmarks/kd_vs_scratch.py --widths 40 --seeds 0 1 2 3 4 --jobs 1 --mixup 0.4 \
        --json benchmarks/kd_vs_scratch_w40_mixup.jsonl
    OMP_NUM_THREADS=1 python benchmarks/kd_vs_scratch.py --widths 40 --seeds 0 1 2 3 4 --jobs 1 --epochs 240 \
        --json benchmarks/kd_vs_scratch_w40_e240.jsonl
"""
import argparse, random, sys, time
from seed_procs import seeds_main

def run_seed(a):
    "Teacher, then scratch and KD students of each width, on seed `a.seed`; one dict per model"
    import torch
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    import fastai.callback.schedule  # fit_one_cycle
    from fastai.callback.mixup import MixUp
    from kdbook.data import mnist1d_dls, InputNoise
    from kdbook.distill import KDCallback
    from kdbook.models import cnn1d
    from kdbook.report import dl_accuracy
    torch.set_num_threads(1)
    dls = mnist1d_dls(bs=128, seed=a.seed, valid_pct=0.125) # 3,500 train, 500 valid (split seed 0), 1,000 test
    def fit(model, cbs=()):
        set_seed(a.seed); dls.train.rng = random.Random(a.seed) # every fit sees the same batches in the same order
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                        cbs=[InputNoise(0.1, max_shift=2), *([MixUp(a.mixup)] if a.mixup else []), *cbs])
        t0 = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, 1e-2, wd=1e-2)
        return learn, time.perf_counter() - t0
    def row(name, width, kd, learn, secs):
        return dict(seed=a.seed, model=name, width=width, kd=kd, epochs=a.epochs, mixup=a.mixup,
                    alpha=a.alpha if kd else None, T=a.T if kd else None,
                    valid=round(dl_accuracy(learn.model, dls.valid), 4),
                    test=round(dl_accuracy(learn.model, dls.test), 4), secs=round(secs, 1))
    tw = a.teacher_width
    set_seed(a.seed); teacher, secs = fit(cnn1d(tw))
    rows = [row(f'teacher cnn1d({tw})', tw, False, teacher, secs)]
    for w in a.widths:
        set_seed(a.seed); rows.append(row(f'cnn1d({w}), scratch', w, False, *fit(cnn1d(w))))
        set_seed(a.seed); rows.append(row(f'cnn1d({w}), KD', w, True,
                                          *fit(cnn1d(w), [KDCallback(teacher.model, alpha=a.alpha, T=a.T)])))
    return rows

def summary(rows):
    "Mean +- std per model on valid and test, and the paired KD - scratch difference per width"
    import pandas as pd
    df = pd.DataFrame(rows)
    agg = df.groupby('model', sort=False).agg(seeds=('seed', 'nunique'), valid_mean=('valid', 'mean'),
        valid_std=('valid', 'std'), test_mean=('test', 'mean'), test_std=('test', 'std'), secs=('secs', 'mean'))
    print((agg * [1, 100, 100, 100, 100, 1]).round(2).to_string())
    for w in sorted(df[~df.model.str.startswith('teacher')].width.unique()): # the students' widths
        p = df[df.width == w].pivot(index='seed', columns='kd', values=['valid', 'test'])
        for split in ('valid', 'test'):
            d = 100 * (p[split][True] - p[split][False])
            verdict = 'KD ahead' if d.mean() > d.std() else 'scratch ahead' if -d.mean() > d.std() else 'a tie'
            print(f"cnn1d({w}) KD - scratch on {split}: {d.mean():+.2f} +- {d.std():.2f} points "
                  f"({', '.join(f'{v:+.1f}' for v in d)}): {verdict}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    ap.add_argument('--widths', type=int, nargs='+', default=[32, 16])
    ap.add_argument('--epochs', type=int, default=120)
    ap.add_argument('--teacher-width', type=int, default=64)
    ap.add_argument('--alpha', type=float, default=0.9)
    ap.add_argument('--T', type=float, default=4.0)
    ap.add_argument('--mixup', type=float, help="MixUp's alpha for every fit, teacher's too (default: no mixup)")
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--json', help='append every row here (JSON lines); an existing file is reprinted')
    ap.add_argument('--seed', type=int, help=argparse.SUPPRESS) # one seed, in a child process
    a = ap.parse_args()
    base = [sys.executable, __file__, '--widths', *map(str, a.widths), '--epochs', str(a.epochs),
            '--alpha', str(a.alpha), '--T', str(a.T), '--teacher-width', str(a.teacher_width)]
    if a.mixup: base += ['--mixup', str(a.mixup)]
    seeds_main(a, run_seed, summary, base)

if __name__ == '__main__': main()
