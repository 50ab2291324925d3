import os


# Tests never touch the network; tiny models are built from configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture
def make_image():
    """Random RGB images of a given (height, width), deterministic per seed."""

    def make(height=32, width=32, seed=0):
        pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels)

    return make


from hub_server import hub_server  # noqa: E402, F401  (the local Hub fixture, for tests/test_hub.py)
