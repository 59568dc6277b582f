"""Multi-process tests of kdbook.distributed and .launch: 2-process gloo runs on 127.0.0.1 started with `launch_local`.

This file is also the worker script: `python -m torch.distributed.run ... tests/test_distributed.py OUT` runs `worker(OUT)`
on every rank (pytest only imports it, so the `__main__` block never runs under pytest)."""
import json, subprocess, sys, time
from pathlib import Path
import pytest, torch
from torch import nn


def _crc(ts):
    from kdbook.teacher import tensor_crc
    return tensor_crc(list(ts))


def worker(out):
    "Checks run on every rank; rank 0 writes what all ranks saw to `out`"
    from torch.nn.parallel import DistributedDataParallel
    from fastai.basics import Learner, CrossEntropyLossFlat, set_seed
    from fastai.callback.core import Callback
    from fastai.torch_core import rank_distrib, num_distrib
    from fastai.distributed import DistributedDL
    from kdbook.data import mnist1d_dls
    from kdbook.models import cnn1d
    from kdbook.teacher import Teacher
    from kdbook.distill import KDCallback, FeatureKDCallback
    from kdbook.soft_targets import SoftTargetCache
    from kdbook.prune import PruneCallback, lottery_ticket
    import torch.distributed as dist
    from kdbook.distributed import setup_process_group, ddp_ctx, gather_object, teardown_distrib

    dev = setup_process_group()
    rank, rep = rank_distrib(), {}
    dls = mnist1d_dls(bs=32, n_train=400, n_valid=200, device=dev)
    def new_teacher():
        set_seed(0)                      # the same weights on every rank
        return cnn1d(16).to(dev)
    def new_learner(cbs, ch=8):
        set_seed(1 + rank)               # different initial students: DDP must broadcast rank 0's
        learn = Learner(dls, cnn1d(ch), loss_func=CrossEntropyLossFlat(), cbs=cbs)
        learn.logger = lambda *a, **k: None
        return learn

    class Probe(Callback):
        "What the training loop sees: the model type, the teacher's state, cache rows against the teacher's outputs"
        order = 80
        def __init__(self, t, kd=None): self.t,self.kd,self.seen,self.err,self.idxs = t,kd,set(),0.,[]
        def before_fit(self):
            self.seen.add(type(self.learn.model).__name__)
            self.dl_type = type(self.dls.train).__name__
        def after_pred(self):
            if not self.training: return
            m = self.t.models[0]
            self.teacher_ok = (not m.training and not any(p.requires_grad for p in m.parameters())
                               and not isinstance(m, DistributedDataParallel)
                               and next(m.parameters()).device == self.learn.pred.device)
            if self.kd is not None and self.kd.cache is not None:
                with torch.no_grad(): ref = m(*self.learn.xb)
                self.err = max(self.err, (self.kd._t - ref).abs().max().item() / ref.abs().max().item())
                self.cur = self.kd._rec.idxs         # the shard KDCallback recorded this epoch
        def after_train(self):
            if self.kd is not None and self.kd.cache is not None: self.idxs.append(list(self.cur))

    # 1. KD + feature KD (with an adapter: 8 -> 16 channels) + Taylor pruning of two named layers
    t = Teacher(new_teacher()); fp0 = t.fingerprint()
    fkd = FeatureKDCallback(t, 'block2')
    pr = PruneCallback(0.5, schedule='iterative', rounds=2, criterion='taylor', n_taylor=2, layers=['block1.0', 'block2.0'])
    probe = Probe(t)
    learn = new_learner([KDCallback(t), fkd, pr, probe])
    with ddp_ctx(learn):
        sync = learn.prune_mask_sync
        learn.fit(2, 1e-2)
    rep['features'] = dict(teacher_same=t.fingerprint() == fp0, teacher=fp0, model_types=sorted(probe.seen),
                           dl_type=probe.dl_type, teacher_ok=probe.teacher_ok, after=type(learn.model).__name__,
                           student=_crc(learn.model.state_dict().values()), adapters=_crc(fkd.adapters['block2->block2'].parameters()),
                           masks=_crc(pr.masks[k] for k in sorted(pr.masks)), mask_names=sorted(pr.masks),
                           sparsity=pr.measured(), resynced=sync.n_resynced,
                           loaders_back=all(not isinstance(dl, DistributedDL) for dl in learn.dls.loaders))

    # 2. KD from a soft-target cache: the rows read for each batch are the teacher's outputs on that batch
    t = Teacher(new_teacher())
    kd = KDCallback(t, cache=SoftTargetCache.build(t, dls.train))
    probe = Probe(t, kd)
    learn = new_learner([kd, probe])
    with ddp_ctx(learn): learn.fit(2, 1e-2)
    rep['cache'] = dict(rel_err=probe.err, idxs=probe.idxs, n=len(dls.train.dataset))

    # 3. Masks made to diverge (rank 1 scales its weights at random right before the first pruning step): rank 0's win
    class Diverge(Callback):
        order = PruneCallback.order - 1
        def before_batch(self):
            if rank == 1 and self.train_iter == 0:
                with torch.no_grad():
                    for m in self.learn.model.modules():
                        if isinstance(m, (nn.Conv1d, nn.Linear)): m.weight.mul_(torch.rand_like(m.weight))
    pr = PruneCallback(0.5, schedule='one_shot', pct_start=0)   # prunes at the first batch, right after Diverge
    learn = new_learner([pr, Diverge()])
    with ddp_ctx(learn):
        sync = learn.prune_mask_sync
        learn.fit(1, 1e-2)
    rep['diverge'] = dict(resynced=sync.n_resynced, masks=_crc(pr.masks[k] for k in sorted(pr.masks)),
                          student=_crc(learn.model.state_dict().values()), sparsity=pr.measured())

    # 4. Teachers that differ across ranks: a clear error on every rank, and the Learner is put back
    tm = new_teacher()
    if rank == 1:
        with torch.no_grad(): tm.head.bias.add_(1e-3)
    learn = new_learner([KDCallback(tm)])
    model, loaders = learn.model, list(learn.dls.loaders)
    try:
        with ddp_ctx(learn): learn.fit(1, 1e-2)
        msg = None
    except RuntimeError as e: msg = str(e)
    rep['mismatch'] = dict(msg=msg, model_back=learn.model is model,
                           loaders_back=all(a is b for a, b in zip(learn.dls.loaders, loaders)))

    # 5. A fit that fails half-way: model, loaders and callbacks are put back
    class Boom(Callback):
        def after_batch(self):
            if self.train_iter == 2: raise RuntimeError('boom')
    learn = new_learner([Boom()])
    model, loaders, ncbs = learn.model, list(learn.dls.loaders), len(learn.cbs)
    try:
        with ddp_ctx(learn): learn.fit(1, 1e-2)
        msg = None
    except RuntimeError as e: msg = str(e)
    rep['boom'] = dict(msg=msg, model_back=learn.model is model, n_cbs_back=len(learn.cbs) == ncbs,
                       loaders_back=all(a is b for a, b in zip(learn.dls.loaders, loaders)),
                       bn=sorted({type(m).__name__ for m in learn.model.modules() if 'BatchNorm' in type(m).__name__}))

    # 6. Lottery tickets: snapshots taken inside DDP fits, rewinds between them (outside DDP)
    learn = new_learner([])
    with ddp_ctx(learn): cb = lottery_ticket(learn, 0.75, rounds=2, epochs=1)
    rep['lottery'] = dict(sparsity=cb.measured(), masks=_crc(cb.masks[k] for k in sorted(cb.masks)),
                          student=_crc(learn.model.state_dict().values()), mask_names=sorted(cb.masks))

    # 7. SyncBatchNorm asked for on CPU
    learn = new_learner([])
    try:
        with ddp_ctx(learn, sync_bn=True): learn.fit(1, 1e-2)
        msg = None
    except ValueError as e: msg = str(e)
    rep['sync_bn'] = dict(msg=msg, bn=sorted({type(m).__name__ for m in learn.model.modules() if 'BatchNorm' in type(m).__name__}))

    rep['rank'], rep['world_size'] = rank, num_distrib()
    reps = gather_object(rep)
    if rank == 0: Path(out).write_text(json.dumps(reps))
    dist.barrier()                       # no rank closes its connections while another still reads
    teardown_distrib()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    "Run `worker` on 2 processes once for the tests below"
    from kdbook.launch import launch_local
    from kdbook.data import mnist1d_arrays
    mnist1d_arrays(400, 200)                      # build the data cache before two ranks race to write it
    out = tmp_path_factory.mktemp('ddp')/'ranks.json'
    launch_local(Path(__file__), [out], nproc=2, timeout=600) # reruns once if a rank dies of a native abort at exit
    reps = json.loads(out.read_text())
    assert [r['rank'] for r in reps] == [0, 1] and {r['world_size'] for r in reps} == {2}
    return reps


