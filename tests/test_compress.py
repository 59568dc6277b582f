"""Property tests of kdbook's stored format (`kdbook.compress`): random sparse and shared layers come back bit for bit,
with every coder; a truncated, altered or foreign file raises StoredModelError (a ValueError) and never another error;
a file never runs code, neither a pickle nor a description naming a function. Deterministic: derandomized."""
import hashlib, pickle, struct, zlib, json
import numpy as np, pytest, torch
from torch import nn
from hypothesis import given, settings, strategies as st
from kdbook.coding import CODERS, ByteReader, ByteWriter, StoredModelError, describe_model
from kdbook.compress import MAGIC, to_compressed, from_compressed, save_compressed, load_compressed, share_weights
from kdbook.models import cnn1d, mlp

torch.set_num_threads(1)
fast = settings(deadline=None, max_examples=40, derandomize=True, database=None)

def _same(a, b):
    "Bit for bit, dtype and shape included"
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert sa[k].reshape(-1).view(torch.uint8).equal(sb[k].reshape(-1).view(torch.uint8)), k

@st.composite
def sparse_shared_models(draw):
    "An MLP or 1-D CNN whose layers are pruned to a random sparsity and shared to random bits, some in float16 values"
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    if draw(st.booleans()): m = mlp(draw(st.integers(1, 50)), tuple(draw(st.lists(st.integers(1, 40), max_size=2))), 3)
    else: m = cnn1d(draw(st.integers(1, 12)), seq_len=draw(st.integers(4, 40)))
    with torch.no_grad():
        for p in m.parameters():
            keep = torch.rand(p.shape) >= draw(st.sampled_from([0., 0.3, 0.9, 0.99, 1.]))
            p.mul_(keep)
            if draw(st.booleans()): p.copy_(p.half().float())
        for b in m.buffers():
            if b.is_floating_point(): b.copy_(torch.rand(b.shape) + 0.5)
            else: b.fill_(draw(st.integers(0, 10**6)))
    if draw(st.booleans()): share_weights(m, draw(st.integers(1, 8)))
    return m

@fast
@given(sparse_shared_models(), st.sampled_from(CODERS))
def test_round_trip_is_bit_exact(m, coder):
    _same(from_compressed(to_compressed(m, coder)), m)

@fast
@given(sparse_shared_models(), st.data())
def test_truncated_or_altered_files_raise_value_error(m, data):
    b = to_compressed(m)
    cut = data.draw(st.integers(0, len(b) - 1))
    with pytest.raises(ValueError): from_compressed(b[:cut])
    i, bit = data.draw(st.integers(0, len(b) - 1)), data.draw(st.integers(0, 7))
    bad = bytearray(b); bad[i] ^= 1 << bit
    with pytest.raises(ValueError): from_compressed(bytes(bad))

def _with_crc(body): return MAGIC + body + struct.pack('<I', zlib.crc32(body))

@fast
@given(sparse_shared_models(), st.data())
def test_garbage_with_a_valid_checksum_raises_value_error_only(m, data):
    "A crafted file passes the checksum: the reader's own checks must still give a ValueError, never another error"
    body = bytearray(to_compressed(m)[len(MAGIC):-4])
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try: back = from_compressed(_with_crc(bytes(body)))
    except StoredModelError as e:
        assert e.__cause__ is None, f"an error that kdbook's own checks missed: {e.__cause__!r}"
        return
    _same(from_compressed(to_compressed(back)), back) # a change that still decodes (a weight's value) gives a whole model

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3), max_leaves=6)

@fast
@given(sparse_shared_models(), st.data())
def test_a_description_with_any_value_replaced_raises_stored_model_error_or_loads_whole(m, data):
    "One place of the description's JSON gets any JSON value; the file is deflated and checksummed again"
    from safe_load_worker import json_slots
    r = ByteReader(to_compressed(m)[len(MAGIC):-4])
    desc, tensors = json.loads(zlib.decompress(r.raw())), bytes(r.buf[r.p:])
    leaves, lists = json_slots(desc)
    c, i = data.draw(st.sampled_from(leaves + lists))
    c[i] = data.draw(json_values)
    w = ByteWriter(); w.raw(zlib.compress(json.dumps(desc).encode())); w.buf += tensors
    try: back = from_compressed(_with_crc(bytes(w.buf)))
    except StoredModelError as e:
        assert e.__cause__ is None, f"an error that kdbook's own checks missed: {e.__cause__!r}"
        return
    _same(from_compressed(to_compressed(back)), back)

def test_a_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path/'ran'
    class Payload:
        def __reduce__(self): return (open, (str(marker), 'w'))
    f = tmp_path/'model.kdbc'
    f.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match='never opened'): load_compressed(f)
    torch.save({'x': Payload()}, f)
    with pytest.raises(ValueError, match='never opened'): load_compressed(f)
    assert not marker.exists()

def test_a_description_naming_code_is_refused(tmp_path):
    marker = tmp_path/'ran'
    for kind in ('os.system', 'eval', 'exec', '__import__', 'Module', 'LSTM'):
        w = ByteWriter(); w.raw(zlib.compress(json.dumps([kind, [f"open('{marker}', 'w')"]]).encode()))
        body = bytes(w.buf)
        with pytest.raises(ValueError, match='not a layer type|Not a model description'): from_compressed(_with_crc(body))
    assert not marker.exists()

def test_save_and_load_a_learner_and_a_file(tmp_path):
    from fastai.learner import Learner
    from kdbook.data import digits_dls
    learn = Learner(digits_dls(bs=32), mlp(64, (16,), 10))
    f = save_compressed(learn, tmp_path/'m.kdbc')
    assert f.path == tmp_path/'m.kdbc' and f.nbytes == f.path.stat().st_size
    assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
    back = load_compressed(f.path, sha256=f.sha256)
    assert not back.training
    _same(back, learn.model)

def test_a_model_it_cannot_describe_is_stored_as_weights_and_needs_its_architecture():
    class Custom(nn.Module):
        def __init__(self): super().__init__(); self.l = nn.Linear(2, 2)
        def forward(self, x): return self.l(x)
    with pytest.raises(ValueError, match='Custom is not one of them'): to_compressed(Custom(), weights_only=False)
    with pytest.raises(ValueError, match='Custom is not one of them'): describe_model(nn.Sequential(Custom()))
    src = Custom()
    data = to_compressed(src)                                        # weights only: the architecture is code
    with pytest.raises(StoredModelError, match='model=your_model'): from_compressed(data)
    _same(from_compressed(data, model=Custom()), src)
    with pytest.raises(StoredModelError, match='missing from the file'): from_compressed(data, model=nn.Linear(2, 2))

def test_quantized_weights_are_refused():
    from kdbook.quantize import quantize_model
    with pytest.raises(ValueError, match='not plain tensors'): to_compressed(quantize_model(mlp(4, (8,), 2)))
