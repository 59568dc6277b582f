"Integration tests of distillation (`kdbook.teacher`, `kdbook.distill`, `kdbook.soft_targets` and the data helpers they use) on real fastai Learners (CPU, a few seconds each)"
import copy, pickle
from functools import partial
from pathlib import Path
import numpy as np, pytest, torch
import torch.nn.functional as F
from torch import nn
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback
from fastai.callback.mixup import MixUp
from fastai.callback.schedule import *  # fit_one_cycle, lr_find, fine_tune
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.optimizer import OptimWrapper
from kdbook.data import arrays_dls, mnist1d_dls, InputNoise, mask_labels, MaskedAccuracy
from kdbook.models import cnn1d, mlp, transfer_weights
from kdbook.losses import kd_loss, dkd_loss, attention_loss
from kdbook.teacher import Teacher, as_teacher, snapshot, same_weights
from kdbook.distill import KDCallback, FeatureKDCallback
from kdbook.soft_targets import SoftTargetCache

torch.set_num_threads(1)


def fit(learn, *args, how='fit', **kw):
    with learn.no_bar(), learn.no_logging(): return getattr(learn, how)(*args, **kw)

def blobs(n=400, n_valid=200, seed=0, bs=64, noise=2.0):
    g = np.random.default_rng(seed)
    c = g.normal(size=(4, 40))
    y = np.arange(n + n_valid) % 4
    x = c[y] + noise*g.normal(size=(n + n_valid, 40))
    return arrays_dls(x, y, range(n), range(n, n + n_valid), (1, 40), bs=bs, seed=seed)

@pytest.fixture(scope='module')
def dls(): return blobs()

@pytest.fixture(scope='module')
def mdls(): return mnist1d_dls(bs=64, n_train=400, n_valid=100)

@pytest.fixture(scope='module')
def teacher(dls):
    torch.manual_seed(0)
    learn = Learner(dls, mlp(40, (64,), 4), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    fit(learn, 4, 1e-2)
    assert learn.validate()[1] > 0.85
    return learn

def student(dls, cbs=None, seed=1, model=None, **kw):
    torch.manual_seed(seed)
    return Learner(dls, model if model is not None else mlp(40, (16,), 4), loss_func=CrossEntropyLossFlat(),
                   metrics=accuracy, cbs=cbs, **kw)

class Count(Callback):
    "Count teacher forwards by training/validation phase"
    def __init__(self, module): self.n, self.h = {'train': 0, 'valid': 0}, None; self.module = module
    def before_fit(self): self.h = self.module.register_forward_hook(self.hook)
    def hook(self, *_): self.n['train' if self.learn.training else 'valid'] += 1
    def after_fit(self): self.h.remove()


def test_teacher_untouched_and_not_run_on_valid(mdls):
    tm = cnn1d(64).train()
    snap = snapshot(tm)
    cnt = Count(tm)
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(tm, alpha=0.9), cnt])
    fit(learn, 2, 1e-2, how='fit_one_cycle')
    assert same_weights(tm, snap)
    assert not tm.training and all(not m.training for m in tm.modules())
    assert all(p.grad is None for p in tm.parameters())
    assert cnt.n == {'train': 2*len(mdls.train), 'valid': 0}
    opt_ids = {id(p) for p in learn.opt.all_params().itemgot(0)}
    assert not any(id(p) in opt_ids for p in tm.parameters())


def test_loss_is_exact_mix(dls, teacher):
    class Grab(Callback):
        order = KDCallback.order + 1
        def after_loss(self):
            if self.training and not hasattr(self, 'got'):
                self.got = (self.learn.pred.detach(), self.learn.yb[0], self.learn.xb[0], self.learn.loss_grad.detach(),
                            self.learn.loss)
    g = Grab()
    learn = student(dls, [KDCallback(teacher, loss_func=[(kd_loss, 0.6), (dkd_loss, 0.4)], alpha=0.25, T=3.), g])
    fit(learn, 1, 1e-2)
    p, y, xb, loss, logged = g.got
    t = teacher.model(xb).detach()
    manual = 0.75*F.cross_entropy(p, y) + 0.25*(0.6*kd_loss(p, t, T=3.) + 0.4*dkd_loss(p, t, T=3., target=y))
    torch.testing.assert_close(loss, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logged, manual, rtol=1e-5, atol=1e-6)
    names = learn.recorder.metric_names
    assert {'task_loss', 'kd_loss', 'dkd_loss'} <= set(names)
    # valid_loss is the plain task loss: compare with validate() without the callback
    vl = learn.recorder.values[-1][1]
    learn.remove_cb(KDCallback)
    assert abs(learn.validate()[0] - vl) < 1e-5