def test_teacher_frozen_replicated_not_wrapped(ranks):
    "Inside the fit the student is a DDP module and the loaders are sharded; the teacher is a frozen, unwrapped copy on each rank"
    for r in ranks:
        f = r['features']
        assert f['model_types'] == ['DistributedDataParallel'] and f['dl_type'] == 'AnyDeviceDistributedDL'
        assert f['teacher_ok'] and f['teacher_same']
        assert f['after'] == 'Sequential' and f['loaders_back']
    assert ranks[0]['features']['teacher'] == ranks[1]['features']['teacher']


def test_students_adapters_masks_agree(ranks):
    "Feature KD adapters (outside DDP) and Taylor masks (layers chosen by name) end up identical on both ranks"
    a, b = ranks[0]['features'], ranks[1]['features']
    assert a['mask_names'] == ['block1.0', 'block2.0']   # names of the unwrapped model, not 'module.block1.0'
    for k in ('student', 'adapters', 'masks'): assert a[k] == b[k], k
    assert abs(a['sparsity'] - 0.5) < 0.01
    assert a['resynced'] == b['resynced'] == 0           # Taylor scores use the all-reduced gradients: nothing to fix


def test_cache_rows_match_shards(ranks):
    "Under sharding, the cache rows read for each batch are the teacher's logits of that batch (fp16 error only)"
    for r in ranks: assert r['cache']['rel_err'] < 2e-3
    n = ranks[0]['cache']['n']
    for e in range(2):                                    # each epoch: disjoint shards that cover the training set
        a, b = ranks[0]['cache']['idxs'][e], ranks[1]['cache']['idxs'][e]
        assert len(a) == len(b) == n // 2 and sorted(a + b) == list(range(n))
    assert ranks[0]['cache']['idxs'][0] != ranks[0]['cache']['idxs'][1]   # reshuffled every epoch


