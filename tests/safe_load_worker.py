"""Loads stored models that a stranger could send, under limits this process sets itself; run by tests/test_safe_load.py.

    python tests/safe_load_worker.py crafted DIR    # every DIR/*.kdbc, as written by the test
    python tests/safe_load_worker.py edits N SEED   # N random edits of tests/data/kdbc_v1's files, checksums recomputed

First it loads every genuine file of tests/data/kdbc_v1 (a normal load: imports, allocator, LZMA's dictionary), then it
caps its address space at what it holds then plus 256 MB (`resource.setrlimit(RLIMIT_AS)`), and before each file its
CPU time at 5 s more than it has used (`RLIMIT_CPU`: the kernel stops the process past it). It prints one JSON line
per file: the error's type, whether kdbook's own checks raised it (no `__cause__`), or, for a file that loads, whether
the model is whole (stored again and loaded back, bit for bit)."""
import json, math, re, resource, sys, zlib
from pathlib import Path
import numpy as np

MB, CPU_S = 2**20, 5
DATA = Path(__file__).parent/'data'/'kdbc_v1'

def vm_bytes(): return 1024 * int(re.search(r'VmSize:\s+(\d+)', Path('/proc/self/status').read_text()).group(1))

def same(a, b):
    "Two state_dicts equal bit for bit, names, dtypes and shapes included"
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and
                                      a[k].reshape(-1).view(torch.uint8).equal(b[k].reshape(-1).view(torch.uint8)) for k in a)

def load(name, data):
    "Load `data` under a fresh CPU limit; what happened, as a dict"
    used = resource.getrusage(resource.RUSAGE_SELF)
    resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used.ru_utime + used.ru_stime) + CPU_S, resource.RLIM_INFINITY))
    print(f"loading {name}", file=sys.stderr, flush=True) # what was running if the kernel stops the process
    try: m = from_compressed(data)
    except Exception as e: return dict(file=name, error=type(e).__name__, checked=e.__cause__ is None, message=str(e)[:200])
    return dict(file=name, error=None, whole=same(from_compressed(to_compressed(m)).state_dict(), m.state_dict()))

ODD = [-1, 0, 1, 3, 2**31, 2**63, 10**12, 1e308, float('nan'), -0.0, True, False, None, '', 'a.b', 'forward', 'same',
       'Linear', 'Sequential', 'LSTM', [], [0], [1, 1], [2**40, 2**40], [['0', ['ReLU', [False]]]]]

def json_slots(desc):
    "`(container, index)` of each place in a JSON tree of lists: its leaves (arguments, names), then its lists"
    leaves, lists, todo = [], [], [desc]
    while todo:
        c = todo.pop()
        for i, v in enumerate(c):
            (lists if isinstance(v, list) else leaves).append((c, i))
            if isinstance(v, list): todo.append(v)
    return leaves, lists

def mutate(desc, rng):
    "A description with one value replaced by an odd one: mostly an argument or a name, sometimes a list or a layer"
    leaves, lists = json_slots(desc)
    slots = leaves if rng.random() < 0.8 else lists
    c, i = slots[rng.integers(len(slots))]
    c[i] = json.loads(json.dumps(ODD[rng.integers(len(ODD))]))
    return desc

def edits(n, seed):
    """`n` genuine files, changed in the description (a third: one value replaced in its JSON; a third: 1-4 of its
    bytes) or in the tensors (the last third: 1-4 bytes), each deflated and checksummed again as a forger would"""
    from kdbook.coding import ByteReader, ByteWriter
    rng, paths = np.random.default_rng(seed), sorted(DATA.glob('*.kdbc'))
    files = [f.read_bytes() for f in paths]
    json_bytes = np.frombuffer(b'0123456789-.,:[]" eEtruefalsnoSqLiBhdR', np.uint8)
    for i in range(n):
        data = files[i % len(files)]
        r = ByteReader(data[len(MAGIC):-4]); desc = bytearray(zlib.decompress(r.raw())); tensors = bytearray(r.buf[r.p:])
        if i % 3 == 0: desc = bytearray(json.dumps(mutate(json.loads(desc), rng)).encode())
        else:
            part = desc if i % 3 == 1 else tensors
            for _ in range(rng.integers(1, 5)):
                part[rng.integers(len(part))] = rng.choice(json_bytes) if part is desc and rng.random() < 0.7 else rng.integers(256)
        w = ByteWriter(); w.raw(zlib.compress(bytes(desc), 9)); w.buf += tensors
        yield f"edit {i} of {paths[i % len(files)].name} ({['a value', 'bytes of the description', 'tensors'][i % 3]})", \
              MAGIC + bytes(w.buf) + zlib.crc32(w.buf).to_bytes(4, 'little')

if __name__ == '__main__':
    import torch
    torch.set_num_threads(1)
    from kdbook.compress import MAGIC, from_compressed, to_compressed, load_compressed
    for f in sorted(DATA.glob('*.kdbc')): load_compressed(f)
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 256 * MB, resource.RLIM_INFINITY))
    mode = sys.argv[1]
    cases = ((f.name, f.read_bytes()) for f in sorted(Path(sys.argv[2]).glob('*.kdbc'))) if mode == 'crafted' \
            else edits(int(sys.argv[2]), int(sys.argv[3]))
    for name, data in cases: print(json.dumps(load(name, data)), flush=True)
