"""The cost of kdbook's array loader, side by side in one run: a plain MNIST-1D epoch of `cnn1d(64)` (bs 128, fastai's
`Learner.fit`, training and validation) fed by

- kdbook's `mnist1d_dls()` (`TensorDL`: the data set collated once, one index op per batch),
- the same loader with fastai's per-item batching (`TfmdDL`, what `mnist1d_dls` used before),
- fastai's plainest per-item pipeline over the same tensors (`DataLoaders.from_dsets` of `(x, y)` items),
- a minimal loader that indexes one batch per step (the floor: nothing but the index op),

in interleaved rounds, median of the rounds. Targets (issue "Fast data path"): kdbook <= 1.15x the floor and
<= 0.85x fastai's per-item pipeline.

    python benchmarks/bench_loader.py [--rounds 9] [--threads 2] [--bs 128] [--fit-epochs 40]

With `--fit-epochs N` it also times one `fit_one_cycle(N, 1e-2)` of the same model with kdbook's loader and with the
floor (the book's teacher recipe; on a GPU the data stays on the GPU in both).
"""
import argparse, statistics, time
import torch
from fastai.data.core import DataLoaders, TfmdDL
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
import fastai.callback.progress  # Learner.no_bar
import fastai.callback.schedule  # Learner.fit_one_cycle
from kdbook.data import mnist1d_dls
from kdbook.models import cnn1d


class IndexLoader:
    "The floor: a loader that forms each batch of in-memory tensors with one index op, and nothing else"
    def __init__(self, x, y, bs, shuffle, seed=0):
        self.x, self.y, self.bs, self.shuffle, self.g = x, y, bs, shuffle, torch.Generator().manual_seed(seed)
        self.device = x.device
    def to(self, device): self.x, self.y, self.device = self.x.to(device), self.y.to(device), device; return self
    def __len__(self): return (len(self.x) + self.bs - 1) // self.bs
    def __iter__(self):
        p = torch.randperm(len(self.x), generator=self.g) if self.shuffle else torch.arange(len(self.x))
        p = p.to(self.x.device)
        for i in range(0, len(p), self.bs): b = p[i:i+self.bs]; yield self.x[b], self.y[b]


def main(rounds=9, threads=2, bs=128, fit_epochs=0):
    if threads: torch.set_num_threads(threads)
    fast = mnist1d_dls(bs=bs, valid_pct=None)
    dev = fast.device
    old = mnist1d_dls(bs=bs, dl_type=TfmdDL, valid_pct=None)
    xy = lambda ds: (torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([int(ds[i][1]) for i in range(len(ds))]))
    (xt, yt), (xv, yv) = xy(fast.train_ds), xy(fast.valid_ds)
    per_item = DataLoaders.from_dsets(list(zip(xt, yt)), list(zip(xv, yv)), bs=bs, device=dev, num_workers=0)
    floor = DataLoaders(IndexLoader(xt, yt, bs, True), IndexLoader(xv, yv, bs, False), device=dev)
    loaders = {'kdbook': fast, 'kdbook per-item (before)': old, 'fastai per-item': per_item, 'floor': floor}
    def sync():
        if dev.type == 'cuda': torch.cuda.synchronize(dev)
    def epoch(dls):
        torch.manual_seed(0)
        learn = Learner(dls, cnn1d(64), loss_func=CrossEntropyLossFlat())
        with learn.no_bar(), learn.no_logging():
            sync(); t = time.perf_counter(); learn.fit(1, 1e-3); sync(); return time.perf_counter() - t
    for dls in loaders.values(): epoch(dls)  # warm-up (kdbook's loader collates its data set here)
    times = {k: [] for k in loaders}
    for _ in range(rounds):
        for k, dls in loaders.items(): times[k].append(epoch(dls))
    per_round = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
    print(f"device {dev}, torch threads {torch.get_num_threads()}, bs {bs}, {rounds} interleaved rounds, "
          f"{len(fast.train)} training + {len(fast.valid)} validation batches per epoch")
    for k, v in times.items(): print(f"  median epoch {k:26s} {1000*statistics.median(v):8.1f} ms")
    r_floor, r_item = per_round('kdbook', 'floor'), per_round('kdbook', 'fastai per-item')
    print(f"kdbook / floor                   = {r_floor:.3f}  (target <= 1.15)")
    print(f"kdbook / fastai per-item         = {r_item:.3f}  (target <= 0.85)")
    print(f"kdbook per-item (before) / floor = {per_round('kdbook per-item (before)', 'floor'):.3f}")
    if fit_epochs:
        fits = {}
        for k in ('kdbook', 'floor'):
            torch.manual_seed(0)
            learn = Learner(loaders[k], cnn1d(64), loss_func=CrossEntropyLossFlat())
            with learn.no_bar(), learn.no_logging():
                sync(); t = time.perf_counter(); learn.fit_one_cycle(fit_epochs, 1e-2, wd=1e-2); sync()
            fits[k] = time.perf_counter() - t
        print(f"fit_one_cycle({fit_epochs}): kdbook {fits['kdbook']:.1f} s, floor {fits['floor']:.1f} s, "
              f"ratio {fits['kdbook']/fits['floor']:.3f} (target <= 1.2)")
    return r_floor, r_item


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=9)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--fit-epochs', type=int, default=0, help='also time one fit_one_cycle of this many epochs')
    a = p.parse_args()
    main(a.rounds, a.threads, a.bs, a.fit_epochs)
