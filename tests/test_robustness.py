"""Robustness of kdbook's training callbacks on real fastai Learners (CPU, seconds each):
resuming from a checkpoint, interrupted fits, export to a fresh process, mixed precision, the meta device,
and the CPU dry run of `benchmarks/gpu_run.py`."""
import copy, os, subprocess, sys, textwrap, warnings
from pathlib import Path
import numpy as np, pytest, torch
from torch import nn
from torch.amp import GradScaler, autocast
from fastcore.foundation import L
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.fp16 import MixedPrecision, AMPMode
from fastai.callback.progress import ProgressCallback  # noqa: F401 (patches Learner.no_bar)
from fastai.callback.schedule import SchedLin, fit_one_cycle  # noqa: F401 (patches Learner.fit_one_cycle)
from fastai.callback.tracker import SaveModelCallback
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d, count_params, model_device
from kdbook.teacher import Teacher, as_teacher, snapshot, same_weights
from kdbook.distill import KDCallback, FeatureKDCallback
from kdbook.prune import PruneCallback, prunable_layers, bake_masks
from kdbook.schedules import AttrScheduler

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def dls(): return mnist1d_dls(bs=64, n_train=1000, n_valid=500, valid_pct=None) # two splits: state, not a score


@pytest.fixture(scope='module')
def sdls(): return mnist1d_dls(bs=64, n_train=256, n_valid=64, valid_pct=None)


@pytest.fixture(scope='module')
def teacher(dls):
    "A trained cnn1d(32) teacher (~88% on this subset)"
    torch.manual_seed(0)
    learn = Learner(dls, cnn1d(32), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(6, 1e-2)
    return learn.model.eval()


def masks_exact(cb):
    "Every pruned weight of the PruneCallback `cb` is exactly zero"
    return all(bool((m.weight[~cb.masks[n]] == 0).all()) for n, m in cb._layers.items())


def n_hooks(*models): return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for mod in models for m in mod.modules())


# ------------------------------------------------------------------ checkpoint and resume
class CrashAfter(Callback):
    "Stop the fit after epoch `epoch` like a killed job, keeping the training loader's random state at that point"
    order = 99
    def __init__(self, epoch): self.stop_epoch = epoch
    def after_epoch(self):
        if self.epoch == self.stop_epoch: self.rng = self.dls.train.rng.getstate(); raise CancelFitException()


class Trace(Callback):
    "Record, at every training batch, the progress, KD alpha and T, and the pruning target in force"
    order, run_valid = PruneCallback.order + 1, False
    def before_fit(self):
        if not hasattr(self, 'log'): self.log = []
    def after_loss(self): self.log.append((self.learn.pct_train, self.kd.alpha, self.kd.T, self.prune.target_sparsity))


def _kd_prune_learner(dls, teacher, path, seed=1, ch=16, sparsity=0.8):
    torch.manual_seed(seed)
    cbs = [KDCallback(teacher, alpha=0.5, T=4.), PruneCallback(sparsity, schedule='agp', every=4), Trace()]
    return Learner(dls, cnn1d(ch), loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=path, cbs=cbs)


def _kd_sched(): return AttrScheduler({'kd.alpha': SchedLin(0.2, 0.9), 'kd.T': SchedLin(6., 2.)})


def _three_runs(dls, teacher, path, n_epoch=6, stop=3, restore_rng=True, seed=1, **kw):
    "An uninterrupted fit, the same fit stopped after `stop` epochs, and its resume from the checkpoint"
    rng0 = dls.train.rng.getstate()
    full = _kd_prune_learner(dls, teacher, path, seed, **kw)
    with full.no_bar(), full.no_logging(): full.fit_one_cycle(n_epoch, 1e-2, cbs=_kd_sched())
    dls.train.rng.setstate(rng0)
    half, crash = _kd_prune_learner(dls, teacher, path, seed, **kw), CrashAfter(stop - 1)
    save = SaveModelCallback(every_epoch=True, fname='ck', with_opt=True)
    with half.no_bar(), half.no_logging(): half.fit_one_cycle(n_epoch, 1e-2, cbs=[_kd_sched(), save, crash])
    # the resume recipe: a new Learner with the same callbacks, learn.load + AttrScheduler.load_state, start_epoch
    res, sched = _kd_prune_learner(dls, teacher, path, seed + 10, **kw), _kd_sched()
    res.load(f'ck_{stop-1}'); sched.load_state(res, f'ck_{stop-1}')
    if restore_rng: dls.train.rng.setstate(crash.rng)
    else: dls.train.rng.seed(1000 + seed)  # a new process: the loader shuffles from another state than the crashed run
    with res.no_bar(), res.no_logging(): res.fit_one_cycle(n_epoch, 1e-2, cbs=sched, start_epoch=stop)
    return full, half, res, sched


