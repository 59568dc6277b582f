"""The cost of safe loading: `load_compressed` now checks every size a file declares before it takes memory (issue "A
stored model is safe to open from a stranger"). This measures, side by side in one process, the loader of an earlier
commit (`--old`, default 5e15ef6, the last one before the checks; its `kdbook/coding.py` and `kdbook/compress.py`
are read from git into a temporary package) and this checkout's, on the same genuine files:

- time: `--rounds` interleaved rounds, each loading every file once with each loader (in alternating order); the
  median of the rounds per file and loader, and their ratio new / old;
- peak memory: the peak resident memory of one load above the resident memory before it (Linux's VmHWM, reset
  through /proc/self/clear_refs), in a fresh process per file and loader that has loaded one small file first;
- and that both loaders give the same tensors, bit for bit.

The files: every `.kdbc` in `--dir` (default: the pipeline's stored models, made first by `kdbook demo --pipeline
full --out` in a temporary folder, about two minutes), the format-version-1 files the tests keep
(`tests/data/kdbc_v1`), and a larger genuine file made here (an MLP of 1.9 M weights, 80% pruned, shared in 5 bits),
where the peak memory of a load is large enough to measure.

    python benchmarks/bench_load.py [--dir DIR] [--rounds 31] [--old 5e15ef6]
    python benchmarks/bench_load.py --make-fixtures tests/data/kdbc_v1 --dir DIR   # how those files were made

`--make-fixtures` writes, with the *old* writer, a small pruned and shared MLP in each coder besides copying the `.kdbc` files
of `--dir` under 16 kB, and a `digests.json` of the state_dict digest that the old loader gives for each file.
"""
import argparse, hashlib, importlib, json, os, re, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def old_package(rev, dest):
    "Import kdbook's coding and compress modules as they were at git `rev`, as the package `kdbook_old` in `dest`"
    pkg = Path(dest)/'kdbook_old'; pkg.mkdir(parents=True, exist_ok=True); (pkg/'__init__.py').write_text('')
    for m in ('coding', 'compress'):
        src = subprocess.run(['git', '-C', str(ROOT), 'show', f'{rev}:kdbook/{m}.py'], check=True, capture_output=True,
                             text=True).stdout
        (pkg/f'{m}.py').write_text(re.sub(r'from \.(models|prune) import', r'from kdbook.\1 import', src))
    sys.path.insert(0, str(dest))
    return importlib.import_module('kdbook_old.compress')