def test_works_with_fastai_training_loops(mdls):
    mk = lambda: Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                         cbs=KDCallback(cnn1d(64)), splitter=lambda m: [list(m[:-1].parameters()), list(m[-1].parameters())])
    learn = mk()
    fit(learn, 1, 1e-2, how='fit_one_cycle')
    assert np.isfinite(learn.recorder.values[-1][0])
    sug = fit(mk(), how='lr_find', show_plot=False, num_it=20)
    assert sug.valley > 0
    learn = mk()
    fit(learn, 1, 1e-2, how='fine_tune', freeze_epochs=1)
    assert len(learn.recorder.values) == 1 and np.isfinite(learn.recorder.values[-1][0])
    # a torch optimizer through OptimWrapper
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), opt_func=partial(OptimWrapper, opt=torch.optim.AdamW),
                    cbs=[KDCallback(cnn1d(64)), FeatureKDCallback(cnn1d(64), 'block3')])
    fit(learn, 1, 1e-3)
    assert np.isfinite(learn.recorder.values[-1][0])


def test_bf16_autocast_cpu(mdls):
    class Dtypes(Callback):
        order = KDCallback.order + 1
        def after_loss(self):
            if self.training: self.got = (self.learn.pred.dtype, self.learn.loss_grad.dtype)
    d = Dtypes()
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(cnn1d(64)), d])
    with torch.autocast('cpu', dtype=torch.bfloat16): fit(learn, 1, 1e-2)
    assert d.got == (torch.bfloat16, torch.float32)
    assert np.isfinite(learn.recorder.values[-1][0])


def test_export_load_predict_without_teacher(mdls, tmp_path):
    big = cnn1d(256)  # ~0.6M params, 2.4 MB
    t = Teacher(big)  # one Teacher for both callbacks
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), path=tmp_path,
                    cbs=[KDCallback(t), FeatureKDCallback(t, 'block2')])
    fit(learn, 1, 1e-2)
    learn.export('kd.pkl')
    plain = Learner(mdls, copy.deepcopy(learn.model), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    plain.export('plain.pkl')
    s_kd, s_plain = (tmp_path/'kd.pkl').stat().st_size, (tmp_path/'plain.pkl').stat().st_size
    assert s_kd < s_plain + 5_000, (s_kd, s_plain)
    loaded = load_learner(tmp_path/'kd.pkl')
    assert loaded.kd.teacher is None and loaded.feature_kd.adapters == {}
    x = mdls.valid_ds[0][0].numpy()
    assert loaded.predict(x)[0] == learn.predict(x)[0]
    torch.testing.assert_close(loaded.predict(x)[2], learn.predict(x)[2])
    with pytest.raises(RuntimeError, match='no teacher'): fit(loaded, 1)


def test_feature_adapters_and_hooks(mdls):
    tm = cnn1d(64)
    t = Teacher(tm)  # one Teacher for both callbacks
    fk = FeatureKDCallback(t, [('block2', 'block2'), ('block3.0', 'block3.0')], weight=0.5)
    seen = {}
    class Spy(Callback):
        order = FeatureKDCallback.order + 1
        def after_loss(self):
            if self.training: seen['opt'] = {id(p) for p in self.learn.opt.all_params().itemgot(0)}
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(t), fk, Spy()])
    fit(learn, 1, 1e-2)
    ad = fk.adapters
    assert set(ad) == {'block2->block2', 'block3.0->block3.0'}
    assert all(id(p) in seen['opt'] for a in ad.values() for p in a.parameters())
    w0 = {k: a.weight.detach().clone() for k, a in ad.items()}
    fit(learn, 1, 1e-2)
    assert all(not torch.equal(w0[k], a.weight) for k, a in ad.items())
    assert len(learn.opt.all_params()) == len(list(learn.model.parameters()))
    assert 'feat_loss' in learn.recorder.metric_names
    # attention transfer needs no adapter
    fa = FeatureKDCallback(tm, 'block3', loss_func=attention_loss, adapter=False)
    fit(Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=fa), 1, 1e-2)
    assert fa.adapters == {}


