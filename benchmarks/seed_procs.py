"""Run one process per seed, `jobs` at a time, one thread each: the benchmarks' way of using a machine's cores."""
import json, os, subprocess, sys

def run_seeds(cmd, seeds, jobs):
    "Run `cmd + ['--seed', s]` for each seed in `seeds`, `jobs` at a time; yield the JSON rows each prints, per seed"
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    todo, running = list(seeds), []
    while todo or running:
        while todo and len(running) < jobs:
            s = todo.pop(0)
            running.append(subprocess.Popen(cmd + ['--seed', str(s)], stdout=subprocess.PIPE, env=env, text=True))
        p = running.pop(0); out, _ = p.communicate()
        if p.returncode: sys.exit(f"a seed failed (exit {p.returncode})")
        yield [json.loads(l) for l in out.splitlines() if l.startswith('{')]

def seeds_main(a, run_seed, summary, cmd):
    """A benchmark's main: with `--seed`, print `run_seed(a)`'s rows (the child process); with an existing `--json` and
    no `--run`, reprint its summary; else run `cmd` on each of `a.seeds`, appending each seed's rows to `--json`"""
    from pathlib import Path
    if a.seed is not None:
        for r in run_seed(a): print(json.dumps(r), flush=True)
        return
    if a.json and Path(a.json).exists() and not getattr(a, 'run', False):
        return summary([json.loads(l) for l in Path(a.json).read_text().splitlines()])
    rows = []
    for new in run_seeds(cmd, a.seeds, a.jobs):
        rows += new
        if a.json:
            with open(a.json, 'a') as f: f.write(''.join(json.dumps(r) + '\n' for r in new))
        for r in new: print(json.dumps(r), flush=True)
    summary(rows)
