"""Epoch-time overhead of kdbook's distillation callbacks on MNIST-1D, as ratios measured side by side.

    python benchmarks/bench_kd.py [--rounds 15] [--bs 128 [256 ...]] [--threads N] [--clock cpu]

Variants, interleaved round by round (plain, cache, online, teacher-forward, ...), medians over rounds:
- plain:   one epoch (train + valid) of the student `cnn1d(16)` without distillation
- cache:   the same epoch with `KDCallback(cache=SoftTargetCache)`            target: cache / plain <= 1.10
- online:  the same epoch with `KDCallback(cnn1d(64))`, the teacher run on every training batch
- teacher: the teacher's forward pass alone over the same training batches (no_grad, eval mode)
                                                                              target: online / (plain + teacher) <= 1.05
Also printed: the teacher's forward time measured inside the online epochs (forward hooks on the teacher), which
is larger than the isolated pass (the student's work evicts the teacher's weights from the caches between batches).
Timings on a shared machine are noisy; only the ratios of one run are meaningful. With 2 cores and another busy
process, torch's 2 intra-op threads slow down 5-20x at random (OpenMP threads wait on each other): then pass
`--threads 1`, whose ratios stay stable under load, and `--clock cpu` (process CPU time instead of wall time: with one
thread and no loader workers it leaves out the time the process waits for a core while others run).
Ratios are medians of the per-round ratios (each round runs every variant once, back to back), so a slow spell
of the machine moves numerator and denominator together.

Also timed, as a floor for what distillation itself costs: a hand-written PyTorch loop (no fastai, no kdbook, batches
already in memory) that trains the same student plainly and with the same KD loss computed inline. Its extra time
beyond the teacher's forward is what any online KD pays (the loss, its backward, and a teacher that runs with cold
caches); the fastai epoch's extra time beyond that is kdbook's callback and fastai's event dispatch.
And a reference inside fastai: `MinimalKD`, the least a fastai KD callback can do (teacher forward in `after_pred`,
`loss_grad = 0.5*loss + 0.5*T²*KL` in `after_loss`; no checks, no loss columns, no unlabelled samples). kdbook's
callback should cost no more than it.
Pass several batch sizes (`--bs 128 256`) to see how the per-batch costs weigh as batches grow.
"""
import argparse, copy, statistics, time
import torch
import torch.nn.functional as F
from fastai.learner import Learner
from fastai.callback.core import Callback
import fastai.callback.progress  # Learner.no_bar
from fastai.losses import CrossEntropyLossFlat
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d
from kdbook.teacher import Teacher
from kdbook.distill import KDCallback
from kdbook.soft_targets import SoftTargetCache


class MinimalKD(Callback):
    "Reference: the least a fastai callback can do to distil from `model` (0.5*task + 0.5*T²*KL, T=4), nothing checked"
    def __init__(self, model): self.model = model
    def after_pred(self):
        with torch.no_grad(): self.lt = F.log_softmax(self.model(*self.learn.xb) / 4, 1)
    def after_loss(self):
        kl = F.kl_div(F.log_softmax(self.learn.pred / 4, 1), self.lt, log_target=True, reduction='batchmean')
        self.learn.loss_grad = 0.5 * self.learn.loss_grad + 8 * kl
        self.learn.loss = self.learn.loss_grad.detach()


