"""Pruning acceptance benchmark on the default MNIST-1D teacher, `cnn1d(64)`.

Run: `python benchmarks/bench_prune.py [--part unstructured|structured|overhead|lottery|all] [--epochs 40]`
(the overhead on a shared machine: `--part overhead --threads 1 --clock cpu --reps 25`, as `bench_kd.py` does)

1. unstructured, the 90% recipe, for each of `--seeds` (default 42 43 44): the dense teacher with the book's recipe
   (`set_seed(seed)`, `mnist1d_dls(seed=seed)`, fit_one_cycle(40, 1e-2, wd=1e-2)), then a copy pruned to 90% by
   `PruneCallback`'s default ranking (LAMP scores since 2026-12-07; global raw magnitude in the runs before) with AGP during a further fit_one_cycle(--prune-epochs=160, 1e-2, wd=1e-2) (10% dense, 60% AGP ramp,
   30% recovery at 90%, masks every 8 batches), with KD from a frozen copy of the dense model (`KDCallback`,
   --prune-alpha=0.9, --T=4; `--kd 0` for plain retraining) on inputs perturbed by `InputNoise(--noise=0.1,
   max_shift=--shift=2)`; per seed the sparsity, the accuracy and its drop from dense, then the mean drop (target:
   within 1.0 point), and, on the last seed, the zeros after 2 more epochs of Adam, after save/load and after export +
   load_learner. `benchmarks/prune_recipe.py` is the search that found this recipe (its docstring has the table).
2. structured: `prune_learner_channels(learn, 0.5)` on the trained teacher, then retraining (KD from the dense
   teacher with `kdbook.distill.KDCallback` when it exists, plain retraining otherwise); CPU inference time of
   dense vs pruned vs a hand-built `cnn1d(32)` twin at batch 256, interleaved, median of `--runs` runs each.
   `benchmarks/bench_structured.py` is the careful version (3 seeds, threads 1 and 2, page faults and CPU time).
3. lottery: iterative magnitude pruning to 95% (`lottery_ticket`, `--rounds` rounds of `--lt-epochs` epochs), rewinding
   to the initial weights, late rewinding to iteration 31 (one epoch), and the same procedure re-initialising at random.
4. overhead: (a) one training step (forward, backward, Adam step) of the same pruned model with and without the
   callback's per-step work (gradient masking before the step, weight masking after it), alternating step by
   step, median ratio; (b) whole fastai training batches of a dense Learner and of one with a 90% `PruneCallback`
   (one-shot, and the default AGP schedule), interleaved epoch by epoch, median of per-epoch per-batch medians; and the
   whole epochs (train + valid, the loader included) of the same fits, median of the per-round ratios.
All timings are ratios measured side by side in one run; absolute times depend on the machine and its load.
"""
import argparse, copy, statistics, tempfile, time
from pathlib import Path
import torch
from fastai.learner import Learner, load_learner
from fastai.torch_core import set_seed
from fastai.metrics import accuracy
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback  # noqa: F401 (patches Learner.no_bar)
from fastai.callback.schedule import combine_scheds, SchedNo
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d, count_params
from kdbook.schedules import SchedAgp
from kdbook.prune import PruneCallback, sparsity_report, bake_masks, prunable_layers, prune_learner_channels


def learner(cbs=None, **kw): return Learner(mnist1d_dls(valid_pct=None), cnn1d(64), metrics=accuracy, cbs=cbs, **kw)


def teacher(seed=0, epochs=40, cbs=None):
    torch.manual_seed(seed)
    learn = learner(cbs=cbs)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2, wd=1e-2)
    return learn, time.perf_counter() - t


def recipe_learner(dense_model, seed, args):
    "A Learner on a copy of `dense_model` with the 90% recipe's callbacks; random draws and batch order from `seed`"
    from kdbook.data import InputNoise
    sched = combine_scheds([0.1, 0.6, 0.3], [SchedNo(0., 0.), SchedAgp(0., 1.), SchedNo(1., 1.)])
    alpha, T = getattr(args, 'prune_alpha', 0.9), getattr(args, 'T', 4.0)
    kd, how = _kd(dense_model, alpha, T) if args.kd else (None, 'plain retraining')
    noise, shift = getattr(args, 'noise', 0.1), getattr(args, 'shift', 2)
    cbs = [PruneCallback(0.9, schedule=sched, every=8)] + ([kd] if kd else [])
    if noise or shift: cbs.append(InputNoise(std=noise, max_shift=shift)); how += f', InputNoise(std={noise}, max_shift={shift})'
    set_seed(seed)
    dls = mnist1d_dls(seed=seed, valid_pct=None)
    return Learner(dls, copy.deepcopy(dense_model), metrics=accuracy, cbs=cbs), how


