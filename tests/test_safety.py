"""Hardening against hostile or careless input: code from model folders, image and path limits, special tokens in
user text, 16-bit images, crash-safe resume. Each test fails on the code before its fix."""

import json
import os

import pytest
from mmeb_fixtures import make_mmeb_eval_fixture

from llave_hf.cli import evaluate as evaluate_cli


# ------------------------------------------------------------------------------------------------------------------
# remote code


def write_malicious_folder(folder, marker) -> None:
    """A model folder whose `auto_map` code writes `marker` when imported."""
    folder.mkdir()
    code = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    code += "from transformers import PretrainedConfig, PreTrainedModel\n"
    code += "class EvilConfig(PretrainedConfig):\n    model_type = 'evil_llave_test'\n"
    code += "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    (folder / "evil.py").write_text(code)
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel", "AutoProcessor": "evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil_llave_test", "auto_map": auto_map}))


def test_eval_cli_runs_no_code_from_the_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    data_dir = make_mmeb_eval_fixture(tmp_path / "mmeb")
    marker = tmp_path / "marker"
    write_malicious_folder(tmp_path / "evil", marker)
    argv = ["--model", str(tmp_path / "evil"), "--data", data_dir, "--datasets", "ImageNet-1K"]
    argv += ["--output", str(tmp_path / "out"), "--no-histograms"]
    with pytest.raises(ValueError, match="trust_remote_code"):
        evaluate_cli.main(argv)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------------------
# image paths and dataset names


def escaping_rows(root, outside):
    """Image paths of rows under `root/data`: a good one, `..`, an absolute one, and a link inside pointing out."""
    (root / "images").mkdir(parents=True)
    draw_png(root / "images" / "ok.png")
    draw_png(outside / "secret.png")
    os.symlink(outside / "secret.png", root / "images" / "link.png")
    return {
        "inside": "images/ok.png",
        "dotdot": "../outside/secret.png",
        "absolute": str(outside / "secret.png"),
        "symlink": "images/link.png",
    }


def draw_png(path, size=(16, 16)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_training_image_paths_stay_inside_the_root(tmp_path, kind):
    from llave_hf import ContrastiveCollator
    from llave_hf.image_paths import ImagePathError
    from llave_hf.testing import tiny_processor

    paths = escaping_rows(tmp_path / "root", tmp_path / "outside")
    processor = tiny_processor("llava_onevision")

    def row(path):
        return {"row_id": 7, "subset": "Toy", "qry": "<|image_1|> what?", "qry_image_path": path, "pos_text": "a",
                "pos_image_path": ""}  # fmt: skip

    ContrastiveCollator(processor, image_root=tmp_path / "root")([row(paths["inside"])])
    with pytest.raises(ImagePathError, match=r"row 7 \(Toy\) query.*(outside the image root|absolute image path)"):
        ContrastiveCollator(processor, image_root=tmp_path / "root")([row(paths[kind])])
    # Opting in trusts the data's paths.
    ContrastiveCollator(processor, image_root=tmp_path / "root", allow_absolute_image_paths=True)([row(paths[kind])])


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_evaluation_image_paths_stay_inside_the_root(tmp_path, kind):
    from mmeb_fixtures import FakeEncoder, mmeb_row

    from llave_hf.evaluation import MMEBDataError, MMEBEvaluator

    paths = escaping_rows(tmp_path / "root", tmp_path / "outside")
    rows = {"Toy": [mmeb_row("<|image_1|> cat", paths["inside"], ["cat", "dog"]),
                    mmeb_row("<|image_1|> cat", paths[kind], ["cat", "dog"])]}  # fmt: skip
    with pytest.raises(MMEBDataError, match=r"'Toy', row 1: qry.*(outside the image root|absolute image path)"):
        MMEBEvaluator(rows, image_root=str(tmp_path / "root")).prepare("Toy")
    encoder = _RecordingEncoder()
    MMEBEvaluator(rows, image_root=str(tmp_path / "root"), allow_absolute_image_paths=True)(encoder)
    assert any(image and image.endswith(("secret.png", "link.png")) for _, image in encoder.items)


class _RecordingEncoder:
    def __init__(self):
        self.items = []

    def __call__(self, texts, images, **kwargs):
        import torch

        self.items.extend(zip(texts, images))
        return torch.nn.functional.normalize(torch.randn(len(texts), 4), dim=-1)


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a\\b", ".hidden"])
def test_dataset_names_cannot_leave_the_output_folder(tmp_path, name):
    from mmeb_fixtures import mmeb_row

    from llave_hf.evaluation import MMEBDataError, MMEBEvaluator

    output_dir = tmp_path / "a" / "b" / "out"
    rows = [mmeb_row("cat", "", ["cat", "dog"])]
    with pytest.raises(MMEBDataError, match="Dataset name"):
        MMEBEvaluator({name: rows}, output_dir=str(output_dir), histograms=False)(_RecordingEncoder())
    with pytest.raises(MMEBDataError, match="Dataset name"):
        MMEBEvaluator({name: rows}, datasets=[name], output_dir=str(output_dir), histograms=False)
    assert not any(path.suffix == ".json" for path in tmp_path.rglob("*"))
