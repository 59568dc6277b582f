"""A stored model is safe to open from a stranger. Files that anyone can make (a valid checksum, crafted sizes,
decompression bombs in every coder, random edits of the description and of the tensors) must end in
`StoredModelError` raised by kdbook's own checks, or in a whole model; each within 256 MB above a normal load and 5 s
of CPU, limits that the loading process sets itself (tests/safe_load_worker.py). Genuine files of format version 1,
written by kdbook 5e15ef6, still load bit for bit; a pinned SHA-256 refuses any other file before it is parsed."""
import hashlib, json, lzma, os, subprocess, sys, zlib
from pathlib import Path
import pytest, torch
from kdbook.coding import ByteWriter, StoredModelError
from kdbook.compress import MAGIC, load_compressed, save_compressed, _ENC
from kdbook.models import mlp

HERE = Path(__file__).parent
DATA = HERE/'data'/'kdbc_v1'

def craft(desc, tensors=b'', raw_desc=False):
    "A stored model with this description (an object, or JSON bytes) and tensor bytes, and a valid checksum"
    w = ByteWriter(); w.raw(desc if raw_desc else zlib.compress(desc if isinstance(desc, bytes) else json.dumps(desc).encode()))
    w.buf += tensors
    return MAGIC + bytes(w.buf) + zlib.crc32(w.buf).to_bytes(4, 'little')

def bomb(c, mb=32): return b''.join(c.compress(bytes(2**20)) for _ in range(mb)) + c.flush()

def shared_weight(n_book, coder_tag, stream):
    "The bytes of a float tensor in the 'shared' encoding: a codebook of `n_book` zeros, then a symbol stream"
    t = ByteWriter(); t.buf += bytes([_ENC.index('shared'), 0, 1]); t.raw(bytes(4 * n_book))
    t.buf.append(coder_tag); t.buf += stream
    return bytes(t.buf)

def raw_stream(b): w = ByteWriter(); w.raw(b); return bytes(w.buf)

def xz_with_dict(exp_code=40):
    "An xz stream whose LZMA2 filter declares a dictionary of up to 4 GiB (its block header's CRC recomputed)"
    b = bytearray(lzma.compress(bytes(100)))
    h = 12; size = (b[h] + 1) * 4; flags = b[h + 1]; p = h + 2
    for bit in (0x40, 0x80): # compressed and uncompressed sizes, varints, when present
        if flags & bit:
            while b[p] & 0x80: p += 1
            p += 1
    assert b[p] == 0x21 and b[p + 1] == 1 # LZMA2, one byte of properties: the dictionary size
    b[p + 2] = exp_code
    b[h + size - 4:h + size] = zlib.crc32(b[h:h + size - 4]).to_bytes(4, 'little')
    return bytes(b)

def nested(k): return (b'["Sequential",[["0",' * k + b'["Identity",[]]' + b']]]' * k)

