"""Structured channel pruning of the default MNIST-1D teacher `cnn1d(64)`: accuracy after KD retraining and real CPU speed.

    python benchmarks/bench_structured.py [--part accuracy|speed|all] [--seeds 42 43 44] [--ratios 0.5]
                                          [--threads 1 2] [--runs 50] [--repeats 3] [--save DIR]

accuracy: per seed, the dense teacher (fit_one_cycle(40, 1e-2, wd=1e-2)), `prune_learner_channels(learn, ratio)`
    (Torch-Pruning, L2-norm importance, optimizer rebuilt), accuracy right after the cut, then 40 epochs of
    retraining: with `KDCallback` from the dense teacher (alpha 0.9 and 0.5, T 4) and plain; and the hand-built
    twin of the same shape (`cnn1d(32)` for ratio 0.5) trained from scratch, plain and with the same KD.
speed: dense, pruned (retrained, first seed of the list) and the twin, on one batch of 256 validation signals,
    interleaved call by call (dense, pruned, twin, dense, ...), `--runs` calls each per repeat, `--repeats` repeats,
    for each torch thread count in `--threads`; medians of wall time (`perf_counter`) and of the calling thread's CPU
    time (`thread_time`, which leaves out the time the process waits for a core while other jobs run), and minor page
    faults per call, and the ratio of the fastest calls (the least disturbed by other jobs). Each in a fresh process
    (the models saved to `--save` or a temporary folder), under three settings of glibc's allocator given as
    environment variables: its defaults; an mmap threshold of 1 MB (MALLOC_MMAP_THRESHOLD_), between the pruned
    model's activations (0.65 MB) and the dense model's (1.3 MB), with a trim threshold of 256 MB, so that only the
    dense model gets fresh pages from the kernel (page faults) on every call, a state glibc's dynamic threshold can
    be in and that inflates the ratio; and pinned (mmap threshold 32 MB, trim threshold 256 MB), so that no call faults. Printed next to the
    latency ratios: the MACs ratio (`kdbook.report.count_macs`) and the ratio with batch norms folded into the
    convolutions (`torch.fx.experimental.optimization.fuse`, for inference).
Timings are ratios measured side by side in one run; absolute times depend on the machine and its load (printed).
"""
import argparse, copy, os, random, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import set_seed
import fastai.callback.progress  # Learner.no_bar
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d, count_params
from kdbook.distill import KDCallback
from kdbook.prune import prune_learner_channels
from kdbook.report import count_macs, dl_accuracy


def fit(dls, width, epochs=40, seed=42, cbs=None, learn=None):
    "The book's recipe, fit_one_cycle(epochs, 1e-2, wd=1e-2), on a new cnn1d(width) built after seeding (or on `learn`)"
    set_seed(seed); dls.train.rng = random.Random(seed)
    learn = learn or Learner(dls, cnn1d(width), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2, wd=1e-2, cbs=cbs)
    return learn