def test_resume_is_exact(dls, teacher, tmp_path):
    "Stopped after 3 of 6 epochs and resumed with start_epoch: the same alpha/T/sparsity at every batch, bit-identical weights"
    full, half, res, sched = _three_runs(dls, teacher, tmp_path)
    n_iter = len(dls.train)
    assert 3*n_iter % 4 != 0  # the resume point is not a multiple of `every`: the mask-update phase must carry over
    lf, lh, lr = full.trace.log, half.trace.log, res.trace.log
    assert len(lh) == 3*n_iter and len(lr) == 3*n_iter and len(lf) == 6*n_iter
    assert [o[:3] for o in lr] == [o[:3] for o in lf[3*n_iter:]]          # progress, alpha, T continue exactly
    assert lr[0][0] == pytest.approx(0.5) and lr[0][1] == pytest.approx(0.55)
    assert sched.hps['kd.alpha'] == [o[1] for o in lf]                      # the scheduler's history is whole again
    # the pruning target is the uninterrupted one at every batch after the first mask update of the resumed fit
    upd = next(i for i, o in enumerate(lr) if o[3] is not None)
    assert upd < 4 and [o[3] for o in lr[upd:]] == [o[3] for o in lf[3*n_iter + upd:]]
    assert half.prune.measured() < 0.75                                      # stopped mid-ramp
    assert abs(res.prune.measured() - 0.8) < 0.005 and res.prune.measured() == full.prune.measured()
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), res.model.state_dict().values()))
    assert masks_exact(res.prune)
    assert res.validate()[1] == full.validate()[1]


def test_resume_without_rng_same_sparsity(dls, teacher, tmp_path):
    "The plain fastai recipe (a new loader state, as in a new process): the same final sparsity, the checkpoint's masks kept"
    full, half, res, _ = _three_runs(dls, teacher, tmp_path, restore_rng=False)
    assert res.prune.measured() == full.prune.measured()
    zeros_ck = {n: m.weight == 0 for n, m in prunable_layers(half.model).items()}
    assert all(bool(((m.weight == 0) | ~zeros_ck[n]).all()) for n, m in prunable_layers(res.model).items())  # no regrowth
    acc_full, acc_res = full.validate()[1], res.validate()[1]
    assert abs(acc_full - acc_res) < 0.05, (acc_full, acc_res)  # same recipe, another data order: within noise


