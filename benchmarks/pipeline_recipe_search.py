"""The search behind the compression pipeline's defaults: which student, pruning recipe and bits keep a stored MNIST-1D
student within 1 point of its teacher at >= 50x compression (`kdbook demo --pipeline full`, chapter 13).

One configuration per run, on one seed: the teacher `cnn1d(64)` (the book's recipe, `fit_one_cycle(40, 1e-2)`,
cached in `--cache`), a KD student `cnn1d(--width)` trained `--student-epochs` (with `InputNoise(0.1, 2)` when more
than 40; cached too), a copy pruned to `--sparsity` with KD, `InputNoise(--noise, 2)` and `PruneCallback` for
`--epochs` at `--lr` (`--schedule pipe`: the pipeline's AGP over 70% of the fit; `default`: PruneCallback's default
window), ranked by `--variant`: `global` (|w| over all layers), `local` (every layer to the target), `taylor`
(|grad * w|), `fold` (BatchNorm folded into the convolutions *before* pruning, so |w| carries BN's scale); then
BatchNorm folded, weights shared in `--bits` bits with KD (`WeightShareCallback`, 10 epochs at 1e-3), float16
rounding, and the stored bytes (`to_compressed`). Prints one JSON line.

    python benchmarks/pipeline_recipe_search.py --seed 1 --width 32 --sparsity 0.8 --epochs 80 --noise 0.1 \\
        --student-epochs 120 --variant taylor

`benchmarks/pipeline_recipe_search.jsonl` holds the runs of the search (seeds 1-3; 2 shared CPU cores, one thread
each); chapter 13 tabulates them.
"""
import argparse, copy, io, json, os
from pathlib import Path

def main(a):
    import torch
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from kdbook.data import mnist1d_dls, InputNoise
    from kdbook.models import cnn1d
    from kdbook.distill import KDCallback
    from kdbook.prune import PruneCallback
    from kdbook.pipeline import prune_schedule
    from kdbook.compress import fold_batchnorm, WeightShareCallback, round_to_half, to_compressed
    torch.set_num_threads(1)
    dls = mnist1d_dls(bs=128, seed=a.seed, valid_pct=None)
    def fit(model, cbs=(), epochs=40, lr=1e-2):
        set_seed(a.seed)
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=list(cbs))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, wd=1e-2)
        return learn.model
    acc = lambda m: float(Learner(dls, m, loss_func=CrossEntropyLossFlat(), metrics=accuracy).validate()[1])
    def fp32(m): b = io.BytesIO(); torch.save(m.state_dict(), b); return len(b.getvalue())
    def cached(path, make, build):
        if path.exists(): m = build(); m.load_state_dict(torch.load(path)); return m
        m = make(); path.parent.mkdir(parents=True, exist_ok=True); torch.save(m.state_dict(), path); return m
    cache = Path(a.cache)
    T = cached(cache/f'teacher_{a.seed}.pt', lambda: fit(cnn1d(64)), lambda: cnn1d(64))
    kd = lambda: KDCallback(T, alpha=0.9, T=4.)
    noisy = [InputNoise(0.1, 2)] if a.student_epochs > 40 else []
    S = cached(cache/f'student_{a.seed}_{a.width}_{a.student_epochs}.pt',
               lambda: fit(cnn1d(a.width), [kd(), *noisy], epochs=a.student_epochs), lambda: cnn1d(a.width))
    kw = dict(scope='local') if a.variant == 'local' else dict(criterion='taylor') if a.variant == 'taylor' else {}
    kw.setdefault('scope', 'global') # PruneCallback's default when this search ran
    if a.schedule == 'pipe': kw['schedule'] = prune_schedule()
    start = fold_batchnorm(S) if a.variant == 'fold' else copy.deepcopy(S)
    P = fit(start, [kd(), PruneCallback(a.sparsity, **kw), *([InputNoise(a.noise, 2)] if a.noise else [])],
            epochs=a.epochs, lr=a.lr)
    m = fit(fold_batchnorm(P) if a.variant != 'fold' else copy.deepcopy(P), [WeightShareCallback(a.bits), kd()],
            epochs=10, lr=1e-3)
    round_to_half(m)
    ta, n = acc(T), len(to_compressed(m))
    print(json.dumps(dict(seed=a.seed, width=a.width, sparsity=a.sparsity, epochs=a.epochs, noise=a.noise,
                          schedule=a.schedule, lr=a.lr, bits=a.bits, student_epochs=a.student_epochs, variant=a.variant,
                          teacher=round(ta, 4), student=round(acc(S), 4), pruned=round(acc(P), 4),
                          shared=round(acc(m), 4), drop=round(100 * (ta - acc(m)), 2), bytes=n,
                          ratio=round(fp32(T) / n, 1))), flush=True)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seed', type=int, default=1); p.add_argument('--width', type=int, default=32)
    p.add_argument('--sparsity', type=float, default=0.8); p.add_argument('--epochs', type=int, default=80)
    p.add_argument('--noise', type=float, default=0.1)
    p.add_argument('--schedule', default='pipe', choices=['pipe', 'default'])
    p.add_argument('--lr', type=float, default=1e-2); p.add_argument('--bits', type=int, default=5)
    p.add_argument('--student-epochs', type=int, default=40)
    p.add_argument('--variant', default='global', choices=['global', 'local', 'taylor', 'fold'])
    p.add_argument('--cache', default=os.path.expanduser('~/.cache/kdbook/recipe_search'))
    main(p.parse_args())