def pruned_learner(dls, dense, ratio):
    "A Learner on a copy of `dense`, with `ratio` of its channels removed"
    learn = Learner(dls, copy.deepcopy(dense), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    return prune_learner_channels(learn, ratio)


def accuracy_part(a, dls):
    res, keep = [], {}
    for seed in a.seeds:
        t0 = time.perf_counter()
        dense = fit(dls, 64, a.epochs, seed).model
        acc_d = dl_accuracy(dense, dls.valid)
        for ratio in a.ratios:
            row = dict(seed=seed, ratio=ratio, dense=acc_d)
            p = pruned_learner(dls, dense, ratio)
            row['params'] = (count_params(dense), count_params(p.model))
            row['cut'] = dl_accuracy(p.model, dls.valid)
            for name, alpha in [('kd0.9', 0.9), ('kd0.5', 0.5), ('plain', None)]:
                if name != 'kd0.9' and not a.variants: continue
                q = pruned_learner(dls, dense, ratio)
                fit(dls, None, a.epochs, seed, cbs=None if alpha is None else KDCallback(dense, alpha=alpha, T=4.), learn=q)
                row[name] = dl_accuracy(q.model, dls.valid)
                if name == 'kd0.9' and ratio == a.ratios[0] and seed == a.seeds[0]: keep['pruned'] = q.model
            w = p.model.block1[0].out_channels
            if a.variants:
                row['twin'] = dl_accuracy(fit(dls, w, a.epochs, seed).model, dls.valid)
                row['twin_kd0.9'] = dl_accuracy(fit(dls, w, a.epochs, seed, cbs=KDCallback(dense, alpha=0.9, T=4.)).model, dls.valid)
            res.append(row)
            print(f"[accuracy] seed {seed} ratio {ratio}: params {row['params'][0]} -> {row['params'][1]} (width {w}); "
                  + ', '.join(f'{k} {100*v:.1f}' for k, v in row.items() if isinstance(v, float)), flush=True)
        if seed == a.seeds[0]: keep['dense'] = dense
        print(f"[accuracy] seed {seed} done in {time.perf_counter()-t0:.0f} s, load average {os.getloadavg()[0]:.1f}", flush=True)
    for k in ('kd0.9', 'kd0.5', 'plain', 'twin', 'twin_kd0.9'):
        for ratio in a.ratios:
            v = [r['dense'] - r[k] for r in res if k in r and r['ratio'] == ratio]
            if v: print(f"[accuracy] ratio {ratio} {k}: drop vs dense (points) per seed {[round(100*x, 2) for x in v]}, "
                        f"mean {100*statistics.mean(v):.2f}, max {100*max(v):.2f}")
    return keep


# glibc allocator settings, passed as environment variables to a fresh process per setting (a process that trained
# first has freed memory at the top of its heap and serves the activations from there, whatever the thresholds)
ALLOCATORS = {'default': {}, '1 MB': {'MALLOC_MMAP_THRESHOLD_': str(1 << 20), 'MALLOC_TRIM_THRESHOLD_': str(256 << 20)},
              'pinned': {'MALLOC_MMAP_THRESHOLD_': str(32 << 20), 'MALLOC_TRIM_THRESHOLD_': str(256 << 20)}}


def env_str(env): return ' '.join(f'{k}={v}' for k, v in env.items() if k.startswith('MALLOC_')) or '(glibc defaults)'


def _faults():
    "Minor page faults of the whole process (with 2 threads the worker thread touches pages too)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(models, x, runs, warmup=10):
    "Per model: median wall ms, median thread-CPU ms, mean minor page faults per call, min wall ms; models called in turn"
    w, c, f = ({k: [] for k in models} for _ in range(3))
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values(): m(x)
        for _ in range(runs):
            for k, m in models.items():
                f0, c0, t0 = _faults(), time.thread_time(), time.perf_counter()
                m(x)
                t1, c1, f1 = time.perf_counter(), time.thread_time(), _faults()
                w[k].append(t1 - t0); c[k].append(c1 - c0); f[k].append(f1 - f0)
    return {k: (1e3*statistics.median(w[k]), 1e3*statistics.median(c[k]), statistics.mean(f[k]), 1e3*min(w[k])) for k in models}


def speed_part(a, dls, dense=None, pruned=None):
    "Time dense, pruned and twin in a fresh process per allocator setting (this process only saves the models)"
    if a.alloc is None:
        d = Path(a.save) if a.save else Path(tempfile.mkdtemp())
        if dense is not None:
            d.mkdir(parents=True, exist_ok=True)
            torch.save(dense.state_dict(), d/'dense.pth'); torch.save(pruned, d/'pruned.pth')
        for name, env in ALLOCATORS.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')} | env
            cmd = [sys.executable, __file__, '--part', 'speed', '--alloc', name, '--save', str(d), '--bs', str(a.bs),
                   '--runs', str(a.runs), '--repeats', str(a.repeats), '--threads', *map(str, a.threads)]
            print(f"[speed] fresh process, allocator {name} {env_str(env)}", flush=True)
            subprocess.run(cmd, env=env, check=True)
        return
    if dense is None:
        if a.save and (Path(a.save)/'dense.pth').exists():
            dense = cnn1d(64); dense.load_state_dict(torch.load(Path(a.save)/'dense.pth'))
            pruned = torch.load(Path(a.save)/'pruned.pth', weights_only=False)
        else:
            print("[speed] no saved models: timing an untrained cnn1d(64) and its pruned copy (run --part all --save DIR first)")
            torch.manual_seed(0); dense = cnn1d(64)
            pruned = pruned_learner(dls, dense, a.ratios[0]).model
    w = pruned.block1[0].out_channels
    torch.manual_seed(0); twin = cnn1d(w)
    x = torch.cat([b[0] for b in dls.valid])[:a.bs].cpu()
    ms = {'dense': dense.eval(), 'pruned': pruned.eval(), 'twin': twin.eval()}
    macs = {k: count_macs(m, x) for k, m in ms.items()}
    shapes = [tuple(p.shape) for p in pruned.parameters()] == [tuple(p.shape) for p in twin.parameters()]
    print(f"[speed] params {count_params(dense)} / {count_params(pruned)} / {count_params(twin)} (dense / pruned / twin "
          f"cnn1d({w})), same shapes as the twin: {shapes}; MACs per sample {macs['dense']} / {macs['pruned']} / {macs['twin']}, "
          f"MACs ratio {macs['dense']/macs['pruned']:.2f}")
    from torch.fx.experimental.optimization import fuse
    fused = {k: fuse(copy.deepcopy(m)) for k, m in ms.items()}
    with torch.inference_mode(): assert torch.allclose(fused['dense'](x), dense(x), atol=1e-4)
    summary, alloc = {}, a.alloc
    for nt in a.threads:
        torch.set_num_threads(nt)
        for variant, models in (('eager', ms), ('bn-folded', fused)):
            for r in range(a.repeats):
                la = os.getloadavg()[0]
                t = time_interleaved(models, x, a.runs)
                rw, rc, rm = t['dense'][0]/t['pruned'][0], t['dense'][1]/t['pruned'][1], t['dense'][3]/t['pruned'][3]
                tw, tc, tm = t['dense'][0]/t['twin'][0], t['dense'][1]/t['twin'][1], t['dense'][3]/t['twin'][3]
                summary.setdefault((alloc, nt, variant), []).append((rw, tw, rc, tc, rm, tm))
                print(f"[speed] allocator {alloc}, {nt} thread(s), {variant:9s}, repeat {r}, load {la:.1f}: wall ms "
                      f"{t['dense'][0]:.3f}/{t['pruned'][0]:.3f}/{t['twin'][0]:.3f} -> speed-up pruned {rw:.2f}x, twin {tw:.2f}x | "
                      f"thread-CPU ms {t['dense'][1]:.3f}/{t['pruned'][1]:.3f}/{t['twin'][1]:.3f} -> pruned {rc:.2f}x, twin {tc:.2f}x | "
                      f"fastest call: pruned {rm:.2f}x, twin {tm:.2f}x | "
                      f"page faults/call {t['dense'][2]:.0f}/{t['pruned'][2]:.0f}/{t['twin'][2]:.0f} | MACs {macs['dense']/macs['pruned']:.2f}x",
                      flush=True)
    print(f"[speed] summary, batch {a.bs}, {a.runs} interleaved calls per model per repeat, median over {a.repeats} repeats "
          f"(speed-up = dense time / pruned time; MACs ratio {macs['dense']/macs['pruned']:.2f}):")
    for (alloc, nt, variant), v in summary.items():
        med = [statistics.median(col) for col in zip(*v)]
        print(f"[speed]   allocator {alloc:6s} {nt} thread(s) {variant:9s}: wall pruned {med[0]:.2f}x twin {med[1]:.2f}x | "
              f"thread-CPU pruned {med[2]:.2f}x twin {med[3]:.2f}x | fastest call pruned {med[4]:.2f}x twin {med[5]:.2f}x | "
              f"range of wall pruned {min(x[0] for x in v):.2f}-{max(x[0] for x in v):.2f}")
    return summary


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--part', default='all', choices=['accuracy', 'speed', 'all'])
    p.add_argument('--seeds', type=int, nargs='+', default=[42, 43, 44])
    p.add_argument('--ratios', type=float, nargs='+', default=[0.5], help='shares of the channels removed')
    p.add_argument('--variants', type=int, default=1, help='1: also alpha 0.5, plain retraining and the twin from scratch')
    p.add_argument('--epochs', type=int, default=40)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--bs', type=int, default=256)
    p.add_argument('--runs', type=int, default=50, help='timed calls of each model per repeat')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--save', default=None, help='folder to save (part all/accuracy) or load (part speed) the models')
    p.add_argument('--alloc', default=None, help='internal: time in this process, labelled with this allocator setting')
    a = p.parse_args()
    dls = mnist1d_dls(bs=128, num_workers=0, valid_pct=None)
    if a.alloc is None: print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    keep = {}
    if a.part in ('accuracy', 'all'):
        keep = accuracy_part(a, dls)
        if a.save and keep:
            Path(a.save).mkdir(parents=True, exist_ok=True)
            torch.save(keep['dense'].state_dict(), Path(a.save)/'dense.pth'); torch.save(keep['pruned'], Path(a.save)/'pruned.pth')
    if a.part in ('speed', 'all'): speed_part(a, dls, keep.get('dense'), keep.get('pruned'))
