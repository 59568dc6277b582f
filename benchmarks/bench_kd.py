"""Epoch-time overhead of kdbook's distillation callbacks on MNIST-1D, as ratios measured side by side.

    python benchmarks/bench_kd.py [--rounds 7] [--bs 128]

Variants, interleaved round by round (plain, cache, online, teacher-forward, ...), medians over rounds:
- plain:   one epoch (train + valid) of the student `cnn1d(16)` without distillation
- cache:   the same epoch with `KDCallback(cache=SoftTargetCache)`            target: cache / plain <= 1.10
- online:  the same epoch with `KDCallback(cnn1d(64))`, the teacher run on every training batch
- teacher: the teacher's forward pass alone over the same training batches (no_grad, eval mode)
                                                                              target: online / (plain + teacher) <= 1.05
Timings on a shared machine are noisy; only the ratios of one run are meaningful.
"""
import argparse, statistics, time
import torch
from fastai.learner import Learner
import fastai.callback.progress  # Learner.no_bar
from fastai.losses import CrossEntropyLossFlat
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d
from kdbook.distill import KDCallback, SoftTargetCache, Teacher


def main(rounds=7, bs=128):
    dls = mnist1d_dls(bs=bs, num_workers=0)  # worker processes add noise larger than the effect measured
    torch.manual_seed(0)
    teacher = cnn1d(64)
    cache = SoftTargetCache.build(teacher, dls.train)
    mk = lambda cbs=None: Learner(dls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=cbs)
    learners = dict(plain=mk(), cache=mk(KDCallback(cache=cache)), online=mk(KDCallback(teacher)))
    batches = [b[0] for b in dls.train]  # the teacher alone, on the batches of one epoch
    t = Teacher(teacher).prepare()

    def epoch(learn):
        with learn.no_bar(), learn.no_logging():
            t0 = time.perf_counter(); learn.fit(1, 1e-3); return time.perf_counter() - t0

    def teacher_pass():
        t0 = time.perf_counter()
        for x in batches: t.reset(); t(x)
        return time.perf_counter() - t0

    for l in learners.values(): epoch(l)  # warm-up
    teacher_pass()
    times = {k: [] for k in list(learners) + ['teacher']}
    for _ in range(rounds):
        for k, l in learners.items(): times[k].append(epoch(l))
        times['teacher'].append(teacher_pass())
    med = {k: statistics.median(v) for k, v in times.items()}
    r_cache = med['cache'] / med['plain']
    r_online = med['online'] / (med['plain'] + med['teacher'])
    print(f"torch threads {torch.get_num_threads()}, {rounds} rounds, bs {bs}, {len(dls.train)} training batches/epoch")
    for k, v in med.items(): print(f"  median {k:8s} {v*1000:8.1f} ms   (min {min(times[k])*1000:.1f}, max {max(times[k])*1000:.1f})")
    print(f"cache KD epoch / plain epoch                   = {r_cache:.3f}  (target <= 1.10)")
    print(f"online KD epoch / (plain epoch + teacher fwd)  = {r_online:.3f}  (target <= 1.05)")
    return r_cache, r_online


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--bs', type=int, default=128)
    a = p.parse_args()
    main(a.rounds, a.bs)
