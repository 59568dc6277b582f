"The data sets as a user gets them: documented shapes, offline, same seed => same batches, clear errors."
import numpy as np, pytest, torch
from kdbook.data import mnist1d_dls, digits_dls, diabetes_dls, mnist1d_arrays

LOADERS = {'mnist1d': (mnist1d_dls, (1, 40)), 'digits': (digits_dls, (1, 8, 8)), 'diabetes': (diabetes_dls, (10,))}

@pytest.mark.parametrize('name', LOADERS)
def test_shapes_and_determinism(name):
    f, shape = LOADERS[name]
    a, b, c, d = (f(bs=32, seed=s, device='cpu') for s in (7, 7, 8, 7))
    xa, ya = d.one_batch() # each pass over a loader (one_batch too) draws the next epoch's order
    assert tuple(xa.shape) == (32, *shape) and xa.dtype == torch.float32 and len(ya) == 32
    for (x1, y1), (x2, y2) in zip(a.train, b.train): assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(next(iter(a.train))[1], next(iter(c.train))[1])

@pytest.mark.parametrize('name', LOADERS)
@pytest.mark.parametrize('bs', [0, -1, 2.5])
def test_bad_bs(name, bs):
    with pytest.raises(ValueError, match='bs must be a positive integer'): LOADERS[name][0](bs=bs)

@pytest.mark.parametrize('name', LOADERS)
def test_bad_device(name):
    with pytest.raises(ValueError, match="Unknown device 'gpu0'"): LOADERS[name][0](device='gpu0')

def test_mnist1d_is_the_standard_split(tmp_path):
    d = mnist1d_arrays(path=tmp_path/'m.npz')
    assert d['x'].shape == (4000, 40) and d['x_valid'].shape == (1000, 40)
    assert np.bincount(d['y'], minlength=10).min() > 300
    again = mnist1d_arrays(path=tmp_path/'m.npz')
    assert all(np.array_equal(d[k], again[k]) for k in d)

def test_predict_on_a_raw_signal():
    "The normalisation travels with the DataLoaders, so `predict` takes a raw signal"
    from fastai.basics import Learner, CrossEntropyLossFlat
    from kdbook.models import cnn1d
    dls = mnist1d_dls(device='cpu')
    learn = Learner(dls, cnn1d(8), loss_func=CrossEntropyLossFlat())
    raw = mnist1d_arrays()['x_valid'][0]
    label, idx, probs = learn.predict(raw)
    assert probs.shape == (10,) and 0 <= int(idx) < 10 and abs(float(probs.sum()) - 1) < 1e-5

def test_test_split_in_a_learner(tmp_path):
    "The test loader of a three-split `DataLoaders` scores like `valid`, survives `mask_labels`, and stays out of exports"
    from fastai.learner import Learner, load_learner
    from fastai.callback.progress import ProgressCallback # patches Learner.no_bar
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from kdbook.data import SplitDataLoaders, mask_labels
    from kdbook.models import cnn1d
    dls = mnist1d_dls(device='cpu', valid_pct=0.125)
    learn = Learner(dls, cnn1d(8), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    preds, targs = learn.get_preds(dl=dls.test)
    acc = (preds.argmax(1) == targs).float().mean().item()
    assert learn.validate(dl=dls.test)[1] == pytest.approx(acc) and 0.2 < acc < 1 # it learnt, and scores on test
    assert len(targs) == 1000 and learn.validate()[1] != learn.validate(dl=dls.test)[1]
    masked = mask_labels(dls, keep_pct=0.1)
    assert isinstance(masked, SplitDataLoaders) and masked.test is dls.test
    learn.export(tmp_path/'m.pkl')
    assert isinstance(learn.dls, SplitDataLoaders) and len(learn.dls.test.dataset) == 1000 # export restores the data
    assert load_learner(tmp_path/'m.pkl').dls.test.dataset.items == [] # the file has no data in it
    with pytest.raises(ValueError, match='train, a valid and a test loader'): SplitDataLoaders(dls.train, dls.valid)