def test_diverged_masks_resynced(ranks):
    "Masks that differ across ranks are replaced by rank 0's, with its weights"
    a, b = ranks[0]['diverge'], ranks[1]['diverge']
    assert a['resynced'] == b['resynced'] == 1
    assert a['masks'] == b['masks'] and a['student'] == b['student']


def test_lottery_ticket_rewinds(ranks):
    "lottery_ticket under ddp_ctx: snapshots of the unwrapped model, rewound between fits, same ticket on both ranks"
    a, b = ranks[0]['lottery'], ranks[1]['lottery']
    assert abs(a['sparsity'] - 0.75) < 0.01 and a['mask_names'] == ['block1.0', 'block2.0', 'block3.0', 'head']
    assert a['masks'] == b['masks'] and a['student'] == b['student']


def test_errors_restore_learner(ranks):
    "Different teachers, a failing fit, and SyncBatchNorm on CPU: clear errors on every rank, the Learner put back"
    for r in ranks:
        assert 'teachers differ across ranks' in r['mismatch']['msg']
        assert r['mismatch']['model_back'] and r['mismatch']['loaders_back']
        assert 'boom' in r['boom']['msg'] and r['boom']['model_back'] and r['boom']['loaders_back'] and r['boom']['n_cbs_back']
        assert r['boom']['bn'] == ['BatchNorm1d']
        assert 'SyncBatchNorm runs only on GPUs' in r['sync_bn']['msg'] and r['sync_bn']['bn'] == ['BatchNorm1d']


def test_launch_local_reports_rank_errors(tmp_path):
    "A rank that fails: `launch_local` raises with that rank's own error message, not only torchrun's summary"
    from kdbook.launch import launch_local
    (tmp_path/'fail.py').write_text("import os\nif os.environ['RANK'] == '1': raise ValueError('rank 1 has bad weights')\n")
    with pytest.raises(subprocess.CalledProcessError, match='rank 1 has bad weights'): launch_local(tmp_path/'fail.py', nproc=2)
    (tmp_path/'abort.py').write_text("import os, sys\nif os.environ['RANK'] == '0': sys.stderr.write('native crash here\\n'); os.abort()\n")
    with pytest.warns(UserWarning, match='native abort'), pytest.raises(subprocess.CalledProcessError, match='native crash here'):
        launch_local(tmp_path/'abort.py', nproc=2)          # aborts again when run once more: the error is raised
    with pytest.raises(subprocess.CalledProcessError, match='native crash here'):
        launch_local(tmp_path/'abort.py', nproc=2, retry_abort=False)