@pytest.mark.slow
def test_resume_accuracy_seeds(tmp_path):
    "Slow: full MNIST-1D, cnn1d(32) student at 50%, 3 seeds, resumed in a 'new process' vs uninterrupted: sparsity within 0.005, accuracy within 1 point"
    dls = mnist1d_dls(bs=128)
    torch.manual_seed(0)
    tl = Learner(dls, cnn1d(64), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with tl.no_bar(), tl.no_logging(): tl.fit_one_cycle(20, 1e-2, wd=1e-2)
    rows = []
    for seed in (1, 2, 3):
        full, _, res, _ = _three_runs(dls, tl.model.eval(), tmp_path, n_epoch=20, stop=10, restore_rng=False, seed=seed,
                                      ch=32, sparsity=0.5)
        rows.append((full.prune.measured(), res.prune.measured(), full.validate()[1], res.validate()[1]))
    print('\n(sparsity full, resumed, accuracy full, resumed):', [tuple(round(v, 4) for v in r) for r in rows])
    assert all(abs(a - b) < 0.005 for a, b, _, _ in rows)
    assert all(abs(c - d) <= 0.01 for _, _, c, d in rows)


def test_load_then_fit_keeps_pruned_weights(dls, tmp_path):
    "A checkpoint loaded into a fresh fit without start_epoch: the schedule starts again, but no pruned weight grows back"
    learn = Learner(dls, cnn1d(16), metrics=accuracy, path=tmp_path, cbs=PruneCallback(0.6, schedule='agp'))
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    learn.save('p')
    zeros = {n: m.weight == 0 for n, m in prunable_layers(learn.model).items()}
    l2 = Learner(dls, cnn1d(16), metrics=accuracy, path=tmp_path, cbs=PruneCallback(0.6, schedule='agp'))
    l2.load('p')
    with l2.no_bar(), l2.no_logging(): l2.fit(1, 1e-2)
    assert all(bool((m.weight[zeros[n]] == 0).all()) for n, m in prunable_layers(l2.model).items())
    assert abs(l2.prune.measured() - 0.6) < 0.01


# ------------------------------------------------------------------ interruption
class Boom(Callback):
    "Raise `exc` at `event` of the second training batch"
    def __init__(self, event, exc, order=0): self.event, self.exc, self.order = event, exc, order
    def __call__(self, event_name):
        in_batch = event_name not in ('before_epoch', 'after_epoch', 'after_train', 'before_validate')
        if event_name == self.event and (not in_batch or (self.learn.training and self.learn.iter == 1)): raise self.exc
        return super().__call__(event_name)


class RaiseIn(nn.Module):
    "Identity that raises `exc` on its `n`-th call: an interrupt inside a model's forward pass"
    def __init__(self, exc, n=2): super().__init__(); self.exc, self.n, self.calls = exc, n, 0
    def forward(self, x):
        self.calls += 1
        if self.calls == self.n: raise self.exc
        return x


def _interrupted(dls, tmp_path, extra=(), student_exc=None, teacher_exc=None):
    "KD + FeatureKD + pruning fit interrupted by `extra` callbacks or inside the student's or teacher's forward"
    torch.manual_seed(0)
    tm = cnn1d(32)
    if teacher_exc is not None: tm.block2.append(RaiseIn(teacher_exc))
    rg = [p.requires_grad for p in tm.parameters()]
    student = cnn1d(16)
    if student_exc is not None: student.block3.append(RaiseIn(student_exc))
    t = Teacher(tm)  # one Teacher for both callbacks
    cbs = [KDCallback(t), FeatureKDCallback(t, 'block2'), PruneCallback(0.5)]
    learn = Learner(dls, student, loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=tmp_path, cbs=cbs)
    n_met = len(learn.metrics)
    if student_exc is not None: student.block3[-1].n = -1
    if teacher_exc is not None: tm.block2[-1].n = -1
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)  # a full fit first: pruned, adapters created
    if student_exc is not None: student.block3[-1].n = student.block3[-1].calls + 2
    if teacher_exc is not None: tm.block2[-1].n = tm.block2[-1].calls + 2
    snap = snapshot(tm)
    try:
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=list(extra))
    except (KeyboardInterrupt, RuntimeError) as e: learn.raised = e
    return learn, tm, snap, rg, n_met


def _check_clean(learn, tm, snap, rg, n_met, tmp_path):
    assert same_weights(tm, snap) and all(p.grad is None for p in tm.parameters())      # teacher untouched
    assert [p.requires_grad for p in tm.parameters()] == rg                            # ... and its flags given back
    assert n_hooks(learn.model, tm) == 0                                               # hooks removed
    assert len(learn.metrics) == n_met                                                 # no loss column left behind
    n_model = len(list(learn.model.parameters()))
    assert sum(len(pl) for pl in learn.opt.param_lists) == n_model                     # adapters out of the optimizer
    assert masks_exact(learn.prune) and abs(learn.prune.measured() - 0.5) < 0.01       # masks applied
    learn.save('after')                                                                # loadable ...
    l2 = Learner(learn.dls, copy.deepcopy(learn.model), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        l2.load('after')
    assert not [o for o in w if 'optimizer' in str(o.message)]                        # optimizer state loads too
    learn.export('after.pkl')                                                          # ... and exportable
    x = learn.dls.valid_ds[0][0]
    assert load_learner(tmp_path/'after.pkl').predict(x)[0] == learn.predict(x)[0]
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)                        # and trains again
    assert len(learn.metrics) == n_met and n_hooks(learn.model, tm) == 0 and same_weights(tm, snap)


EVENTS = ['before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_step', 'after_batch', 'after_epoch']

@pytest.mark.parametrize('exc', [KeyboardInterrupt(), RuntimeError('user callback failed')], ids=['ctrl-c', 'error'])
@pytest.mark.parametrize('event,order', [(e, 0) for e in EVENTS] + [('before_batch', 80)])
def test_interrupted_by_callback(sdls, tmp_path, event, order, exc):
    "A user callback raising at any event, before or after the KD callbacks (order 0 or 80)"
    learn, tm, snap, rg, n_met = _interrupted(sdls, tmp_path, extra=[Boom(event, exc, order)])
    assert type(learn.raised) is type(exc)
    _check_clean(learn, tm, snap, rg, n_met, tmp_path)