@pytest.mark.parametrize('exc', [RuntimeError('boom'), KeyboardInterrupt()])
def test_hooks_removed_after_exception(mdls, exc):
    tm = cnn1d(64)
    class Boom(Callback):
        order = FeatureKDCallback.order + 1
        def after_loss(self):
            if self.learn.iter == 2: raise exc
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[FeatureKDCallback(tm, 'block2'), Boom()])
    with pytest.raises(type(exc)): fit(learn, 1, 1e-2)
    n = sum(len(m._forward_hooks) for mod in (learn.model, tm) for m in mod.modules())
    assert n == 0


def test_bad_layer_name(mdls):
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=FeatureKDCallback(cnn1d(64), 'blck2'))
    with pytest.raises(ValueError, match=r"no layer 'blck2'; closest: \['block2'"): fit(learn, 1)


def test_bad_shapes_and_hyperparameters(dls):
    learn = student(dls, KDCallback(nn.Sequential(nn.Flatten(), nn.Linear(40, 3))))
    with pytest.raises(ValueError, match=r'student output has shape \(64, 4\) but teacher output has shape \(64, 3\)'): fit(learn, 1)
    for kw in (dict(alpha=-0.1), dict(alpha=1.01), dict(T=0.), dict(T=-1)):
        with pytest.raises(ValueError): KDCallback(nn.Linear(1, 1), **kw)
    kd = KDCallback(nn.Linear(1, 1))
    with pytest.raises(ValueError, match='alpha'): kd.alpha = 2
    with pytest.raises(ValueError, match='T must be > 0'): kd.T = 0


def test_unlabelled_transfer_data(dls, teacher):
    nolab = mask_labels(dls, keep_pct=0.)
    assert all((b[1] == -100).all() for b in nolab.train)
    learn = student(nolab, KDCallback(teacher, alpha=0.5, T=2.))
    acc0 = learn.validate()[1]
    fit(learn, 4, 1e-2)
    losses = np.array([v[:2] for v in learn.recorder.values], dtype=float)
    assert np.isfinite(losses).all()
    assert learn.validate()[1] > max(acc0 + 0.3, 0.75)
    # some labels: the task loss is the mean over the labelled samples only
    part = mask_labels(dls, keep_pct=0.5, seed=1)
    class Grab(Callback):
        order = KDCallback.order + 1
        def after_loss(self):
            if self.training and not hasattr(self, 'got'): self.got = (self.learn.pred.detach(), self.learn.yb[0], self.kd._avg('task_loss'), self.kd._log[-1][1][0])
    g = Grab()
    learn = student(part, [KDCallback(teacher, alpha=0.), g])
    fit(learn, 1, 1e-2)
    p, y, task, n = g.got
    keep = y != -100
    assert 0 < keep.sum() < len(y) and n == int(keep.sum())  # the task loss counted the labelled samples only
    torch.testing.assert_close(task, F.cross_entropy(p[keep], y[keep]), rtol=1e-4, atol=1e-5)
    ma = MaskedAccuracy(); ma.reset()
    class L_: pred, yb = p, (y,)
    ma.accumulate(L_)
    assert ma.count == int(keep.sum())


def test_mixup_and_noise_consistent(mdls):
    tm = cnn1d(64)
    class Same(Callback):
        order = KDCallback.order + 1
        def after_pred(self):
            if self.training: self.ok = getattr(self, 'ok', True) and self.learn.xb[0] is self.kd.teacher._xb[0]
    for extra in (MixUp(0.4), InputNoise(0.3, 4)):
        s = Same()
        learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(tm), extra, s])
        fit(learn, 1, 1e-2)
        assert s.ok and np.isfinite(learn.recorder.values[-1][0])
    cache = SoftTargetCache.build(tm, mdls.train)
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(cache=cache), MixUp()])
    with pytest.raises(ValueError, match='changes the inputs'): fit(learn, 1)


