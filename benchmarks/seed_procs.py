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
