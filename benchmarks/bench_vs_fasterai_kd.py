"""kdbook's `KDCallback` vs fasterai 0.4.1's `KnowledgeDistillationCallback` on the same job: accuracy and fit time.

fasterai needs torchvision, which does not import in kdbook's venv, so this script runs in a separate
benchmark environment (not part of kdbook's install, not run in CI):

    python3 -m venv /work/benchenv
    /work/benchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 fasterai==0.4.1
    /work/benchenv/bin/pip install -e /path/to/kdbook          # ~5 GB in all, several minutes
    /work/benchenv/bin/python benchmarks/bench_vs_fasterai_kd.py [--epochs 20] [--repeats 2] [--threads N]

Job: MNIST-1D (`mnist1d_dls()`), teacher `cnn1d(64)` trained once (`--teacher-epochs`) and shared, student
`cnn1d(16)` from the same seed for both, `fit_one_cycle(epochs, 1e-2, wd=1e-2)`, Hinton's loss at T=4 with
weight 0.5 on the distillation term. Mapping of the conventions:
- fasterai sets `loss_grad = torch.lerp(task_loss, kd, weight)` = `(1-weight)*task + weight*kd`, so its
  `weight` is kdbook's `alpha`;
- fasterai's `SoftTarget(pred, teacher_pred, T)` = `KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) * T*T`,
  the same value as `kdbook.losses.kd_loss(s, t, T=T)`.
Each repeat runs both libraries, alternating the order (kdbook first, then fasterai first, ...); a fresh
deep copy of the teacher is given to each run. Fit times are medians over repeats, accuracies means.
Besides accuracy and time, the script checks what each callback does to the teacher (weights, `.grad`,
`requires_grad`, mode) and whether the recorded validation loss is the plain task loss.
"""
import argparse, contextlib, copy, io, statistics, time
from functools import partial
import torch
import torch.nn.functional as F
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.progress import ProgressCallback
import fastai.callback.schedule  # Learner.fit_one_cycle
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d
from kdbook.losses import kd_loss
from kdbook.teacher import snapshot, same_weights
from kdbook.distill import KDCallback


def learner(model, cbs=None):
    learn = Learner(mnist1d_dls(valid_pct=None), model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs)
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, ProgressCallback)))
    learn.logger = lambda *a, **k: None
    return learn


def timed_fit(learn, epochs):
    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out): learn.fit_one_cycle(epochs, 1e-2, wd=1e-2)
    return time.perf_counter() - t


def plain_valid(model, dl):
    "Cross-entropy and accuracy of `model` on `dl`, computed outside fastai"
    model.eval()
    with torch.no_grad():
        xs, ys = zip(*[(x, y) for x, y in dl])
        p = torch.cat([model(x) for x in xs]); y = torch.cat(ys)
    return F.cross_entropy(p, y).item(), (p.argmax(1) == y).float().mean().item(), p


def run(lib, teacher, seed, epochs, alpha, T):
    t = copy.deepcopy(teacher)
    snap, t_mode = snapshot(t), t.training
    torch.manual_seed(seed)
    student = cnn1d(16)
    if lib == 'kdbook':
        cb = KDCallback(t, loss_func=kd_loss, alpha=alpha, T=T)
    else:
        from fasterai.distill.all import KnowledgeDistillationCallback, SoftTarget
        cb = KnowledgeDistillationCallback(t, partial(SoftTarget, T=T), weight=alpha)
    learn = learner(student, cbs=cb)
    secs = timed_fit(learn, epochs)
    rec_valid_loss = float(learn.recorder.values[-1][1])  # valid loss fastai recorded in the last epoch
    ce, acc, preds = plain_valid(learn.model, learn.dls.valid)
    _, _, tp = plain_valid(t, learn.dls.valid)
    return dict(acc=acc, time=secs, rec_valid_loss=rec_valid_loss, plain_valid_ce=ce,
                agree=(preds.argmax(1) == tp.argmax(1)).float().mean().item(),
                teacher_same=same_weights(t, snap), teacher_grads=sum(p.grad is not None for p in t.parameters()),
                teacher_requires_grad=any(p.requires_grad for p in t.parameters()),
                teacher_eval=not t.training, teacher_mode_before='train' if t_mode else 'eval')


def main(epochs=20, repeats=2, teacher_epochs=20, alpha=0.5, T=4.0, threads=None):
    import fasterai
    if threads: torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, fasterai {fasterai.__version__}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    tl = learner(cnn1d(64))
    t_secs = timed_fit(tl, teacher_epochs)
    teacher = tl.model.eval()
    _, t_acc, _ = plain_valid(teacher, tl.dls.valid)
    print(f"teacher cnn1d(64): acc {t_acc:.4f} after {teacher_epochs} epochs ({t_secs:.1f}s)")
    res = {'kdbook': [], 'fasterai': []}
    for r in range(repeats):
        order = ['kdbook', 'fasterai'] if r % 2 == 0 else ['fasterai', 'kdbook']
        for lib in order:
            o = run(lib, teacher, seed=r, epochs=epochs, alpha=alpha, T=T)
            res[lib].append(o)
            print(f"  repeat {r} {lib:8s} acc {o['acc']:.4f}  fit {o['time']:.2f}s  recorded valid loss "
                  f"{o['rec_valid_loss']:.4f} vs plain CE {o['plain_valid_ce']:.4f}")
    print(f"student cnn1d(16), {epochs} epochs, alpha/weight {alpha}, T {T}, {repeats} repeats:")
    for lib, rs in res.items():
        m = lambda k: statistics.mean(o[k] for o in rs)
        last = rs[-1]
        accs = ', '.join('%.4f' % o['acc'] for o in rs)
        times = ', '.join('%.2f' % o['time'] for o in rs)
        print(f"[{lib:8s}] acc {m('acc'):.4f} (runs: {accs}), agreement with teacher "
              f"{m('agree'):.4f}, fit time median {statistics.median(o['time'] for o in rs):.2f}s "
              f"(runs: {times})")
        print(f"           teacher after fit: weights unchanged {last['teacher_same']}, eval mode {last['teacher_eval']}, "
              f"params with .grad {last['teacher_grads']}, requires_grad {last['teacher_requires_grad']}; "
              f"recorded valid loss {m('rec_valid_loss'):.4f} vs plain CE {m('plain_valid_ce'):.4f}")
    k, f = (statistics.median(o['time'] for o in res[lib]) for lib in ('kdbook', 'fasterai'))
    print(f"fit time ratio kdbook/fasterai = {k/f:.3f}")
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--teacher-epochs', type=int, default=20)
    p.add_argument('--alpha', type=float, default=0.5)
    p.add_argument('--T', type=float, default=4.0)
    p.add_argument('--threads', type=int, default=None, help="torch intra-op threads; 1 is steadier on a busy machine")
    a = p.parse_args()
    main(a.epochs, a.repeats, a.teacher_epochs, a.alpha, a.T, a.threads)