LIN = lambda i, o: ['Linear', [i, o, False]]
BIG = LIN(4096, 4096) # 16,777,216 values: MAX_PARAMS exactly, so only the data can refuse it
CRAFTED = {
    'linear-1e6x1e6':           lambda: craft(['Linear', [10**6, 10**6, True]]),
    'linear-20000x20000':       lambda: craft(['Linear', [20000, 20000, True]]),
    'linear-max-params-no-data': lambda: craft(BIG),
    'conv2d-1e5-kernel':        lambda: craft(['Conv2d', [1, 1, [10**5, 10**5], [1, 1], [0, 0], [1, 1], 1, True, 'zeros']]),
    'negative-size':            lambda: craft(['Linear', [-5, 4, True]]),
    'huge-int':                 lambda: craft(b'["Linear",[' + b'9' * 5000 + b',4,true]]'),
    'name-with-dot':            lambda: craft(['Sequential', [['a.b', ['ReLU', [False]]]]]),
    'empty-name':               lambda: craft(['Sequential', [['', ['ReLU', [False]]]]]),
    'name-forward':             lambda: craft(['Sequential', [['forward', ['ReLU', [False]]]]]),
    'nested-lists-1e5':         lambda: craft(b'[' * 10**5 + b']' * 10**5),
    'nested-sequential-400':    lambda: craft(nested(400)),
    'nested-sequential-100':    lambda: craft(nested(100)),
    'identity-200000':          lambda: craft(['Sequential', [[str(i), ['Identity', []]] for i in range(200_000)]]),
    'identity-5000':            lambda: craft(['Sequential', [[str(i), ['Identity', []]] for i in range(5000)]]),
    'zlib-bomb-description':    lambda: craft(bomb(zlib.compressobj(9)), raw_desc=True),
    # a decompression bomb in every coder, as the symbols of a 16,777,216-value weight
    'bomb-huffman':             lambda: craft(BIG, shared_weight(2, 0, bytes([2, 4, 0x11, 8, 0]))), # 8 bits, 2**24 symbols
    'bomb-fixed':               lambda: craft(BIG, shared_weight(2, 1, bytes(1000))),
    'bomb-zlib':                lambda: craft(BIG, shared_weight(2, 2, raw_stream(bomb(zlib.compressobj(9))))),
    'bomb-lzma':                lambda: craft(BIG, shared_weight(2, 3, raw_stream(bomb(lzma.LZMACompressor())))),
    'lzma-4gib-dictionary':     lambda: craft(LIN(4, 64), shared_weight(2, 3, raw_stream(xz_with_dict()))),
    'huffman-oversubscribed':   lambda: craft(LIN(4, 64), shared_weight(3, 0, bytes([3, 4, 0x11, 0x10, 255, 1]) + bytes(32))),
    'huffman-60-bit-code':      lambda: craft(LIN(4, 64), shared_weight(2, 0, bytes([2, 8, 1, 60, 255, 1]) + bytes(32))),
    'varint-overflow':          lambda: craft(LIN(4, 64), bytes([_ENC.index('sparse'), 1]) + b'\xff' * 12),
    'sparse-symbols-1e18':      lambda: craft(LIN(4, 64), bytes([_ENC.index('sparse'), 1]) + b'\xff' * 8 + b'\x01'),
    # weights-only files (the architecture comes from code): the same checks before any memory is taken
    'state-1e6x1e6':            lambda: craft(['State', [['w', [10**6, 10**6], 'float32']]]),
    'state-max-params-no-data': lambda: craft(['State', [['w', [4096, 4096], 'float32']]]),
    'state-20000-entries':      lambda: craft(['State', [[f'w{i}', [1], 'float32'] for i in range(20000)]]),
    'state-object-dtype':       lambda: craft(['State', [['w', [2], 'object']]]),
    'state-repeated-name':      lambda: craft(['State', [['w', [1], 'float32'], ['w', [1], 'float32']]]),
    'state-negative-dim':       lambda: craft(['State', [['w', [-1, 4], 'float32']]]),
    'int-out-of-range':         lambda: craft(['BatchNorm1d', [1, 1e-5, 0.1, False, True]],
                                              bytes([_ENC.index('raw')]) * 2 + bytes(8) + bytes([_ENC.index('ints')]) + b'\xff' * 9 + b'\x03'),
}