@pytest.mark.parametrize('event', ['after_loss', 'after_epoch'])
def test_cancelled_by_callback(sdls, tmp_path, event):
    "fastai's own `CancelFitException`: fastai runs `after_cancel_fit` and `after_fit`"
    learn, tm, snap, rg, n_met = _interrupted(sdls, tmp_path, extra=[Boom(event, CancelFitException())])
    _check_clean(learn, tm, snap, rg, n_met, tmp_path)


@pytest.mark.parametrize('where', ['student', 'teacher'])
@pytest.mark.parametrize('exc', [KeyboardInterrupt(), RuntimeError('CUDA out of memory')], ids=['ctrl-c', 'error'])
def test_interrupted_in_forward(sdls, tmp_path, where, exc):
    "Ctrl-C or an error inside the student's or the teacher's forward pass, while the feature hooks are live"
    kw = {'student_exc' if where == 'student' else 'teacher_exc': exc}
    learn, tm, snap, rg, n_met = _interrupted(sdls, tmp_path, **kw)
    mod = learn.model.block3[-1] if where == 'student' else tm.block2[-1]
    assert type(learn.raised) is type(exc) and mod.calls == mod.n  # it did raise, in the forward pass
    mod.n = -1                 # and won't again
    _check_clean(learn, tm, snap, rg, n_met, tmp_path)


def test_bad_schedule_mid_fit_leaves_clean_state(sdls, tmp_path):
    "An AttrScheduler moving alpha out of [0, 1] raises the KDCallback's ValueError mid-fit; nothing is left behind"
    torch.manual_seed(0)
    tm = cnn1d(32); snap = snapshot(tm); t = Teacher(tm)
    learn = Learner(sdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=[KDCallback(t), FeatureKDCallback(t, 'block2')])
    n_met = len(learn.metrics)
    with pytest.raises(ValueError, match=r'alpha must be in \[0, 1\]'), learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-2, cbs=AttrScheduler({'kd.alpha': SchedLin(0., 5.)}))
    assert n_hooks(learn.model, tm) == 0 and len(learn.metrics) == n_met and same_weights(tm, snap)
    assert all(p.requires_grad for p in tm.parameters())
    assert sum(len(pl) for pl in learn.opt.param_lists) == len(list(learn.model.parameters()))


# ------------------------------------------------------------------ mixed precision
class CPUMixedPrecision(MixedPrecision):
    "fastai's `MixedPrecision` (what `to_fp16()`/`to_bf16()` add) with autocast and `GradScaler` on the CPU: the GPU code path, testable here"
    def before_fit(self):
        dtype = torch.float16 if self.amp_mode == AMPMode.FP16 else torch.bfloat16
        self.kwargs['enabled'] = dtype == torch.float16
        self.autocast, self.learn.scaler, self.scales = autocast('cpu', dtype=dtype), GradScaler('cpu', **self.kwargs), L()


class Dtypes(Callback):
    "Record the dtypes of the teacher's output, the KD term and the loss, and the loss scale, at every training batch"
    order, run_valid = 5, False  # after KDCallback/FeatureKDCallback, before MixedPrecision (10) leaves autocast
    def before_fit(self): self.t, self.kd_term, self.loss, self.pred, self.scale = set(), set(), set(), set(), []
    def after_pred(self): self.t.add(self.kd._t.dtype)
    def after_loss(self):
        self.kd_term.update(o.dtype for o in self.kd._log[-1][0])
        self.loss.add(self.learn.loss_grad.dtype); self.pred.add(self.learn.pred.dtype)
    def after_step(self):
        sc = getattr(self.learn, 'scaler', None)
        if sc is not None and sc.is_enabled(): self.scale.append(sc.get_scale())


def _amp_learner(dls, teacher, amp=None, criterion='magnitude', **kw):
    torch.manual_seed(1)
    t = as_teacher(teacher)  # one Teacher for both callbacks
    cbs = [KDCallback(t, alpha=0.5), FeatureKDCallback(t, 'block2'),
           PruneCallback(0.5, schedule='agp', criterion=criterion, n_taylor=4), Dtypes()]
    if amp: cbs.append(CPUMixedPrecision(amp, **kw))
    learn = Learner(dls, cnn1d(16), loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=cbs)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(4, 1e-2)
    return learn


