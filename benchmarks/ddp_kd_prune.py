"""KD + pruning on 2 processes (DDP over gloo, 127.0.0.1) against 1 process with the same effective batch.

Run: `python benchmarks/ddp_kd_prune.py [--seeds 3] [--epochs 12] [--out benchmarks/ddp_kd_prune.json]`

A `cnn1d(64)` teacher is trained once (12 epochs, lr 3e-2) on MNIST-1D (4,000 training, 4,000 validation signals) and
saved; then, for every seed, `kdbook.launch.kd_prune_job` distils and prunes (50%, AGP) a `cnn1d(32)` student with
`launch_local`, alternating 2 processes x 64 samples and 1 process x 128 (the order flips every seed). Reported per run:
the student's validation accuracy, its sparsity, the invariants (teacher fingerprint unchanged on every rank, masks
and students equal across ranks), the fit time measured inside the ranks, and the launch's wall time (interpreter
start and imports included). Speed is given as the median ratio of the two, from runs made side by side; on a
machine whose 2 cores are shared with other work the ratio says little about an idle one.
"""
import argparse, json, statistics, tempfile, time
from pathlib import Path
import torch
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from fastai.callback.schedule import fit_one_cycle
from kdbook.data import mnist1d_dls, mnist1d_arrays
from kdbook.models import cnn1d
from kdbook.launch import launch_local


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--epochs', type=int, default=12)
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    mnist1d_arrays(4000, 4000)
    set_seed(0)
    tl = Learner(mnist1d_dls(bs=128, n_valid=4000, valid_pct=None), cnn1d(64), metrics=accuracy)
    with tl.no_bar(), tl.no_logging(): tl.fit_one_cycle(12, 3e-2)
    torch.save(tl.model.state_dict(), tmp/'teacher.pth')
    rows = []
    for seed in range(a.seeds):
        order = [(2, 64), (1, 128)] if seed % 2 == 0 else [(1, 128), (2, 64)]
        for nproc, bs in order:
            start = time.time()
            launch_local('kdbook.launch', ['--teacher', tmp/'teacher.pth', '--out', tmp/'r.json', '--bs', bs, '--seed', seed,
                                                '--epochs', a.epochs, '--n-valid', 4000], nproc=nproc)
            wall = time.time() - start
            res = json.loads((tmp/'r.json').read_text())
            rs = res['ranks']
            rows.append(dict(seed=seed, processes=nproc, bs_per_rank=bs, accuracy=100*rs[0]['accuracy'],
                             teacher_accuracy=100*rs[0]['teacher_accuracy'], sparsity=rs[0]['sparsity'],
                             teacher_unchanged=all(r['teacher_after'] == r['teacher_before'] == rs[0]['teacher_before'] for r in rs),
                             masks_equal=res['masks_equal'], students_equal=len({r['student'] for r in rs}) == 1,
                             fit_s=rs[0]['fit_seconds'], wall_s=wall))
            print(rows[-1], flush=True)
    two = [r for r in rows if r['processes'] == 2]
    one = [r for r in rows if r['processes'] == 1]
    diff = [a['accuracy'] - b['accuracy'] for a, b in zip(two, one)]
    summary = dict(acc_2proc=[round(r['accuracy'], 2) for r in two], acc_1proc=[round(r['accuracy'], 2) for r in one],
                   diff_points=[round(d, 2) for d in diff], max_abs_diff=round(max(map(abs, diff)), 2),
                   fit_ratio_2_over_1=round(statistics.median(a['fit_s']/b['fit_s'] for a, b in zip(two, one)), 2),
                   wall_ratio_2_over_1=round(statistics.median(a['wall_s']/b['wall_s'] for a, b in zip(two, one)), 2),
                   invariants_hold=all(r['teacher_unchanged'] and r['masks_equal'] and r['students_equal'] for r in rows))
    print(json.dumps(summary, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(dict(rows=rows, summary=summary), indent=1))


if __name__ == '__main__': main()
