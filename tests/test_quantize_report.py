"Integration tests of `kdbook.quantize` and `kdbook.report`: quantized models round-trip through a file, report rows are consistent."
import io, math, subprocess, sys
import pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from kdbook.models import mlp, cnn1d, count_params
from kdbook.quantize import quantize_model, quant_schemes
from kdbook.report import model_report, compare_models, plot_accuracy_vs_size, state_dict_bytes, count_nonzero_params

@pytest.fixture
def dls():
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(96, 1, 40, generator=g), torch.randint(0, 10, (96,), generator=g)
    return DataLoaders(DataLoader(list(zip(xs, ys)), bs=16), DataLoader(list(zip(xs, ys)), bs=32))

@pytest.mark.parametrize('scheme', quant_schemes())
def test_quantized_file_roundtrip(tmp_path, dls, scheme):
    torch.manual_seed(0)
    fp = mlp().eval()
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    q = quantize_model(fp, scheme, dls=dls)
    for k, v in fp.state_dict().items(): assert torch.equal(v, before[k]), f"original {k} changed"
    f = tmp_path/'q.pth'
    torch.save(q.state_dict(), f)
    assert f.stat().st_size <= 0.3 * state_dict_bytes(fp)
    fresh = quantize_model(mlp(), scheme, dls=dls)
    fresh.load_state_dict(torch.load(f, weights_only=False), assign=True)
    x = torch.randn(8, 1, 40)
    torch.testing.assert_close(fresh(x), q(x))
    assert (q(x).argmax(1) == fp(x).argmax(1)).float().mean() >= 0.75

def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(ValueError, match="int8_weight.*int8_dynamic.*int8_static"): quantize_model(mlp(), 'fp8')

def test_static_needs_data():
    with pytest.raises(ValueError, match='calibration'): quantize_model(mlp(), 'int8_static')

def test_report_quantized_and_pruned(dls):
    torch.manual_seed(0)
    fp = mlp().eval()
    pr = mlp().eval(); pr.load_state_dict(fp.state_dict())
    with torch.no_grad(): pr.fc2.weight[:128] = 0.
    df = compare_models({'fp32': fp, 'pruned': pr, 'int8': quantize_model(fp, 'int8_dynamic')}, dls, bs=64, n_runs=3)
    assert (df.params == count_params(fp)).all()
    assert df.loc['fp32', 'nonzero_params'] - df.loc['pruned', 'nonzero_params'] == 128*256
    assert df.loc['int8', 'macs'] == df.loc['fp32', 'macs'] == 40*256 + 2*256*256 + 256*10
    assert df.loc['int8', 'size_bytes'] <= 0.3 * df.loc['fp32', 'size_bytes']
    assert (df.bs == 64).all() and (df.latency_ms > 0).all() and df.accuracy.between(0, 1).all()
    fig = plot_accuracy_vs_size(df)
    assert [t.get_text() for t in fig.axes[0].texts] == ['fp32', 'pruned', 'int8']

@pytest.mark.parametrize('scheme', quant_schemes())
def test_sparsity_report_of_int8_model(dls, scheme):
    "The pruned zeros of a quantized model are counted (int8 weights dequantized), as in the float model"
    from kdbook.prune import sparsity_report
    torch.manual_seed(0)
    pr = mlp().eval()
    with torch.no_grad(): pr.fc2.weight[:128] = 0.
    fp = sparsity_report(pr)
    q = sparsity_report(quantize_model(pr, scheme, dls=dls))
    assert q.layer.tolist() == fp.layer.tolist() and (q.params == fp.params).all()
    assert (q.zeros >= fp.zeros).all()   # every pruned weight is still zero (rounding may add a few)
    assert q.sparsity.iloc[-1] >= 128*256 / fp.params.iloc[-1]

def test_report_learner_cnn(dls):
    from fastai.learner import Learner
    learn = Learner(dls, cnn1d(16), loss_func=nn.CrossEntropyLoss())
    r = model_report(learn, bs=40, n_runs=2)
    assert r['params'] == count_params(learn.model) and r['bs'] == 40
    assert 0 <= r['accuracy'] <= 1 and not math.isnan(r['accuracy'])
    q = quantize_model(learn, 'int8_static')
    assert type(q.head.weight).__name__ == 'Int8Tensor'
    assert type(q.block1[0].weight) is nn.Parameter   # convolutions stay float in torchao 0.18

def test_import_is_quiet():
    "Importing kdbook.quantize hides torchao's CUDA-kernel and pytree-Enum notices, nothing else"
    r = subprocess.run([sys.executable, '-c', 'import kdbook.quantize'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'Failed to load' not in r.stderr and 'Enum subclass' not in r.stderr, r.stderr
