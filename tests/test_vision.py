"""KD in a fastai vision loop, as a vision user writes it: real handwritten digits from image files
(`kdbook.data.mnist_dls`, fastai's `ImageDataLoaders.from_folder`), a torchvision ResNet-18 teacher built by fastai's
`vision_learner` (no pretrained weights: nothing downloads), a small CNN student with the soft-target cache, gradual
pruning and `to_fp16()`, then `export`, `load_learner` and `predict` on a PNG file.

On a CPU, fastai's `MixedPrecision` switches itself off (it is CUDA's); on a GPU the same test runs in fp16."""
import warnings
from pathlib import Path
import pytest, torch
from fastai.vision.all import vision_learner, resnet18, Learner, CrossEntropyLossFlat, accuracy, load_learner, set_seed
from kdbook.data import mnist_dls
from kdbook.models import cnn2d, count_params
from kdbook.teacher import snapshot, same_weights
from kdbook.distill import KDCallback
from kdbook.soft_targets import SoftTargetCache
from kdbook.prune import PruneCallback, prunable_layers


@pytest.fixture(scope='module')
def dls(): return mnist_dls(bs=64)

@pytest.fixture(scope='module')
def teacher(dls):
    set_seed(0)
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 3e-3)
    return learn


def test_resnet_teacher_learns_real_digits(teacher):
    assert type(teacher.model[0][0]).__name__ == 'Conv2d' and teacher.model[0][0].in_channels == 1
    assert teacher.validate()[1] > 0.8   # one epoch on 4,000 digits; chance is 0.1


def test_kd_cache_agp_fp16_export_predict(dls, teacher, tmp_path):
    snap = snapshot(teacher.model)
    cache = SoftTargetCache.build(teacher, dls.train)
    assert len(cache) == len(dls.train_ds) == 4000
    set_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # on a CPU: "CUDA is not available, disabling autocast"
        student = Learner(dls, cnn2d(16, size=28), loss_func=CrossEntropyLossFlat(), metrics=accuracy, path=tmp_path,
                          cbs=[KDCallback(cache=cache, alpha=0.9, T=4.), PruneCallback(0.5, schedule='agp')]).to_fp16()
        with student.no_bar(), student.no_logging(): student.fit_one_cycle(3, 1e-2)
    assert same_weights(teacher.model, snap)              # the teacher was only read
    assert student.validate()[1] > 0.85
    assert 'kd_loss' in student.recorder.metric_names
    sp = student.prune.measured()
    assert abs(sp - 0.5) < 0.01, sp
    zeros = {n: m.weight == 0 for n, m in prunable_layers(student.model).items()}

    f = 'student.pkl'
    student.export(f)
    size = (tmp_path/f).stat().st_size
    assert size < 0.1 * 4 * count_params(teacher.model)   # the ResNet teacher is not in the file
    loaded = load_learner(tmp_path/f, cpu=True)
    for n, m in prunable_layers(loaded.model).items(): assert torch.equal(m.weight == 0, zeros[n].cpu()), n
    png = sorted((Path(dls.path)/'valid'/'7').glob('*.png'))[0]
    label, idx, probs = loaded.predict(png)
    assert probs.shape == (10,) and abs(float(probs.sum()) - 1) < 1e-4
    assert label == loaded.dls.vocab[idx]
    on_student = student.predict(png)[2]
    torch.testing.assert_close(probs, on_student.cpu().float(), atol=2e-3, rtol=0)  # fp16 on a GPU, fp32 on a CPU
