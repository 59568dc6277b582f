"""The compressed model outside kdbook (`kdbook.deploy`, `kdbook.compress` on any model): any module's weights stored and
loaded into an architecture built in code, bit for bit, with wrong architectures refused before anything is copied;
safetensors the same way; every stage of the pipeline (dense, pruned, channel-pruned, shared, int8) exported to ONNX
and run by onnxruntime with PyTorch's outputs; int8 weights stored and loaded back to the same outputs."""
import copy
from pathlib import Path
import pytest, torch
from torch import nn
from fastai.basics import Learner, CrossEntropyLossFlat, accuracy, set_seed
import fastai.callback.schedule  # noqa: F401 (patches Learner.fit_one_cycle)
import fastai.callback.progress  # noqa: F401 (patches Learner.no_bar)
from kdbook.coding import StoredModelError
from kdbook.compress import save_compressed, load_compressed, share_weights, fold_batchnorm, round_to_half
from kdbook.deploy import (save_safetensors, load_safetensors, export_onnx, quantize_onnx, OnnxModule, save_int8,
                           load_int8)
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d
from kdbook.prune import PruneCallback, bake_masks, prune_channels
from kdbook.quantize import quantize_model
from kdbook.report import top1_preds

torch.set_num_threads(1)

class Residual(nn.Module):
    "A custom module (no nn.Sequential describes it) with the activations and norms users add"
    def __init__(self, n=12):
        super().__init__()
        self.inp, self.norm, self.gn = nn.Linear(6, n), nn.LayerNorm(n), nn.GroupNorm(3, n)
        self.act, self.out = nn.LeakyReLU(0.05), nn.Linear(n, 4)
    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.act(self.gn(self.norm(h))))

def _equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)

@pytest.mark.parametrize('save,load', [(save_compressed, lambda p, m: load_compressed(p, model=m)),
                                       (save_safetensors, load_safetensors)])
def test_any_module_round_trips_into_its_architecture(tmp_path, save, load):
    torch.manual_seed(0)
    src, x = Residual().eval(), torch.randn(5, 6)
    with torch.no_grad(): src.inp.weight[src.inp.weight.abs() < 0.2] = 0 # some zeros, as after pruning
    f = save(src, tmp_path/'m.bin')
    back = load(f.path, Residual())
    assert _equal(back, src) and torch.equal(back(x), src(x)) and not back.training
    wrong = Residual(15)
    before = copy.deepcopy(wrong.state_dict())
    with pytest.raises(StoredModelError, match='shape or dtype differs'): load(f.path, wrong)
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items()) # nothing was copied

def test_a_fastai_vision_model_round_trips_weights_only(tmp_path):
    from fastai.vision.all import create_vision_model, resnet18
    set_seed(0)
    m = create_vision_model(resnet18, 3, pretrained=False, n_in=1).eval()
    f = save_compressed(m, tmp_path/'r18.kdbc')
    with pytest.raises(StoredModelError, match='weights only'): load_compressed(f.path)
    back = load_compressed(f.path, model=create_vision_model(resnet18, 3, pretrained=False, n_in=1))
    assert _equal(back, m)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(back(x), m(x))

def test_safetensors_refuses_a_file_larger_than_the_model_or_not_safetensors(tmp_path):
    (tmp_path/'big').write_bytes(bytes(3 * 2**20))
    with pytest.raises(StoredModelError, match='cannot be its weights'): load_safetensors(tmp_path/'big', Residual())
    (tmp_path/'junk').write_bytes(b'\xff' * 100)
    with pytest.raises(StoredModelError, match='not a safetensors file'): load_safetensors(tmp_path/'junk', Residual())

@pytest.fixture(scope='module')
def stages():
    "A cnn1d(16) trained 20 epochs on MNIST-1D and the pipeline's stages of it"
    set_seed(0)
    dls = mnist1d_dls(bs=128, seed=0, num_workers=0)
    def fit(model, cbs=(), epochs=20):
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, cbs=list(cbs))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2)
        return learn
    dense = fit(cnn1d(16)).model
    pl = fit(copy.deepcopy(dense), [PruneCallback(0.8)], epochs=10)
    bake_masks(pl)
    shared = fold_batchnorm(pl.model)
    share_weights(shared, 4)
    return dls, {'dense': dense, 'pruned': pl.model, 'shared': round_to_half(shared),
                 'channels': prune_channels(dense, dls.valid.one_batch()[0][:2], 0.5)}

def test_every_stage_exports_to_onnx_with_pytorchs_outputs(stages, tmp_path):
    dls, models = stages
    for name, m in models.items():
        f = export_onnx(m, tmp_path/f'{name}.onnx', dls)
        assert f.max_abs_diff <= 1e-4 and f.agreement == 1.
        onnx_preds, torch_preds = top1_preds(OnnxModule(f.path), dls.test)[0], top1_preds(m, dls.test)[0]
        assert (onnx_preds == torch_preds).float().mean() >= 0.999, name # other batch sizes than the export's too

