import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dipddpm.data import CIFAR10_CLASSES as CLASSES

# Tests run many small torch ops; one thread each keeps them fast and repeatable on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored after it: results that are compared bit
    for bit depend on the thread count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10-jpeg-test.tar.gz").exists():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA


def _smooth_jpeg(seed: int) -> bytes:
    """A 32x32 JPEG of smooth random colour blobs (natural-ish, compresses like a photo)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """A CIFAR-10-layout archive pair (`cifar10-jpeg-{split}.tar.gz`), 3 images per class."""
    folder = tmp_path_factory.mktemp("cifar")
    for split in ("train", "test"):
        with tarfile.open(folder / f"cifar10-jpeg-{split}.tar.gz", "w:gz") as tar:
            for c, cls in enumerate(CLASSES):
                for i in range(3):
                    data = _smooth_jpeg(1000 * (split == "train") + 10 * c + i)
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder / "cifar10-jpeg-test.tar.gz"


def random_inception_state_dict(tmp_dir: Path) -> dict:
    """torch-fidelity's InceptionV3 with Kaiming-initialised convolutions, as a state dict.

    PyTorch's default conv init collapses the pool features to near constants, which
    would make every FID zero; Kaiming init keeps them informative.
    """
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from dipddpm import fid as fidmod

    class Blank(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return super().load_state_dict(state_dict, strict=False)

    empty = tmp_dir / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    model = Blank(fidmod.EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=str(empty))
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.state_dict()


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    import torch

    tmp_dir = tmp_path_factory.mktemp("inception")
    path = tmp_dir / "inception-random.pth"
    torch.save(random_inception_state_dict(tmp_dir), path)
    return path