def unstructured(args):
    res = []
    for seed in getattr(args, 'seeds', [42]):
        set_seed(seed)
        dense = Learner(mnist1d_dls(seed=seed, valid_pct=None), cnn1d(64), metrics=accuracy)
        t = time.perf_counter()
        with dense.no_bar(), dense.no_logging(): dense.fit_one_cycle(args.epochs, 1e-2, wd=1e-2)
        t_dense = time.perf_counter() - t
        with dense.no_bar(): acc_dense = dense.validate()[1]
        learn, how = recipe_learner(dense.model, seed + 1000, args)
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.prune_epochs, 1e-2, wd=1e-2)
        t_prune = time.perf_counter() - t
        with learn.no_bar(): acc_sparse, sp = learn.validate()[1], learn.prune.measured()
        res.append((seed, acc_dense, acc_sparse, sp))
        print(f"[unstructured] seed {seed}: dense acc {acc_dense:.4f} ({args.epochs} epochs, {t_dense:.1f}s) | 90% AGP over "
              f"{args.prune_epochs} epochs, {how}: sparsity {sp:.4f}, acc {acc_sparse:.4f} ({t_prune:.1f}s) | drop "
              f"{100*(acc_dense-acc_sparse):.2f} points", flush=True)
    print(sparsity_report(learn).to_string())
    drops = [100*(d - p) for _, d, p, _ in res]
    print(f"[unstructured] mean over seeds {[r[0] for r in res]}: dense {100*statistics.mean(r[1] for r in res):.2f}%, "
          f"pruned {100*statistics.mean(r[2] for r in res):.2f}%, drop {statistics.mean(drops):.2f} points "
          f"(per seed {', '.join(f'{x:.2f}' for x in drops)}; target <= 1.0), sparsity {min(r[3] for r in res):.4f}..{max(r[3] for r in res):.4f}")
    zeros = {n: m.weight == 0 for n, m in prunable_layers(learn.model).items()}
    # more training (Adam, fastai's default; KD and noise still on)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3)
    ok_train = all(torch.equal(m.weight == 0, zeros[n]) for n, m in prunable_layers(learn.model).items())
    with tempfile.TemporaryDirectory() as d:
        learn.path = Path(d); learn.save('p')
        l2 = learner(path=d, cbs=PruneCallback(0.9)); l2.load('p')
        with l2.no_bar(), l2.no_logging(): l2.fit(1, 1e-3)
        ok_load = all(torch.equal(m.weight == 0, zeros[n]) for n, m in prunable_layers(l2.model).items())
        bake_masks(l2); l2.export(Path(d)/'p.pkl'); l3 = load_learner(Path(d)/'p.pkl')
        # load_learner puts the model on the CPU (its default, cpu=True): compare and validate there
        ok_export = all(torch.equal(m.weight == 0, zeros[n].cpu()) for n, m in prunable_layers(l3.model).items())
        with l3.no_bar(): acc_export = l3.validate(dl=mnist1d_dls(device='cpu', valid_pct=None).valid)[1]
    print(f"[unstructured] zeros exact after 2 more epochs: {ok_train}, after save/load + 1 epoch: {ok_load}, "
          f"after export/load_learner: {ok_export} (acc {acc_export:.4f})")
    return learn


def _kd(model, alpha=0.5, T=4.0):
    "A KDCallback distilling from a frozen copy of `model`, or None when kdbook.distill is missing"
    try: from kdbook.distill import KDCallback
    except ImportError as e: return None, f'plain retraining (no kdbook.distill: {e})'
    return KDCallback(copy.deepcopy(model).eval(), alpha=alpha, T=T), f'KD retraining from the dense model (KDCallback, alpha={alpha}, T={T:g})'


def _median_time(model, x, runs):
    "Interleaving is done by the caller; one timed forward pass"
    t = time.perf_counter()
    with torch.no_grad(): model(x)
    return time.perf_counter() - t


