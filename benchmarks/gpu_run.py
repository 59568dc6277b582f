"""Run kdbook's demo, its compression pipeline and the KD and pruning benchmarks on a CUDA GPU, and print one table.

    python benchmarks/gpu_run.py [--epochs 10] [--amp fp16|bf16|none] [--parts demo,pipeline,kd,prune] [--quick]
    python benchmarks/gpu_run.py --epochs 40 --prune-epochs 160 --rounds 15   # the book's full lengths
    python benchmarks/gpu_run.py --allow-cpu --quick     # a dry run on the CPU (what the tests do)

A GPU user's first command should finish in a few minutes, so the defaults are shortened to fit in 4 minutes on one
GPU: every fit of the demo and the pipeline runs 10 epochs (the book's settings.ini: 40), the 90% pruning recipe 30
epochs after a 10-epoch teacher (the book: 160 after 40), and bench_kd 5 timing rounds (15). The accuracies are then
a few points below the book's; the flags above restore its lengths.

Nothing is changed for the GPU: kdbook and the benchmarks take the device from fastai (`default_device()`, the
first CUDA GPU when there is one). Mixed precision is fastai's own: with `--amp fp16` (the default on CUDA) every
Learner this process creates gets `MixedPrecision`, the callback `learn.to_fp16()` adds, through fastai's
`defaults.callbacks`; the KD losses compute in float32 under it. Without CUDA the script stops with a message,
unless `--allow-cpu` (then `--amp` defaults to none: fastai's `MixedPrecision` is CUDA-only and would switch
itself off). `--quick` trains one epoch everywhere and times one round: a smoke test, not a measurement.

Parts (each runs on its own; a failing part is reported in the table and the others still run):
- demo:     `kdbook demo` (`kdbook.pipeline.run_demo`): teacher, students from scratch and with KD, with 10% of the
            labels
- pipeline: `kdbook demo --pipeline full` (`kdbook.pipeline.run_pipeline`): teacher, KD student, pruned with KD,
            int8, shared and stored (Deep Compression), channel-pruned
- kd:       `benchmarks/bench_kd.py`: KD epoch time over plain epoch time (cache and online teacher), as ratios
- prune:    `benchmarks/bench_prune.py --part unstructured` (90% AGP with KD: sparsity, accuracy, zeros after
            save/load/export) and `--part overhead` (cost of the masks, as ratios; the clock waits for CUDA's
            queued kernels). Its `structured` part times CPU inference and is left to a CPU run.
"""
import argparse, contextlib, math, sys, time, traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ('demo', 'pipeline', 'kd', 'prune')


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=10, help="epochs of every demo and pipeline fit and of the prune part's teacher (the book: 40)")
    p.add_argument('--prune-epochs', type=int, default=30, help='epochs of the gradual-pruning fit of bench_prune (160: the 90%% recipe of chapter 10)')
    p.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds of bench_kd (the book: 15)')
    p.add_argument('--amp', choices=['fp16', 'bf16', 'none'], default=None, help='mixed precision (default: fp16 on CUDA)')
    p.add_argument('--parts', default=','.join(PARTS), help=f'comma-separated subset of {",".join(PARTS)}')
    p.add_argument('--quick', action='store_true', help='one epoch everywhere, one timing round: a smoke test')
    p.add_argument('--allow-cpu', action='store_true', help='run on the CPU when there is no CUDA device (a dry run)')
    a = p.parse_args(argv)
    a.parts = [s.strip() for s in a.parts.split(',') if s.strip()]
    if bad := set(a.parts) - set(PARTS): p.error(f"unknown parts {sorted(bad)}; choose from {', '.join(PARTS)}")
    if a.quick: a.epochs, a.prune_epochs, a.rounds = 1, 1, 1
    return a


def check_cuda(allow_cpu):
    "The device fastai will use; exits with a message when it is not a CUDA GPU and `allow_cpu` is False"
    import torch
    if not torch.cuda.is_available() and not allow_cpu:  # checked before importing fastai, which takes seconds
        why = 'torch was built without CUDA' if torch.version.cuda is None else 'no CUDA device is visible'
        sys.exit(f"gpu_run.py: no CUDA GPU ({why}; torch {torch.__version__}). Run it on a machine with an NVIDIA GPU "
                 f"and a CUDA build of torch, or pass --allow-cpu for a dry run on the CPU.")
    from fastai.torch_core import default_device
    return default_device()


@contextlib.contextmanager
def mixed_precision(amp):
    "Every Learner created inside gets fastai's `MixedPrecision` (fp16 with a loss scaler, or bf16)"
    from fastai.learner import defaults
    from fastai.callback.fp16 import MixedPrecision
    if amp in (None, 'none'): yield; return
    class AMP(MixedPrecision):
        "fastai's MixedPrecision in the mode asked for, constructible without arguments (as defaults.callbacks needs)"
        def __init__(self): super().__init__(amp_mode=amp)
    old = list(defaults.callbacks)
    defaults.callbacks.append(AMP)
    try: yield
    finally: defaults.callbacks[:] = old


