"""Serving the book's models: eager PyTorch against onnxruntime, float and int8, measured side by side in one run.

For each model (the teacher `cnn1d(64)`, the pipeline's student `cnn1d(40)`, the same student with 90% of its weights
pruned, the student with half its channels removed, and a wider `mlp()` where int8 matrix products have room to
gain), trained briefly on MNIST-1D (`--epochs`, the test split reports): `kdbook.deploy.export_onnx` (float,
checked against PyTorch) and `quantize_onnx` (int8 QDQ, weights per channel, activations calibrated on 8 training
batches), measured by `kdbook.deploy.serving_report`: accuracy and agreement on the test split, file bytes, and the
median of `--n-runs` interleaved forward passes of one batch (`time_models`), at `--bs` and at batch 1, on one thread
and on all cores (onnxruntime's session too). `teacher_eager/...` divides the teacher's eager time by a served
form's, `teacher_onnx/...` the teacher's own onnxruntime time (the same runtime). Ratios are eager / ONNX from this run;
absolute times move with the machine's load, ratios less.

    OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py [--epochs 20] [--n-runs 100] [--bs 256]
"""
import copy, os
import torch
from fastcore.script import call_parse
from fastai.basics import Learner, CrossEntropyLossFlat, set_seed
import fastai.callback.schedule  # noqa: F401 (Learner.fit_one_cycle)
import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d, mlp
from kdbook.prune import PruneCallback, bake_masks, prune_channels
from kdbook.deploy import serving_report

@call_parse
def main(
    epochs:int=20,   # Epochs of every model's brief training
    n_runs:int=100,  # Timed forward passes per form, interleaved
    bs:int=256,      # The large batch (batch 1 is always measured too)
):
    "Serve the book's models in eager PyTorch and onnxruntime, float and int8; print the measured ratios"
    torch.set_num_threads(1)
    set_seed(0)
    dls = mnist1d_dls(bs=128, seed=0, num_workers=0)
    def fit(model, cbs=()):
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=list(cbs))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2, wd=1e-2)
        return learn
    student = fit(cnn1d(40)).model
    pruned = fit(copy.deepcopy(student), [PruneCallback(0.9)]); bake_masks(pruned)
    models = {'teacher cnn1d(64)': fit(cnn1d(64)).model, 'student cnn1d(40)': student,
              'student, pruned 90%': pruned.model,
              'student, 50% channels removed': fit(prune_channels(student, dls.valid.one_batch()[0][:2], 0.5)).model,
              'mlp() 3x256': fit(mlp()).model}
    print(f"torch {torch.__version__}; latency: median of {n_runs} interleaved passes of one batch")
    cols = ['pytorch_ms', 'onnx_ms', 'int8_ms', 'pytorch/onnx', 'pytorch/int8', 'teacher_eager/onnx',
            'teacher_eager/int8', 'teacher_onnx/onnx', 'teacher_onnx/int8']
    for threads in (1, os.cpu_count()):
        for b in (1, bs):
            df = serving_report(models, dls, bs=b, n_runs=n_runs, threads=threads).set_index('model')
            t = df.loc['teacher cnn1d(64)']
            for k in ('onnx', 'int8'):  # the teacher in eager PyTorch and in onnxruntime float, over each served form
                df[f'teacher_eager/{k}'], df[f'teacher_onnx/{k}'] = t.pytorch_ms / df[f'{k}_ms'], t.onnx_ms / df[f'{k}_ms']
            if threads == 1 and b == bs:
                print(df.drop(columns=[c for c in cols if c in df]).to_string(float_format=lambda v: f"{v:.4g}"))
            print(f"\n{threads} thread(s), batch {b}:"); print(df[cols].to_string(float_format=lambda v: f"{v:.3g}"))