def structured(args):
    dense, _ = teacher(epochs=args.epochs)
    with dense.no_bar(): acc_dense = dense.validate()[1]
    torch.manual_seed(1)
    learn = learner()
    learn.model.load_state_dict(dense.model.state_dict())
    prune_learner_channels(learn, 0.5)
    with learn.no_bar(): acc_cut = learn.validate()[1]
    kd, how = _kd(dense.model, args.alpha) if args.kd else (None, 'plain retraining')
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.epochs, 1e-2, wd=1e-2, cbs=kd)
    with learn.no_bar(): acc_pruned = learn.validate()[1]
    # CPU inference (the deployment this part measures), whatever device trained them: copies moved to the CPU
    x = torch.randn(256, 1, 40)
    cpu = lambda m: copy.deepcopy(m).cpu().eval()
    a, b, c = cpu(dense.model), cpu(learn.model), cnn1d(32).eval()   # c: the hand-built half-width twin
    for _ in range(10): _median_time(a, x, 1); _median_time(b, x, 1); _median_time(c, x, 1)  # warm-up
    ta, tb, tc = [], [], []
    for _ in range(args.runs): ta.append(_median_time(a, x, 1)); tb.append(_median_time(b, x, 1)); tc.append(_median_time(c, x, 1))
    ma, mb, mc = statistics.median(ta), statistics.median(tb), statistics.median(tc)
    print(f"[structured] params {count_params(a)} -> {count_params(b)}; acc dense {acc_dense:.4f}, right after cut {acc_cut:.4f}, "
          f"after {how} {acc_pruned:.4f} (drop {100*(acc_dense-acc_pruned):.2f} points)")
    from kdbook.report import count_macs
    print(f"[structured] CPU inference batch 256, {torch.get_num_threads()} threads, median of {args.runs} interleaved runs: "
          f"dense {1e3*ma:.3f} ms, pruned {1e3*mb:.3f} ms, speed-up {ma/mb:.2f}x; hand-built cnn1d(32) twin "
          f"{1e3*mc:.3f} ms, speed-up {ma/mc:.2f}x; MACs ratio {count_macs(a, x)/count_macs(b, x):.2f}x "
          f"(wall time with the allocator as it is: see benchmarks/bench_structured.py for why this ratio swings "
          f"between ~2x and ~9x, and for the measurement with page faults and load taken out)")


_CLOCK = time.perf_counter  # --clock cpu: time.process_time (with one thread, leaves out waits for a busy core)


def _now(dev):
    "The clock once the kernels queued on `dev` have run (CUDA runs asynchronously; the CPU needs no wait)"
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    return _CLOCK()


class BatchTimer(Callback):
    "Time of each training batch, from the first before_batch to the first after_batch callback"
    order = -100
    def __init__(self): self.times = []
    def before_batch(self):
        if self.training: self._t = _now(self.dls.device)
    def after_batch(self):
        if self.training: self.times.append(_now(self.dls.device) - self._t)


def step_overhead(n=400):
    "The same model and optimizer stepped with and without the callback's mask work, alternating step by step"
    torch.manual_seed(0)
    learn = learner(cbs=PruneCallback(0.9))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)   # pruned once, optimizer built
    cb, model, opt = learn.prune, learn.model, learn.opt
    xb, yb = learn.dls.one_batch()
    model.train()
    dev = learn.dls.device
    def step(masked):
        t = _now(dev)
        learn.loss_func(model(xb), yb).backward()
        if masked: cb.before_step()
        opt.step()
        if masked: cb.after_step()
        opt.zero_grad()
        return _now(dev) - t
    for _ in range(20): step(False); step(True)
    td, tm = zip(*[(step(False), step(True)) for _ in range(n)])
    md, mm = statistics.median(td), statistics.median(tm)
    print(f"[overhead] per step, alternating A/B over {n} steps: dense {1e3*md:.3f} ms, with masks {1e3*mm:.3f} ms, "
          f"ratio {mm/md:.3f}")
    return mm / md