def main(rounds=15, bs=128, threads=None, clock='wall'):
    if threads: torch.set_num_threads(threads)
    dls = mnist1d_dls(bs=bs, num_workers=0, valid_pct=None)  # worker processes add noise larger than the effect measured
    dev = dls.device  # fastai's default device: every model below lives there, as the Learners' do
    clock_ = time.process_time if clock == 'cpu' else time.perf_counter
    def now():  # CUDA runs asynchronously: wait for the queued kernels before reading the clock
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
        return clock_()
    torch.manual_seed(0)
    teacher = cnn1d(64).to(dev)
    cache = SoftTargetCache.build(teacher, dls.train)
    mk = lambda cbs=None: Learner(dls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=cbs)
    minimal = copy.deepcopy(teacher).eval().requires_grad_(False)
    learners = dict(plain=mk(), cache=mk(KDCallback(cache=cache)), online=mk(KDCallback(teacher)), minimal=mk(MinimalKD(minimal)))
    inloop = [0., None]  # teacher forward time accumulated inside the online epochs
    def _pre(m, a): inloop[1] = now()
    def _post(m, a, o): inloop[0] += now() - inloop[1]
    hooks = [teacher.register_forward_pre_hook(_pre), teacher.register_forward_hook(_post)]
    batches = [b[0] for b in dls.train]  # the teacher alone, on the batches of one epoch
    t = Teacher(copy.deepcopy(teacher)).prepare(dev)  # a copy: the hooks above time only the online epochs

    def epoch(learn):
        with learn.no_bar(), learn.no_logging():
            t0 = now(); learn.fit(1, 1e-3); return now() - t0

    def teacher_pass():
        t0 = now()
        for x in batches: t.reset(); t(x)
        return now() - t0

    xy = [(x, y) for x, y in dls.train]
    def raw_epoch(kd):  # hand-written loop: the floor for any online KD
        torch.manual_seed(1); m = cnn1d(16).to(dev); opt = torch.optim.Adam(m.parameters(), 1e-3)
        t0 = now()
        for x, y in xy:
            p = m(x); loss = F.cross_entropy(p, y)
            if kd:
                with torch.no_grad(): lt = F.log_softmax(t.models[0](x) / 4, 1)
                loss = 0.5 * loss + 0.5 * 16 * F.kl_div(F.log_softmax(p / 4, 1), lt, log_target=True, reduction='batchmean')
            loss.backward(); opt.step(); opt.zero_grad()
        return now() - t0

    for l in learners.values(): epoch(l)  # warm-up
    teacher_pass(); raw_epoch(False); raw_epoch(True)
    times = {k: [] for k in list(learners) + ['teacher', 'in-loop', 'raw plain', 'raw KD']}
    for _ in range(rounds):
        for k, l in learners.items():
            inloop[0] = 0.
            times[k].append(epoch(l))
            if k == 'online': times['in-loop'].append(inloop[0])
        times['teacher'].append(teacher_pass())
        times['raw plain'].append(raw_epoch(False)); times['raw KD'].append(raw_epoch(True))
    for h in hooks: h.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    per_round = lambda f: statistics.median(f(*(times[k][i] for k in times)) for i in range(rounds))
    ks = list(times)
    r_cache = per_round(lambda *v: v[ks.index('cache')] / v[ks.index('plain')])
    r_online = per_round(lambda *v: v[ks.index('online')] / (v[ks.index('plain')] + v[ks.index('teacher')]))
    r_inloop = per_round(lambda *v: v[ks.index('online')] / (v[ks.index('plain')] + v[ks.index('in-loop')]))
    print(f"device {dev}, torch threads {torch.get_num_threads()}, {clock} clock, {rounds} rounds, bs {bs}, {len(dls.train)} training batches/epoch")
    for k, v in med.items(): print(f"  median {k:8s} {v*1000:8.1f} ms   (min {min(times[k])*1000:.1f}, max {max(times[k])*1000:.1f})")
    print(f"cache KD epoch / plain epoch                   = {r_cache:.3f}  (target <= 1.10)")
    print(f"online KD epoch / (plain epoch + teacher fwd)  = {r_online:.3f}  (target <= 1.05)")
    print(f"  same with the in-loop teacher time            = {r_inloop:.3f}")
    r_min = per_round(lambda *v: v[ks.index('minimal')] / (v[ks.index('plain')] + v[ks.index('teacher')]))
    print(f"  reference MinimalKD epoch / (plain + teacher) = {r_min:.3f}  (kdbook / MinimalKD = "
          f"{per_round(lambda *v: v[ks.index('online')] / v[ks.index('minimal')]):.3f})")
    extra = lambda a, b: per_round(lambda *v: v[ks.index(a)] - v[ks.index(b)] - v[ks.index('teacher')]) * 1000
    print(f"time beyond the teacher's forward, ms per epoch: hand-written loop {extra('raw KD', 'raw plain'):.1f}, "
          f"MinimalKD in fastai {extra('minimal', 'plain'):.1f}, kdbook {extra('online', 'plain'):.1f}")
    mn = {k: min(v) for k, v in times.items()}
    print(f"  with minima instead of medians: cache {mn['cache']/mn['plain']:.3f}, online {mn['online']/(mn['plain']+mn['teacher']):.3f}")
    return r_cache, r_online


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=15)
    p.add_argument('--bs', type=int, nargs='+', default=[128], help="one or more batch sizes, each measured in turn")
    p.add_argument('--threads', type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument('--clock', choices=['wall', 'cpu'], default='wall', help="time.perf_counter or time.process_time")
    a = p.parse_args()
    for bs in a.bs: main(a.rounds, bs, a.threads, a.clock)