def state_digest(model):
    "SHA-256 of a model's state_dict: names, dtypes, shapes and bytes"
    import torch
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(f'{k}|{v.dtype}|{tuple(v.shape)}|'.encode())
        h.update(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

def peak_rss_kb(loader, f, old_dir):
    "Peak resident memory that loading `f` adds, in kB, in a fresh process that first loaded small genuine files"
    mod = 'kdbook_old.compress' if loader == 'old' else 'kdbook.compress'
    code = (f"import importlib, re, sys; from pathlib import Path; sys.path.insert(0, {str(old_dir)!r}); "
            f"import torch; torch.set_num_threads(1); load = importlib.import_module({mod!r}).load_compressed; "
            f"[load(w) for w in {[str(p) for p in sorted((ROOT/'tests'/'data'/'kdbc_v1').glob('mlp-*.kdbc'))]!r}]; "
            f"st = lambda k: int(re.search(k + r':\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)); "
            f"Path('/proc/self/clear_refs').write_text('5'); before = st('VmRSS'); load({str(f)!r}); "
            f"print(st('VmHWM') - before)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    if out.returncode: raise RuntimeError(out.stderr[-2000:])
    return int(out.stdout.split()[-1])

def pipeline_files(dest):
    "The pipeline's stored models, made by the CLI in `dest`"
    subprocess.run([str(Path(sys.executable).parent/'kdbook'), 'demo', '--pipeline', 'full', '--quiet', '--out',
                    str(dest)],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return sorted(Path(dest).rglob('*.kdbc'))

def large_file(dest):
    "A genuine larger file: an MLP of 1.9 M weights, 80% pruned, shared in 5 bits, rounded to float16, stored"
    import torch
    from kdbook.compress import share_weights, round_to_half, save_compressed
    from kdbook.models import mlp
    torch.manual_seed(0)
    m = mlp(784, (1024, 1024), 10)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1: p.mul_(p.abs() >= p.abs().flatten().kthvalue(int(0.8 * p.numel())).values)
    share_weights(m, 5); round_to_half(m)
    return save_compressed(m, Path(dest)/'mlp-784-1024-1024-pruned-shared.kdbc').path

def make_fixtures(old, out, files):
    "Format-version-1 files written by the old writer, and the digests of what the old loader reads from them"
    import torch
    from kdbook.models import mlp
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.stat().st_size < 16_000: shutil.copy(f, out/f.name)
    torch.manual_seed(0)
    m = mlp(64, (32,), 10)
    with torch.no_grad():
        m.fc1.weight.mul_(torch.rand_like(m.fc1.weight) > 0.7)  # a sparse layer
    old.share_weights(m, 3); old.round_to_half(m)
    for coder in ('huffman', 'fixed', 'zlib', 'lzma'): old.save_compressed(m, out/f'mlp-sparse-shared-{coder}.kdbc', coder)
    digests = {f.name: state_digest(old.load_compressed(f)) for f in sorted(out.glob('*.kdbc'))}
    (out/'digests.json').write_text(json.dumps(dict(
        made_by=f"kdbook {args.old}'s save_compressed (benchmarks/bench_load.py --make-fixtures)",
        state_sha256=digests), indent=1) + '\n')
    print(f"{len(digests)} files in {out}")

def main():
    import torch
    from kdbook.compress import load_compressed
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    old = old_package(args.old, tmp/'old')
    files = sorted(Path(args.dir).rglob('*.kdbc')) if args.dir else pipeline_files(tmp/'pipeline')
    if args.make_fixtures: return make_fixtures(old, args.make_fixtures, files)
    seen = {g.name for g in files}
    files += [f for f in sorted((ROOT/'tests'/'data'/'kdbc_v1').glob('*.kdbc')) if f.name not in seen]
    files.append(large_file(tmp))
    loaders = {'old': old.load_compressed, 'new': load_compressed}
    for f in files: assert state_digest(loaders['old'](f)) == state_digest(loaders['new'](f)), f"{f}: loaders differ"
    times = {(f, k): [] for f in files for k in loaders}
    peaks = {(f, k): peak_rss_kb(k, f, tmp/'old') for f in files for k in loaders}
    for r in range(args.rounds):
        for f in files:
            for k in (('old', 'new') if r % 2 else ('new', 'old')):
                t0 = time.perf_counter(); loaders[k](f); times[f, k].append(time.perf_counter() - t0)
    med = statistics.median
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} interleaved rounds; old loader: {args.old}")
    print(f"{'file':44} {'bytes':>7} {'old ms':>7} {'new ms':>7} {'new/old':>7} {'old peak kB':>11} {'new peak kB':>11}")
    ratios = []
    for f in files:
        to, tn = med(times[f, 'old']) * 1e3, med(times[f, 'new']) * 1e3
        ratios.append(tn / to)
        print(f"{f.name[:44]:44} {f.stat().st_size:7,} {to:7.2f} {tn:7.2f} {tn / to:7.2f} "
              f"{peaks[f, 'old']:11,} {peaks[f, 'new']:11,}")
    print(f"time new/old: median {med(ratios):.2f}, max {max(ratios):.2f}; every file bit-identical with both loaders")
    shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dir', help='folder of .kdbc files (default: the pipeline\'s, made first)')
    ap.add_argument('--rounds', type=int, default=31)
    ap.add_argument('--old', default='5e15ef6', help='git revision of the loader to compare with')
    ap.add_argument('--make-fixtures', metavar='OUT', help='write format-version-1 test files into OUT and stop')
    args = ap.parse_args()
    main()