def overhead(args):
    res = {'step': step_overhead()}
    for label, mk in [('one-shot 90% mask', lambda: PruneCallback(0.9, schedule='one_shot', pct_start=0)),
                      ('AGP to 90% (the default: LAMP, 30-70% of the fit, masks every batch)', lambda: PruneCallback(0.9))]:
        torch.manual_seed(0)
        ld, lp = (learner(cbs=BatchTimer()) for _ in range(2))
        lp.add_cb(mk())
        with ld.no_bar(), ld.no_logging(), lp.no_bar(), lp.no_logging():
            ld.fit(1, 1e-3); lp.fit(1, 1e-3)                  # warm-up (and lp prunes)
            ld.batch_timer.times.clear(); lp.batch_timer.times.clear()
            td, tp_, ed, ep = [], [], [], []
            dev = ld.dls.device
            for _ in range(args.reps):                        # interleaved A, B, A, B ...
                t = _now(dev); ld.fit(1, 1e-3); ed.append(_now(dev) - t)
                td.append(statistics.median(ld.batch_timer.times)); ld.batch_timer.times.clear()
                t = _now(dev); lp.fit(1, 1e-3); ep.append(_now(dev) - t)
                tp_.append(statistics.median(lp.batch_timer.times)); lp.batch_timer.times.clear()
        md, mp = statistics.median(td), statistics.median(tp_)
        res[label] = mp / md
        print(f"[overhead] {label}: dense step {1e3*md:.3f} ms, masked step {1e3*mp:.3f} ms, ratio {mp/md:.3f} "
              f"(median over {args.reps} interleaved epochs of per-batch medians)")
        re = statistics.median(b / a for a, b in zip(ed, ep))
        res[label + ', epoch'] = re
        print(f"[overhead] {label}: whole epoch (train + valid, loader included) "
              f"dense {1e3*statistics.median(ed):.1f} ms, pruned {1e3*statistics.median(ep):.1f} ms, ratio {re:.3f} "
              f"(median of the {args.reps} per-round ratios)")
    return res


def lottery(args):
    "Iterative magnitude pruning to 95%: rewind to init, late rewinding, and the same masks with a random re-init"
    from kdbook.prune import lottery_ticket
    for name, kw in [('rewind to init (k=0)', {}), ('late rewinding (k=31, one epoch)', dict(rewind_iter=31)),
                     ('random re-init', dict(reinit=True))]:
        torch.manual_seed(0)
        learn = learner()
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging():
            cb = lottery_ticket(learn, 0.95, rounds=args.rounds, epochs=args.lt_epochs, **kw)
            acc = learn.validate()[1]
        print(f"[lottery] {name}: sparsity {cb.measured():.4f}, acc {acc:.4f} "
              f"({args.rounds} rounds of {args.lt_epochs} epochs, {time.perf_counter()-t:.0f}s)")


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--part', default='all', choices=['unstructured', 'structured', 'overhead', 'lottery', 'all'])
    p.add_argument('--epochs', type=int, default=40)
    p.add_argument('--prune-epochs', type=int, default=160, help='unstructured: epochs of the fit with gradual pruning')
    p.add_argument('--seeds', type=int, nargs='+', default=[42, 43, 44], help='unstructured: seeds of the dense models')
    p.add_argument('--prune-alpha', type=float, default=0.9, help='unstructured: weight of the KD term')
    p.add_argument('--T', type=float, default=4.0, help='unstructured: KD temperature')
    p.add_argument('--noise', type=float, default=0.1, help='unstructured: InputNoise std (0: off)')
    p.add_argument('--shift', type=int, default=2, help='unstructured: InputNoise max circular shift (0: off)')
    p.add_argument('--kd', type=int, default=1, help='1: retrain with KD from the dense model (kdbook.distill), 0: plain')
    p.add_argument('--alpha', type=float, default=0.5, help='structured: weight of the KD term')
    p.add_argument('--rounds', type=int, default=2, help='lottery: prune-rewind-retrain rounds')
    p.add_argument('--lt-epochs', type=int, default=10, help='lottery: epochs of every fit')
    p.add_argument('--runs', type=int, default=300, help='timed inference runs of each model')
    p.add_argument('--reps', type=int, default=10, help='interleaved epochs of the overhead timing')
    p.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                   help='overhead: time.perf_counter or time.process_time (use with --threads 1 on a shared machine)')
    p.add_argument('--threads', type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.clock == 'cpu': _CLOCK = time.process_time
    if a.part in ('unstructured', 'all'): unstructured(a)
    if a.part in ('structured', 'all'): structured(a)
    if a.part in ('overhead', 'all'): overhead(a)
    if a.part in ('lottery', 'all'): lottery(a)