def test_launch_local_reruns_after_one_native_abort(tmp_path):
    "Rank 0 aborts (SIGABRT) on the first run only: `launch_local` warns, runs once more, and returns the second run"
    from kdbook.launch import launch_local
    flag = tmp_path/'aborted'
    (tmp_path/'abort_once.py').write_text(
        "import os, pathlib\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "if os.environ['RANK'] == '0' and not flag.exists(): flag.touch(); os.abort()\n"
        "os.write(1, f\"rank {os.environ['RANK']} done\\n\".encode())\n")   # one write: the ranks' lines can't interleave
    with pytest.warns(UserWarning, match='native abort'): r = launch_local(tmp_path/'abort_once.py', nproc=2)
    assert flag.exists() and sorted(r.stdout.splitlines()) == ['rank 0 done', 'rank 1 done']


@pytest.fixture(scope='module')
def teacher_file(tmp_path_factory):
    "The acceptance run's teacher: a cnn1d(64) trained 12 epochs on MNIST-1D, saved once for every rank to load"
    from fastai.basics import Learner, set_seed
    from fastai.metrics import accuracy
    from fastai.callback.schedule import fit_one_cycle
    from kdbook.data import mnist1d_dls, mnist1d_arrays
    from kdbook.models import cnn1d
    mnist1d_arrays(4000, 4000)
    set_seed(0)
    learn = Learner(mnist1d_dls(bs=128, n_valid=4000), cnn1d(64), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(12, 3e-2)
    path = tmp_path_factory.mktemp('teacher')/'teacher64.pth'
    torch.save(learn.model.state_dict(), path)
    return path


def _kd_prune(teacher_file, tmp_path, nproc, bs, seed=0):
    from kdbook.launch import launch_local
    out = tmp_path/f'kd_prune_{nproc}.json'
    start = time.time()
    launch_local('kdbook.launch', ['--teacher', teacher_file, '--out', out, '--bs', bs, '--epochs', 12, '--lr', 3e-2,
                                        '--n-valid', 4000, '--seed', seed], nproc=nproc, timeout=900)
    res = json.loads(out.read_text())
    res['wall_seconds'] = time.time() - start
    return res


@pytest.mark.slow # about 3 minutes on 2 busy cores: two launches of 12 epochs and the teacher's training
def test_acceptance_2_vs_1_process(teacher_file, tmp_path):
    "KD + pruning on 2 processes (64 per rank) vs 1 (128): same accuracy within 1.5 points; teacher untouched, masks equal"
    two, one = _kd_prune(teacher_file, tmp_path, 2, 64), _kd_prune(teacher_file, tmp_path, 1, 128)
    assert len(two['ranks']) == 2 and len(one['ranks']) == 1
    for r in two['ranks'] + one['ranks']:
        assert r['teacher_after'] == r['teacher_before'] == two['ranks'][0]['teacher_before']
        assert abs(r['sparsity'] - 0.5) < 0.01
    assert two['masks_equal'] and two['ranks'][0]['masks'] == two['ranks'][1]['masks']
    assert two['ranks'][0]['student'] == two['ranks'][1]['student']
    a2, a1 = 100*two['ranks'][0]['accuracy'], 100*one['ranks'][0]['accuracy']
    print(f"\nteacher {100*one['ranks'][0]['teacher_accuracy']:.2f}%; student 2 processes {a2:.2f}% "
          f"(fit {two['ranks'][0]['fit_seconds']:.1f}s, wall {two['wall_seconds']:.1f}s), 1 process {a1:.2f}% "
          f"(fit {one['ranks'][0]['fit_seconds']:.1f}s, wall {one['wall_seconds']:.1f}s)")
    assert abs(a2 - a1) <= 1.5


if __name__ == '__main__': worker(sys.argv[1])