def _bench(name):
    "Import benchmarks/<name>.py as a module"
    if str(HERE) not in sys.path: sys.path.insert(0, str(HERE))
    return __import__(name)


def run_demo_part(a, rows):
    from kdbook.pipeline import run_demo
    from kdbook.settings import book_settings
    df = run_demo(book_settings(HERE.parent), show=False, epochs=a.epochs)
    print(df.to_string(index=False))
    score = df.columns[2]
    for _, r in df.iterrows(): rows.append(('demo', r['model'], score, r[score], r['train_s']))


def run_pipeline_part(a, rows):
    from kdbook.pipeline import run_pipeline
    from kdbook.settings import book_settings
    quick = {'n_runs': 5} if a.quick else {}
    df = run_pipeline(book_settings(HERE.parent), show=False, epochs=a.epochs, **quick)
    print(df.to_string(index=False))
    for _, r in df.iterrows():
        rows.append(('pipeline', r['model'], 'accuracy', r['accuracy'], r['train_s']))
        rows.append(('pipeline', r['model'], 'latency_ms', r['latency_ms'], math.nan))
        if r['stored_bytes'] == r['stored_bytes']: # NaN for the int8 model, which save_compressed does not store
            rows.append(('pipeline', r['model'], 'stored_bytes / x teacher fp32 / x own fp32',
                         f"{r['stored_bytes']:.0f} / {r['x_teacher_fp32']:.1f}x / {r['x_own_fp32']:.1f}x", math.nan))


def run_kd_part(a, rows):
    t = time.perf_counter()
    r_cache, r_online = _bench('bench_kd').main(rounds=a.rounds, bs=128)
    secs = time.perf_counter() - t
    rows.append(('kd', 'cache KD epoch / plain epoch', 'ratio (target <= 1.10)', r_cache, secs))
    rows.append(('kd', 'online KD epoch / (plain + teacher)', 'ratio (target <= 1.05)', r_online, math.nan))


def run_prune_part(a, rows):
    bp = _bench('bench_prune')
    ns = argparse.Namespace(epochs=a.epochs, prune_epochs=a.prune_epochs, kd=1, alpha=0.5, reps=1 if a.quick else 5)
    t = time.perf_counter()
    learn = bp.unstructured(ns)
    rows.append(('prune', f'90% AGP + KD, {ns.prune_epochs} epochs', 'sparsity', learn.prune.measured(), time.perf_counter() - t))
    with learn.no_bar(): acc = learn.validate()[1]
    rows.append(('prune', f'90% AGP + KD, {ns.prune_epochs} epochs', 'accuracy after 2 more epochs', acc, math.nan))
    t = time.perf_counter()
    res = bp.overhead(ns)
    for k, v in res.items(): rows.append(('prune', f'mask overhead: {k}', 'ratio', v, math.nan))
    rows[-1] = rows[-1][:4] + (time.perf_counter() - t,)


def main(argv=None):
    a = parse(argv)
    dev = check_cuda(a.allow_cpu)
    import torch
    amp = a.amp or ('fp16' if dev.type == 'cuda' else 'none')
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'
    print(f"device {dev} ({name}), torch {torch.__version__}, mixed precision: {amp}, parts: {','.join(a.parts)}"
          f"{', quick' if a.quick else ''}", flush=True)
    rows, t0 = [], time.perf_counter()
    jobs = dict(demo=lambda: run_demo_part(a, rows), pipeline=lambda: run_pipeline_part(a, rows),
                kd=lambda: run_kd_part(a, rows), prune=lambda: run_prune_part(a, rows))
    with mixed_precision(amp):
        for part in a.parts:
            print(f"\n=== {part}", flush=True)
            t = time.perf_counter()
            try: jobs[part]()
            except Exception as e:
                traceback.print_exc()
                rows.append((part, 'FAILED', type(e).__name__, str(e).splitlines()[0][:80] if str(e) else '', time.perf_counter() - t))
    import pandas as pd
    df = pd.DataFrame(rows, columns=['part', 'item', 'metric', 'value', 'seconds'])
    fmt = lambda v: f'{v:.4f}' if isinstance(v, float) and not math.isnan(v) else ('' if isinstance(v, float) else str(v))
    print(f"\n=== kdbook on {dev} ({name}), mixed precision {amp}, {time.perf_counter() - t0:.0f} s in all")
    print(df.to_string(index=False, na_rep='', formatters={'value': fmt, 'seconds': lambda v: '' if math.isnan(v) else f'{v:.1f}'}))
    return 1 if (df.item == 'FAILED').any() else 0


if __name__ == '__main__': sys.exit(main())