def test_int8_onnx_runs_integer_kernels_and_agrees_with_float(stages, tmp_path):
    import onnx
    dls, models = stages
    f = export_onnx(models['dense'], tmp_path/'dense.onnx', dls)
    q = quantize_onnx(f.path, tmp_path/'dense.int8.onnx', dls, check=dls.valid)
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    agree = (top1_preds(OnnxModule(q.path), dls.test)[0] == top1_preds(OnnxModule(f.path), dls.test)[0]).float().mean()
    assert agree >= 0.97 and q.agreement >= 0.95  # on 1,000 test signals and on one batch; a broken scale: < 0.5

@pytest.mark.parametrize('scheme', ['int8_weight', 'int8_dynamic'])
def test_int8_weights_store_and_load_to_the_same_outputs(stages, tmp_path, scheme):
    dls, models = stages
    q = quantize_model(models['pruned'], scheme)
    f = save_int8(q, tmp_path/'q.kdbc')
    back = load_int8(f.path, cnn1d(16), scheme, sha256=f.sha256)
    xb = dls.test.one_batch()[0].cpu()
    assert torch.equal(back(xb), q(xb))
    assert f.nbytes < save_compressed(models['pruned'], tmp_path/'f.kdbc').nbytes * 1.1

def test_stored_int8_must_hold_int8_values(tmp_path):
    m = nn.Sequential(nn.Linear(4, 3))
    q = quantize_model(m, 'int8_weight')
    w = q[0].weight
    save_compressed({'0.weight.qdata': w.qdata.float() + 0.5, '0.weight.scale': w.scale, '0.bias': q[0].bias.detach()},
                    tmp_path/'bad.kdbc')
    with pytest.raises(StoredModelError, match='not all int8 values'): load_int8(tmp_path/'bad.kdbc', m)

def test_an_exported_file_runs_where_only_onnxruntime_and_numpy_are_installed(stages, tmp_path):
    "A virtual environment holding onnxruntime and numpy alone (no torch, fastai or kdbook) predicts what PyTorch does"
    import importlib.util, subprocess, sys, venv
    import numpy as np
    dls, models = stages
    f = export_onnx(models['shared'], tmp_path/'shared.onnx', dls)
    xs = torch.cat([b[0] for b in dls.test]).cpu()
    np.save(tmp_path/'x.npy', xs.numpy())
    venv.create(tmp_path/'env', with_pip=False)
    site = next((tmp_path/'env'/'lib').glob('python*/site-packages'))
    for p in Path(importlib.util.find_spec('numpy').origin).parents[1].iterdir(): # the installed packages, linked
        if p.name.split('-')[0].split('.')[0] in ('numpy', 'onnxruntime'): (site/p.name).symlink_to(p)
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              "for m in ('torch', 'fastai', 'kdbook'):\n"
              "    try: __import__(m); sys.exit(f'{m} is importable here')\n"
              "    except ImportError: pass\n"
              "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
              "np.save(sys.argv[3], s.run(None, {'input': np.load(sys.argv[2])})[0].argmax(1))\n")
    r = subprocess.run([str(tmp_path/'env'/'bin'/'python'), '-c', script, str(f.path), str(tmp_path/'x.npy'),
                        str(tmp_path/'p.npy')], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (np.load(tmp_path/'p.npy') == top1_preds(models['shared'], dls.test)[0].numpy()).mean() >= 0.999

def test_random_edits_of_a_weights_only_file_end_in_one_error_or_the_right_shapes(tmp_path):
    "A forger's edits (valid checksum) of a weights-only file, loaded into its architecture: StoredModelError or a fit"
    import json, zlib
    import numpy as np
    from kdbook.coding import ByteReader, ByteWriter
    from kdbook.compress import MAGIC, to_compressed, from_compressed
    torch.manual_seed(0)
    data = to_compressed(Residual())
    r = ByteReader(data[len(MAGIC):-4]); desc, tensors = bytearray(zlib.decompress(r.raw())), bytearray(r.buf[r.p:])
    assert json.loads(desc)[0] == 'State'
    rng, outcomes = np.random.default_rng(0), set()
    for i in range(300):
        d, t = bytearray(desc), bytearray(tensors)
        part = d if i % 2 else t
        for _ in range(rng.integers(1, 5)): part[rng.integers(len(part))] = rng.integers(256)
        w = ByteWriter(); w.raw(zlib.compress(bytes(d), 9)); w.buf += t
        try: m = from_compressed(MAGIC + bytes(w.buf) + zlib.crc32(w.buf).to_bytes(4, 'little'), model=Residual())
        except StoredModelError as e:
            assert e.__cause__ is None, e; outcomes.add('refused'); continue
        assert [v.shape for v in m.state_dict().values()] == [v.shape for v in Residual().state_dict().values()]
        outcomes.add('loaded')
    assert outcomes == {'refused', 'loaded'} # some edits only change a value: a checksum is no seal
