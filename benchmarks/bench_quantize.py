"""Int8 post-training quantization (torchao) on MNIST-1D: size ratio, latency ratio and accuracy before/after.

Trains `mlp()` (3x256 hidden, 144k params) and `cnn1d(16)` (2.5k params) briefly, quantizes each with every scheme
of `kdbook.quantize.quant_schemes()`, and measures all variants of one model side by side in one run (latency:
batch 256, median of interleaved runs, on CPU). Ratios are int8 / fp32 from this one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_quantize.py [--epochs 10] [--n_runs 50]
"""
import argparse, time
import torch
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.schedule import fit_one_cycle
from kdbook.data import mnist1d_dls
from kdbook.models import mlp, cnn1d
from kdbook.quantize import quantize_model, quant_schemes
from kdbook.report import compare_models

def main(epochs=10, n_runs=50, bs=256):
    torch.manual_seed(0)
    dls = mnist1d_dls(valid_pct=None)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, latency: batch {bs}, median of {n_runs} interleaved runs")
    for name, mk in (('mlp()', mlp), ('cnn1d(16)', lambda: cnn1d(16))):
        torch.manual_seed(0)
        learn = Learner(dls, mk(), loss_func=CrossEntropyLossFlat())
        t = time.perf_counter()
        with learn.no_logging():
            if hasattr(learn, 'no_bar'):
                with learn.no_bar(): learn.fit_one_cycle(epochs, 1e-2, wd=1e-2)
            else: learn.fit_one_cycle(epochs, 1e-2, wd=1e-2)
        print(f"\n== {name}: trained {epochs} epochs in {time.perf_counter()-t:.1f} s")
        models = {'fp32': learn.model, **{s: quantize_model(learn, s) for s in quant_schemes()}}
        df = compare_models(models, dls, bs=bs, n_runs=n_runs)
        base = df.loc['fp32']
        df['size_ratio'] = df.size_bytes / base.size_bytes
        df['latency_ratio'] = df.latency_ms / base.latency_ms
        df['acc_delta_pts'] = (df.accuracy - base.accuracy) * 100
        print(df[['params', 'size_bytes', 'size_ratio', 'latency_ms', 'latency_ratio', 'accuracy', 'acc_delta_pts']]
              .to_string(float_format=lambda v: f"{v:.4g}"))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--n_runs', type=int, default=50)
    ap.add_argument('--bs', type=int, default=256)
    a = ap.parse_args()
    main(a.epochs, a.n_runs, a.bs)
