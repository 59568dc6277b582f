"Integration tests for `kdbook.optim` (parity with torch.optim) and `kdbook.schedules` (resume mid-training)."
from functools import partial

import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import SaveModelCallback
from fastai.optimizer import SGD, RMSProp, Adam
from fastai.test_utils import synth_learner

from kdbook.optim import Adagrad, torch_parity, L1Callback
from fastai.callback.schedule import SchedLin, combine_scheds
from kdbook.schedules import AttrScheduler, SchedAgp, SchedWarmup, SchedStep


# ---------------------------------------------------------------- optimizers: parity with torch.optim
@pytest.mark.parametrize('kw,tkw', [
    (dict(lr=0.05), dict(lr=0.05)),
    (dict(lr=0.05, lr_decay=0.01, eps=1e-6, init_acc=0.1, wd=0.05, decouple_wd=False),
     dict(lr=0.05, lr_decay=0.01, eps=1e-6, initial_accumulator_value=0.1, weight_decay=0.05)),
])
def test_adagrad_matches_torch(kw, tkw):
    assert torch_parity(partial(Adagrad, **kw), partial(torch.optim.Adagrad, **tkw), n_steps=100) < 1e-6


@pytest.mark.parametrize('name,ours,theirs', [
    ('sgd-mom', partial(SGD, lr=0.05, mom=0.9), partial(torch.optim.SGD, lr=0.05, momentum=0.9)),
    ('sgd-mom-l2', partial(SGD, lr=0.05, mom=0.9, wd=0.1, decouple_wd=False),
     partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=0.1)),
    ('rmsprop', partial(RMSProp, lr=0.01), partial(torch.optim.RMSprop, lr=0.01)),
    ('adam', partial(Adam, lr=1e-3, sqr_mom=0.999, eps=1e-8, wd=0.), partial(torch.optim.Adam, lr=1e-3)),
    ('adam-l2', partial(Adam, lr=1e-3, sqr_mom=0.999, eps=1e-8, wd=0.01, decouple_wd=False),
     partial(torch.optim.Adam, lr=1e-3, weight_decay=0.01)),
    ('adamw', partial(Adam, lr=1e-3, sqr_mom=0.999, eps=1e-8, wd=0.01), partial(torch.optim.AdamW, lr=1e-3)),
])
def test_fastai_optimizers_match_torch(name, ours, theirs):
    assert torch_parity(ours, theirs, n_steps=100) < 1e-6, name


@pytest.mark.parametrize('ours,theirs', [
    (partial(Adam, lr=1e-3), partial(torch.optim.Adam, lr=1e-3)),  # fastai defaults: sqr_mom .99, eps 1e-5, wd .01
    (partial(SGD, lr=0.05, mom=0.9, wd=0.1), partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=0.1)),
    (partial(RMSProp, lr=0.01, mom=0.9), partial(torch.optim.RMSprop, lr=0.01, momentum=0.9)),
])
def test_documented_differences_are_real(ours, theirs):
    assert torch_parity(ours, theirs, n_steps=100) > 1e-3


def test_negative_lr_and_lambda():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match='learning rate'): Adagrad(p, lr=-1e-2)
    with pytest.raises(ValueError, match='lam'): L1Callback(-1.)


# ---------------------------------------------------------------- schedules: value at every batch, across a resume
class AlphaSpy(Callback):
    "Record the `alpha` in force when the loss is computed"
    run_valid = False
    def __init__(self, alpha=0.): self.alpha, self.seen = alpha, []
    def after_loss(self): self.seen.append(self.alpha)


class CrashAfter(Callback):
    "Stop the fit after epoch `stop_epoch`, like a killed job"
    order = 70
    def __init__(self, epoch): self.stop_epoch = epoch
    def after_epoch(self):
        if self.epoch == self.stop_epoch: raise CancelFitException()


def _sched(): return combine_scheds([0.3, 0.7], [SchedWarmup(0., 0.5, 0.5), SchedAgp(0.5, 0.9)])


def _run(path, n_epoch=4, cbs=(), load=None, start_epoch=0):
    learn = synth_learner(n_trn=6, cbs=AlphaSpy(), path=path)
    sched = AttrScheduler({'alpha_spy.alpha': _sched()})
    if load:
        learn.load(load)
        sched.load_state(learn, load)
    with learn.no_logging(): learn.fit(n_epoch, cbs=[sched, *cbs], start_epoch=start_epoch)
    return learn, sched


def test_schedule_value_at_every_batch_across_resume(tmp_path):
    full, s_full = _run(tmp_path)
    half, s_half = _run(tmp_path, cbs=[SaveModelCallback(every_epoch=True), CrashAfter(1)])
    assert (tmp_path/'models'/'model_1.pth').exists() and (tmp_path/'models'/'model_1.scheds.pth').exists()
    resumed, s_res = _run(tmp_path, load='model_1', start_epoch=2)

    n = 6  # batches per epoch
    f = _sched()
    # every recorded value is the schedule at that batch's progress, and is what the callback used
    for learn, s in ((full, s_full), (half, s_half), (resumed, s_res)):
        assert s.hps['alpha_spy.alpha'] == [float(f(p)) for p in s.pcts]
    assert full.alpha_spy.seen == s_full.hps['alpha_spy.alpha']
    assert len(s_half.pcts) == 2 * n
    # the resumed run continues exactly where the interrupted one stopped
    assert s_res.pcts[:2 * n] == s_half.pcts and s_res.pcts == s_full.pcts
    assert s_res.hps == s_full.hps
    assert resumed.alpha_spy.seen == full.alpha_spy.seen[2 * n:]
    assert s_res.pcts[2 * n] == pytest.approx(0.5)


def test_resume_without_start_epoch_would_restart(tmp_path):
    "Control: without `start_epoch` the schedule restarts at 0, so the resume test above can fail"
    _run(tmp_path, cbs=[SaveModelCallback(every_epoch=True), CrashAfter(1)])
    learn = synth_learner(n_trn=6, cbs=AlphaSpy(), path=tmp_path)
    learn.load('model_1')
    sched = AttrScheduler({'alpha_spy.alpha': _sched()})
    with learn.no_logging(): learn.fit(2, cbs=sched)
    assert learn.alpha_spy.seen[0] == 0.


def test_unknown_names_list_what_exists():
    learn = synth_learner(cbs=AlphaSpy())
    with pytest.raises(ValueError, match=r'alpha_spy \(AlphaSpy\)'):
        learn.fit(1, cbs=AttrScheduler({'kd.alpha': SchedLin(0, 1)}))
    with pytest.raises(ValueError, match='alpha, seen'):
        learn.fit(1, cbs=AttrScheduler({'AlphaSpy.T': SchedStep(0, 1, 2)}))