@pytest.fixture(scope='module')
def fp32_acc(dls, teacher): return _amp_learner(dls, teacher).validate()[1]


@pytest.mark.parametrize('amp,half', [('fp16', torch.float16), ('bf16', torch.bfloat16)])
def test_mixed_precision_kd_and_pruning(dls, teacher, fp32_acc, amp, half):
    "Teacher forward under autocast, KD loss in float32, exact masks, accuracy close to the float32 run"
    learn = _amp_learner(dls, teacher, amp)
    d = learn.dtypes
    assert d.t == {half}                                  # the teacher ran inside the student's autocast region
    assert d.kd_term == {torch.float32} and d.loss == {torch.float32} and d.pred == {torch.float32}
    assert (len(d.scale) > 0) == (amp == 'fp16')          # a GradScaler only for fp16
    assert np.isfinite(np.array(learn.recorder.values, dtype=float)).all()
    assert masks_exact(learn.prune) and abs(learn.prune.measured() - 0.5) < 0.005
    acc = learn.validate()[1]
    assert acc > 0.3 and abs(acc - fp32_acc) < 0.05, (acc, fp32_acc)  # 4 short epochs: well above chance (0.1)


def test_taylor_pruning_survives_loss_scale_overflow(dls, teacher, fp32_acc):
    "fp16 with a huge initial loss scale: the first steps overflow and are skipped; Taylor scores stay finite and true"
    learn = _amp_learner(dls, teacher, 'fp16', criterion='taylor', init_scale=2.**30)
    sc = learn.dtypes.scale
    assert sum(b < a for a, b in zip(sc, sc[1:])) >= 5    # GradScaler backed off: at least 5 steps were skipped
    assert masks_exact(learn.prune) and abs(learn.prune.measured() - 0.5) < 0.005  # not 100% pruned by inf scores
    assert learn.validate()[1] > 0.3 and abs(learn.validate()[1] - fp32_acc) < 0.1


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the fallback on a machine without CUDA')
def test_to_fp16_without_gpu_falls_back(sdls, teacher):
    "fastai's own `to_fp16()` without a GPU: autocast and the scaler disable themselves; KD and pruning train in float32"
    learn = Learner(sdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(teacher), PruneCallback(0.5)])
    learn.to_fp16()
    with warnings.catch_warnings(), learn.no_bar(), learn.no_logging():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-2)
    assert masks_exact(learn.prune) and np.isfinite(learn.recorder.values[-1][0])


# ------------------------------------------------------------------ devices: 'meta' stands in for a second device
class ToMeta(nn.Module):
    "Moves its input to the meta device: a teacher whose outputs land on another device than the student's"
    def forward(self, x): return x.to('meta')


def test_device_logic_with_meta(sdls, tmp_path):
    meta = torch.device('meta')
    assert model_device(cnn1d(16).to(meta)) == meta
    assert model_device(nn.ReLU(), default=meta) == meta                     # no parameters: the default
    tm = cnn1d(32)
    t = Teacher(tm).prepare(meta)                                             # moved to the student's device
    assert all(p.is_meta and not p.requires_grad for p in tm.parameters()) and not tm.training
    out = t(torch.randn(4, 1, 40, device=meta))
    assert out.is_meta and out.shape == (4, 10)
    t.release()
    assert all(p.requires_grad for p in tm.parameters())
    # a teacher without values cannot be moved to the student
    learn = Learner(sdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=KDCallback(cnn1d(32).to(meta)))
    with pytest.raises(ValueError, match="'meta' device"), learn.no_bar(), learn.no_logging(): learn.fit(1)
    # teacher outputs on another device than the student's: a ValueError naming both, nothing left behind
    tm = nn.Sequential(cnn1d(32), ToMeta()); snap = snapshot(tm)
    learn = Learner(sdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(tm), PruneCallback(0.5)])
    n_met = len(learn.metrics)
    with pytest.raises(ValueError, match='student output is on device cpu but teacher output is on meta'), \
         learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert same_weights(tm, snap) and all(p.requires_grad for p in tm.parameters()) and len(learn.metrics) == n_met
    assert masks_exact(learn.prune)