def test_cache_matches_online_teacher_under_shuffle(mdls, tmp_path):
    tm = cnn1d(64).eval()
    cache = SoftTargetCache.build(tm, mdls.train, path=tmp_path/'c')
    assert isinstance(cache.values, np.memmap) and cache.values.dtype == np.float16
    class Check(Callback):
        order = KDCallback.order + 1
        def before_fit(self): self.err = []
        def after_pred(self):
            if self.training: self.err.append((self.kd._t - tm(self.learn.xb[0]).detach()).abs().max().item())
    ck = Check()
    learn = Learner(mdls, cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[KDCallback(cache=SoftTargetCache.load(tmp_path/'c')), ck])
    fit(learn, 2, 1e-2)
    assert len(ck.err) == 2*len(mdls.train) and max(ck.err) < 0.05
    assert mdls.train.shuffle
    # same losses as the online teacher, same shuffling
    def losses(cb):
        class Rec(Callback):
            order, run_valid = KDCallback.order + 1, False
            def before_fit(self): self.l = []
            def after_loss(self): self.l.append(self.learn.loss.item())
        r = Rec()
        torch.manual_seed(3)
        learn = Learner(mnist1d_dls(bs=64, n_train=400, n_valid=100), cnn1d(16), loss_func=CrossEntropyLossFlat(), cbs=[cb, r])
        fit(learn, 2, 1e-2)
        return np.array(r.l)
    np.testing.assert_allclose(losses(KDCallback(cache=cache)), losses(KDCallback(tm)), rtol=5e-3, atol=5e-3)


def test_topk_and_stale_cache(mdls, dls, teacher):
    full = SoftTargetCache.build(teacher, dls.train)
    c = SoftTargetCache.build(teacher, dls.train, topk=2)
    assert c.values.shape == (len(dls.train_ds), 2) and c.indices.dtype == np.int16
    pf, pk = F.softmax(full.get(range(20)), 1), F.softmax(c.get(range(20)), 1)
    top = pf.topk(2, 1).indices
    torch.testing.assert_close(pk.gather(1, top), pf.gather(1, top), atol=2e-3, rtol=0)
    torch.testing.assert_close(pk.sum(1), torch.ones(20))
    learn = student(dls, KDCallback(cache=c))
    fit(learn, 1, 1e-2)
    assert np.isfinite(learn.recorder.values[-1][0])
    with pytest.raises(ValueError, match='stale cache'): full.check(mdls.train)
    with pytest.raises(ValueError, match='stale cache'): full.check(blobs(seed=9).train)
    other = copy.deepcopy(teacher.model)
    with torch.no_grad(): next(other.parameters())[0, 0] += 1
    with pytest.raises(ValueError, match='different weights'): fit(student(dls, KDCallback(other, cache=full)), 1)
    with pytest.raises(ValueError, match='topk'): SoftTargetCache.build(teacher, dls.train, topk=5)


def test_ensemble_of_learners(dls, teacher):
    t2 = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in t2.model.parameters(): p.mul_(0.5)
    ens = as_teacher([teacher, t2])
    x = dls.one_batch()[0]
    torch.testing.assert_close(ens(x), (teacher.model.eval()(x) + t2.model.eval()(x)).detach()/2)
    learn = student(dls, KDCallback(ens))
    fit(learn, 1, 1e-2)
    assert all(p.requires_grad for p in teacher.model.parameters())  # flags given back after fit


def test_transfer_weights_report_and_exactness():
    torch.manual_seed(0)
    big, small = cnn1d(64), cnn1d(16)
    rep = transfer_weights(big, small)
    assert list(rep.columns) == ['layer', 'action', 'student_shape', 'teacher_shape', 'note']
    r = rep.set_index('layer')
    assert r.loc['block1.0.weight', 'action'] == 'sliced' and r.loc['block1.0.weight', 'student_shape'] == (16, 1, 5)
    assert r.loc['head.bias', 'action'] == 'copied'
    # the kept channels are the largest-L1 ones
    w = big.block1[0].weight
    keep = w.abs().flatten(1).sum(1).topk(16).indices.sort().values
    torch.testing.assert_close(small.block1[0].weight, w[keep])
    torch.testing.assert_close(small.block1[1].running_var, big.block1[1].running_var[keep])
    w2 = big.block2[0].weight
    keep2 = w2.abs().flatten(1).sum(1).topk(16).indices.sort().values
    torch.testing.assert_close(small.block2[0].weight, w2[keep2][:, keep])
    L = 5  # positions after flatten: channel c -> features c*L .. c*L+L-1
    keep3 = big.block3[0].weight.abs().flatten(1).sum(1).topk(16).indices.sort().values
    torch.testing.assert_close(small.head.weight, big.head.weight[:, (keep3[:, None]*L + torch.arange(L)).flatten()])
    same = transfer_weights(cnn1d(16), cnn1d(16))
    assert set(same.action) == {'copied'}