def run_worker(*args, timeout=300):
    "The worker's JSON lines; the test fails, naming the file being loaded, if the limits stopped it"
    p = subprocess.run([sys.executable, str(HERE/'safe_load_worker.py'), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, f"the worker died (exit {p.returncode}): {p.stderr[-2000:]}"
    return [json.loads(l) for l in p.stdout.splitlines()]

def test_every_crafted_file_is_refused_by_kdbooks_own_checks_within_the_limits(tmp_path):
    for name, make in CRAFTED.items(): (tmp_path/f'{name}.kdbc').write_bytes(make())
    res = {r['file'][:-5]: r for r in run_worker('crafted', tmp_path)}
    assert set(res) == set(CRAFTED)
    for name, r in res.items():
        assert r['error'] == 'StoredModelError' and r['checked'], (name, r)
    assert 'more than 16,777,216 values' in res['linear-20000x20000']['message']
    assert 'bytes of tensor data' in res['linear-max-params-no-data']['message']
    assert 'more than 4,096 layers' in res['identity-5000']['message']
    assert 'more than 16,777,216 values' in res['state-1e6x1e6']['message']
    assert 'bytes of tensor data' in res['state-max-params-no-data']['message']
    for c in ('zlib', 'lzma'): assert 'decompression bomb' in res[f'bomb-{c}']['message']
    assert 'limit' in res['lzma-4gib-dictionary']['message'].lower()

def test_2000_random_edits_with_valid_checksums_end_in_one_error_or_a_whole_model():
    res = run_worker('edits', 2000, 0, timeout=600)
    assert len(res) == 2000
    bad = [r for r in res if (r['error'] != 'StoredModelError' or not r['checked']) if r['error']]
    assert not bad, bad[:5]
    loaded = [r for r in res if not r['error']]
    assert all(r['whole'] for r in loaded), [r for r in loaded if not r['whole']][:5]
    assert 0 < len(loaded) < 2000 # some edits change a value and still make a model (a checksum is no seal)

def test_genuine_version_1_files_load_bit_for_bit_as_before():
    sys.path.insert(0, str(HERE.parent/'benchmarks'))
    from bench_load import state_digest
    want = json.loads((DATA/'digests.json').read_text())['state_sha256']
    assert len(want) >= 7
    for name, digest in want.items(): assert state_digest(load_compressed(DATA/name)) == digest, name

def test_a_pinned_sha256_refuses_any_other_file_before_parsing_it(tmp_path):
    f = save_compressed(mlp(4, (8,), 2), tmp_path/'m.kdbc')
    assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
    load_compressed(f.path, sha256=f.sha256); load_compressed(f.path, sha256='sha256:' + f.sha256.upper())
    other = tmp_path/'other.kdbc'; save_compressed(mlp(4, (8,), 2), other)
    with pytest.raises(StoredModelError, match='pinned'): load_compressed(other, sha256=f.sha256)
    junk = tmp_path/'junk'; junk.write_bytes(b'\x80\x04 not even a stored model')
    with pytest.raises(StoredModelError, match='pinned'): load_compressed(junk, sha256=f.sha256) # checked first
    for bad in ('abc', f.sha256[:-1], 123, 'md5:' + f.sha256):
        with pytest.raises(ValueError, match='64 hex digits'): load_compressed(f.path, sha256=bad)

def test_max_params_bounds_what_a_file_may_declare_and_how_much_is_read(tmp_path):
    m = mlp(64, (32,), 10)
    f = save_compressed(m, tmp_path/'m.kdbc')
    n = sum(v.numel() for v in m.state_dict().values())
    load_compressed(f.path, max_params=n)
    for bad in (1e8, -1, '10'):
        with pytest.raises(ValueError, match='max_params must be None'): load_compressed(f.path, max_params=bad)
    with pytest.raises(StoredModelError, match=f'more than {n - 1:,} values'): load_compressed(f.path, max_params=n - 1)
    big = tmp_path/'big.kdbc'; big.write_bytes(MAGIC + bytes(3 * 2**20))
    with pytest.raises(StoredModelError, match='more than a stored model of at most 10 values'):
        load_compressed(big, max_params=10) # refused after reading a bounded prefix
    from kdbook.compress import MAX_PARAMS
    with pytest.warns(UserWarning, match=f'max_params={2 * 2048 * 4096 + 2048}'):
        g = save_compressed(torch.nn.Sequential(torch.nn.Linear(4096, 2048), torch.nn.Linear(2048, 4096, bias=False)),
                            tmp_path/'large.kdbc')
    with pytest.raises(StoredModelError, match='more than'): load_compressed(g.path)
    assert sum(p.numel() for p in load_compressed(g.path, max_params=None).parameters()) > MAX_PARAMS