# ------------------------------------------------------------------ export to a fresh process
def test_export_fresh_process_without_teacher(sdls, tmp_path):
    "A distilled, pruned and int8-quantized student exports without teacher or hooks; a fresh Python loads and predicts"
    from kdbook.quantize import quantize_model
    torch.manual_seed(0)
    big = cnn1d(256)                                                          # 0.4M parameters (1.6 MB): a leak would show
    t = Teacher(big)  # one Teacher for both callbacks
    cbs = [KDCallback(t), FeatureKDCallback(t, 'block2'), PruneCallback(0.7),
           AttrScheduler({'kd.alpha': SchedLin(0.2, 0.8)})]
    learn = Learner(sdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=tmp_path, cbs=cbs)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    bake_masks(learn)
    learn.export('student.pkl')
    q = Learner(sdls, quantize_model(learn.model, 'int8_weight'), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                cbs=[KDCallback(t), FeatureKDCallback(t, 'block2')])
    q.export('student_int8.pkl')
    plain = Learner(sdls, copy.deepcopy(learn.model), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    plain.export('plain.pkl')
    size = {k: (tmp_path/f'{k}.pkl').stat().st_size for k in ('student', 'student_int8', 'plain')}
    teacher_bytes = 4 * count_params(big)
    assert size['student'] < size['plain'] + 20_000 < teacher_bytes / 10, size   # no teacher, no adapter weights
    assert size['student_int8'] < teacher_bytes / 10, size
    xs = torch.stack([sdls.valid_ds[i][0] for i in range(8)])
    torch.save(xs, tmp_path/'xs.pth')
    want = [learn.predict(x)[0] for x in xs]
    want_q = [q.predict(x)[0] for x in xs]
    code = textwrap.dedent(f"""
        import json, sys, torch
        from fastai.learner import load_learner
        from kdbook.prune import sparsity_report
        out = {{}}
        for k in ('student', 'student_int8'):
            learn = load_learner({str(tmp_path)!r} + f'/{{k}}.pkl')
            names = [type(c).__name__ for c in learn.cbs]
            assert 'PruneCallback' not in names, names
            assert learn.kd.teacher is None and learn.feature_kd.teacher is None and learn.feature_kd.adapters == {{}}
            assert all(len(m._forward_hooks) + len(m._forward_pre_hooks) == 0 for m in learn.model.modules())
            assert all(not torch.is_tensor(v) or v.numel() < 10_000 for v in learn.model.state_dict().values())
            if k == 'student': assert abs(sparsity_report(learn.model).sparsity.iloc[-1] - 0.7) < 0.005
            xs = torch.load({str(tmp_path/'xs.pth')!r})
            out[k] = [int(learn.predict(x)[0]) for x in xs]
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got['student'] == [int(o) for o in want] and got['student_int8'] == [int(o) for o in want_q]


# ------------------------------------------------------------------ benchmarks/gpu_run.py
def _gpu_run(*args, timeout=120):
    return subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_run.py'), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'})


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_gpu_script_refuses_cpu():
    r = _gpu_run('--parts', 'demo')
    assert r.returncode != 0 and 'no CUDA GPU' in r.stderr and '--allow-cpu' in r.stderr


def test_gpu_script_mixed_precision_for_every_learner(sdls):
    "Inside `mixed_precision('bf16')` every new Learner has fastai's MixedPrecision; fastai's defaults come back after"
    sys.path.insert(0, str(ROOT/'benchmarks'))
    try: import gpu_run
    finally: sys.path.remove(str(ROOT/'benchmarks'))
    from fastai.learner import defaults
    before = list(defaults.callbacks)
    with gpu_run.mixed_precision('bf16'):
        cb = Learner(sdls, cnn1d(16)).cbs.filter(lambda c: isinstance(c, MixedPrecision))
    assert len(cb) == 1 and cb[0].amp_mode == AMPMode.BF16
    assert defaults.callbacks == before and not Learner(sdls, cnn1d(16)).cbs.filter(lambda c: isinstance(c, MixedPrecision))


@pytest.mark.slow
def test_gpu_script_cpu_dry_run():
    "Slow (~2 min): every part of the GPU script runs on the CPU with one epoch and prints one table without failures"
    r = _gpu_run('--allow-cpu', '--quick', timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout.split('=== kdbook on')[-1]
    lines = table.splitlines()[2:]
    assert {l.split()[0] for l in lines} == {'demo', 'pipeline', 'kd', 'prune'} and 'FAILED' not in table
    assert [l.split()[-2] for l in lines if l.split()[0] == 'prune' and ' sparsity ' in l] == ['0.9000']