class NoReadBack:
    "Make every read of a tensor's value on the host (`bool`, `item`, `float`, `int`, `tolist`) raise, while active"
    names = ('__bool__', 'item', '__float__', '__int__', '__index__', 'tolist')
    def __init__(self): self.saved = {}
    def __enter__(self):
        def refuse(*a, **k): raise AssertionError("a host read-back (device sync) inside a per-batch event")
        for n in self.names: self.saved[n] = getattr(torch.Tensor, n); setattr(torch.Tensor, n, refuse)
    def __exit__(self, *a):
        for n, f in self.saved.items(): setattr(torch.Tensor, n, f)

def guard_events(cb, events=('before_batch', 'after_pred', 'after_loss', 'before_step', 'after_step')):
    "Run `cb`'s per-batch events under `NoReadBack`"
    for ev in events:
        f = getattr(cb, ev, None)
        if f is None: continue
        def g(f=f):
            with NoReadBack(): return f()
        setattr(cb, ev, g)
    return cb

def test_no_host_sync_per_batch(mdls):
    "KD, feature KD, pruning (between mask updates) and L1 read nothing back from the device per batch"
    from kdbook.prune import PruneCallback
    from kdbook.optim import L1Callback
    with NoReadBack(), pytest.raises(AssertionError, match='read-back'): bool(torch.ones(1))  # the guard works
    torch.manual_seed(0)
    t = Teacher(cnn1d(8))
    cbs = [guard_events(KDCallback(t)), guard_events(FeatureKDCallback(t, 'block2')),
           guard_events(PruneCallback(0.5, schedule='one_shot'), events=('before_step', 'after_step')),
           guard_events(L1Callback(1e-5))]
    learn = student(mdls, cbs=cbs, model=cnn1d(4))
    fit(learn, 2, 1e-3)
    assert len(learn.l1.penalties) == 2*len(mdls.train) and learn.prune.sparsity == 0.5

class Spoil(Callback):
    "From training batch `at` of epoch `epoch` on, feed NaN inputs"
    order = -5
    def __init__(self, epoch, at): self.epoch_at, self.at = epoch, at
    def before_batch(self):
        if self.training and (self.epoch, self.iter) >= (self.epoch_at, self.at):
            self.learn.xb = (torch.full_like(self.xb[0], float('nan')),)

@pytest.mark.parametrize('features', [False, True])
def test_nan_named_at_its_first_batch(mdls, features):
    "A NaN from batch 3 of epoch 1: the fit stops at the end of that epoch, naming the batch; pruned weights stay 0"
    from kdbook.prune import PruneCallback
    torch.manual_seed(0)
    t = Teacher(cnn1d(8)); snap = snapshot(t.models[0])
    cbs = [FeatureKDCallback(t, 'block2') if features else KDCallback(t), PruneCallback(0.5, schedule='one_shot'),
           Spoil(1, 3)]
    learn = student(mdls, cbs=cbs, model=cnn1d(4))
    name = 'fitnet_loss' if features else 'kd_loss'
    what = 'hint' if features else 'output'
    with pytest.raises(ValueError, match=rf"{name}: student {what} contains NaN or inf \(first at training batch 3 "
                                         rf"of epoch 1\)"):
        fit(learn, 3, 1e-3)
    assert len(learn.recorder.values) == 1  # epoch 0 finished; epoch 1 raised at its end, before validation
    assert same_weights(t.models[0], snap)
    pc = learn.prune
    assert all(bool((m.weight[~pc.masks[n]] == 0).all()) for n, m in pc.pruned_layers.items())
