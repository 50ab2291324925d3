import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor, Qwen2Config

from llave_hf import LlaveEmbeddingConfig, LlaveEmbeddingModel
from llave_hf.testing import FAMILIES, tiny_model_and_processor


VISION_FAMILIES = [family for family in FAMILIES if family != "qwen2"]


def _items(family, make_image, tmp_path):
    """A mixed batch: text-only, image+text (non-square, from a path), image-only; text-only for Qwen2."""
    if family == "qwen2":
        return ["a red car", "a smiling face with heart eyes, an emoji", "dog"], None
    path = tmp_path / "wide.png"
    make_image(20, 50, seed=1).save(path)
    texts = ["a red car", "<|image_1|> Represent the given image with the following question: what colour?", None]
    return texts, [None, str(path), make_image(32, 32, seed=2)]


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(family, tmp_path, make_image):
    model, processor = tiny_model_and_processor(family)
    texts, images = _items(family, make_image, tmp_path)
    expected = model.encode(texts=texts, images=images)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")

    files = set(os.listdir(tmp_path / "model"))
    assert {"model.safetensors", "modeling_llave.py", "configuration_llave.py", "processing_llave.py"} <= files
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_llave.LlaveEmbeddingModel"

    loaded = AutoModel.from_pretrained(tmp_path / "model")
    assert isinstance(loaded, LlaveEmbeddingModel)
    # encode() finds the processor saved beside the weights
    torch.testing.assert_close(loaded.encode(texts=texts, images=images), expected, rtol=0, atol=0)
    assert expected.shape == (3, 64)
    torch.testing.assert_close(expected.norm(dim=-1), torch.ones(3))


def test_fresh_process_loads_with_remote_code_only(tmp_path, make_image):
    """A process that never imports llave_hf loads every family through `trust_remote_code`."""
    expected = {}
    for family in FAMILIES:
        model, processor = tiny_model_and_processor(family)
        texts, images = _items(family, make_image, tmp_path)
        model.save_pretrained(tmp_path / family)
        processor.save_pretrained(tmp_path / family)
        expected[family] = model.encode(texts=texts, images=images)
        (tmp_path / f"{family}.json").write_text(json.dumps({"texts": texts, "images": images and [
            image if isinstance(image, str) or image is None else None for image in images
        ]}))  # fmt: skip
    script = textwrap.dedent(
        """
        import json, sys, torch
        from transformers import AutoModel, AutoProcessor, pipeline
        from PIL import Image
        import numpy as np
        root = sys.argv[1]
        out = {}
        for family in sys.argv[2:]:
            items = json.load(open(f"{root}/{family}.json"))
            images = items["images"]
            if images is not None:  # the in-memory image of the batch, rebuilt identically
                images[2] = Image.fromarray(np.random.RandomState(2).randint(0, 256, (32, 32, 3), dtype=np.uint8))
            model = AutoModel.from_pretrained(f"{root}/{family}", trust_remote_code=True)
            processor = AutoProcessor.from_pretrained(f"{root}/{family}", trust_remote_code=True)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            out[family] = model.encode(texts=items["texts"], images=images, processor=processor).tolist()
            # The checkpoint's own feature-extraction pipeline gives encode()'s embeddings.
            pipe = pipeline("feature-extraction", model=f"{root}/{family}", trust_remote_code=True, device="cpu")
            assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
            pairs = zip(items["texts"], images or [None] * len(items["texts"]))
            out[family + " pipeline"] = pipe([{"text": text, "image": image} for text, image in pairs])
        assert "llave_hf" not in sys.modules
        json.dump(out, open(f"{root}/out.json", "w"))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *FAMILIES], check=True, env=env, cwd=tmp_path, timeout=300
    )
    out = json.loads((tmp_path / "out.json").read_text())
    for family in FAMILIES:
        torch.testing.assert_close(torch.tensor(out[family]), expected[family], rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.tensor(out[f"{family} pipeline"]), expected[family], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_side_and_batch_mates_do_not_change_embeddings(family, tmp_path, make_image):
    model, processor = tiny_model_and_processor(family)
    texts, images = _items(family, make_image, tmp_path)
    texts = texts + ["a much longer text about many different things so that the others need padding"]
    images = images + [None] if images is not None else None
    alone = torch.cat(
        [model.encode(texts=[t], images=None if images is None else [images[i]]) for i, t in enumerate(texts)]
    )
    right = model.encode(texts=texts, images=images, batch_size=len(texts))
    processor.tokenizer.padding_side = "left"
    left = model.encode(texts=texts, images=images, batch_size=len(texts))
    torch.testing.assert_close(right, alone, rtol=0, atol=2e-5)
    torch.testing.assert_close(left, alone, rtol=0, atol=2e-5)


def test_left_padded_forward_equals_right_padded_forward():
    model, processor = tiny_model_and_processor("llava_onevision")
    inputs = processor(text=["short", "a longer text with more tokens in it"])
    processor.tokenizer.padding_side = "left"
    left_inputs = processor(text=["short", "a longer text with more tokens in it"])
    assert left_inputs["attention_mask"][0, 0] == 0  # really left-padded
    with torch.no_grad():
        torch.testing.assert_close(model(**left_inputs).embeddings, model(**inputs).embeddings, rtol=0, atol=1e-5)


def test_encode_keeps_input_order_and_formats(make_image):
    model, _ = tiny_model_and_processor("qwen2_vl")
    texts = ["x", "a longer caption here", "mid text", "the longest caption of them all, by far"]
    forward = model.encode(texts=texts, batch_size=2)
    backward = model.encode(texts=texts[::-1], batch_size=3)
    torch.testing.assert_close(forward, backward.flip(0), rtol=0, atol=2e-5)
    assert model.encode(texts="x", convert_to="numpy").shape == (1, 64)
    as_list = model.encode(texts=texts, convert_to="list")
    assert isinstance(as_list, list) and len(as_list) == 4 and len(as_list[0]) == 64
    # text, image and image+text items are distinct embeddings
    image = make_image(seed=3)
    both = model.encode(texts=["a cat", None, "a cat"], images=[None, image, image])
    assert (both[0] - both[1]).abs().max() > 1e-3 and (both[1] - both[2]).abs().max() > 1e-3


def test_encode_instruction_equals_prefixed_text():
    model, _ = tiny_model_and_processor("qwen2")
    with_instruction = model.encode(texts=["a dog"], instruction="Find an image that matches the given caption: ")
    prefixed = model.encode(texts=["Find an image that matches the given caption: a dog"])
    torch.testing.assert_close(with_instruction, prefixed, rtol=0, atol=0)


def test_prompt_format_follows_released_llave():
    _, processor = tiny_model_and_processor("llava_onevision")
    # MMEB placeholder at the start: replaced in place, its space kept
    assert processor.format_text("<|image_1|> Represent the given image.", True) == "<image> Represent the given image."
    # elsewhere or absent: the image moves to the front, followed by a newline
    assert processor.format_text("Find it: <|image_1|>", True) == "<image>\nFind it:"
    assert processor.format_text("a caption", True, instruction="Describe:") == "<image>\nDescribe: a caption"
    assert processor.format_text("a caption", False) == "a caption"
    inputs = processor(text=["hello"], return_tensors=None)
    prompt = processor.tokenizer.decode(inputs["input_ids"][0])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
        "<|im_start|>assistant\n\n<|im_end|>\n"
    )


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_image_tokens_match_vision_features(family, make_image):
    """Token counts computed by the processor equal the features the backbone yields (else forward fails)."""
    model, processor = tiny_model_and_processor(family)
    sizes = [(32, 32), (20, 50), (50, 20), (64, 17), (9, 64)]
    images = [make_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    embeddings = model.encode(texts=[None] * len(images), images=images)
    assert torch.isfinite(embeddings).all()


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_prompt_lengths_from_image_sizes_equal_the_processed_prompts(family, make_image):
    """Lengths for a run's data summary come from image sizes alone; they must be the processor's real lengths."""
    _, processor = tiny_model_and_processor(family)
    sizes = [(32, 32), (20, 50), None, (64, 17), (9, 64), None]
    texts = ["<|image_1|> Represent the given image.", "a red square", "just a text", None, "find <|image_1|> it", "a"]
    images = [make_image(*size, seed=i) if size else None for i, size in enumerate(sizes)]
    lengths = processor(text=texts, images=images)["attention_mask"].sum(dim=1).tolist()
    assert [length for length, _ in processor.prompt_lengths(texts, sizes)] == lengths
    # what truncation cannot shorten: a longer prompt fits into one token more (at least one text token), not into it
    for text, image, (length, fixed) in zip(texts, images, processor.prompt_lengths(texts, sizes)):
        processor.max_length = fixed
        with pytest.raises(ValueError, match="template and image tokens alone"):
            processor(text=[text], images=[image])
        processor.max_length = fixed + 1
        assert processor(text=[text], images=[image])["attention_mask"].sum() == min(length, fixed + 1)


def test_mean_pooling_and_unnormalized_output():
    model, processor = tiny_model_and_processor("qwen2")
    model.config.pooling, model.config.normalize = "mean", False
    inputs = processor(text=["one", "two words here"])
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = (output.last_hidden_state * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(output.embeddings, expected)


def test_config_validates_and_registers():
    with pytest.raises(ValueError, match="Unsupported backbone"):
        LlaveEmbeddingConfig(backbone_config={"model_type": "bert"})
    with pytest.raises(ValueError, match="pooling"):
        LlaveEmbeddingConfig(backbone_config=Qwen2Config(), pooling="cls")
    config = LlaveEmbeddingConfig(backbone_config=Qwen2Config(hidden_size=64, num_attention_heads=4))
    assert config.hidden_size == 64
    assert isinstance(AutoConfig.for_model("llave"), LlaveEmbeddingConfig)


def test_processor_round_trip_with_auto_processor(tmp_path):
    _, processor = tiny_model_and_processor("qwen2_vl")
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "LlaveProcessor"
    assert (loaded.backbone_type, loaded.image_token, loaded.image_start_token) == (
        "qwen2_vl", "<|image_pad|>", "<|vision_start|>"
    )  # fmt: skip
    assert loaded(text=["a"])["input_ids"].tolist() == processor(text=["a"])["input_ids"].tolist()


# ------------------------------------------------------------------------------------------------------------------
# bad input: a clear error naming the item, never a silent wrong vector


def test_bad_images_name_the_item(tmp_path, make_image):
    model, _ = tiny_model_and_processor("llava_onevision")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"item 1: cannot read image file .*corrupt\.png"):
        model.encode(texts=["a", "b"], images=[None, str(corrupt)])
    with pytest.raises(FileNotFoundError, match=r"item 0: image file not found: .*missing\.png"):
        model.encode(images=[str(tmp_path / "missing.png"), make_image()])
    with pytest.raises(TypeError, match="item 0: an image must be a PIL image or a path"):
        model.encode(images=[123])


def test_bad_texts_and_lists_are_rejected():
    model, _ = tiny_model_and_processor("llava_onevision")
    with pytest.raises(ValueError, match="empty inputs"):
        model.encode(texts=[])
    with pytest.raises(ValueError, match="needs `texts`, `images` or both"):
        model.encode()
    with pytest.raises(ValueError, match="`texts` has 2 items but `images` has 1"):
        model.encode(texts=["a", "b"], images=[None])
    with pytest.raises(ValueError, match="item 1: neither text nor image"):
        model.encode(texts=["a", None])
    with pytest.raises(ValueError, match="item 0: empty text and no image"):
        model.encode(texts=["   "])
    with pytest.raises(ValueError, match="item 0: the text contains the image placeholder"):
        model.encode(texts=["<|image_1|> what is this?"])
    with pytest.raises(TypeError, match="item 0: a text must be a string"):
        model.encode(texts=[3.5])
    # arguments: lists, not generators or sets (read once, no order); an int batch size
    for kwargs, argument, kind in (
        ({"texts": (text for text in ["a", "b"])}, "texts", "generator"),
        ({"texts": {"a", "b"}}, "texts", "set"),
        ({"images": iter(["x.png"]), "texts": ["a"]}, "images", "list_iterator"),
    ):
        with pytest.raises(TypeError, match=f"`{argument}` must be a list \\(or one item\\), got {kind}"):
            model.encode(**kwargs)
    for batch_size in (2.5, None, "4", True):
        with pytest.raises(TypeError, match=f"batch_size must be a positive int, got {batch_size!r}"):
            model.encode(texts=["a", "b"], batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        model.encode(texts=["a"], batch_size=0)
    assert model.encode(texts=("a", "b"), batch_size=np.int64(1)).shape[0] == 2  # a tuple and a numpy int are fine


def test_text_longer_than_max_length_is_truncated_with_a_warning(caplog):
    model, processor = tiny_model_and_processor("qwen2")
    processor.max_length = 48
    long_text = "the quick brown fox jumps over the lazy dog " * 40
    with caplog.at_level("WARNING"):
        inputs = processor(text=["short", long_text])
    assert inputs["attention_mask"].sum(1).max() <= 48
    assert "item 1: text truncated" in caplog.text
    last = inputs["input_ids"][1, inputs["attention_mask"][1].sum() - 1]
    assert processor.tokenizer.decode([last]) == "\n"  # the template's tail survives: the pooled token is right
    assert torch.isfinite(model.encode(texts=[long_text])).all()
    processor.max_length = 10
    with pytest.raises(ValueError, match="item 0: the prompt template and image tokens alone take"):
        processor(text=["short"])


def test_encode_runs_without_dropout_and_restores_training_mode():
    model, _ = tiny_model_and_processor("qwen2", attention_dropout=0.5)
    expected = model.encode(texts=["a dog", "a cat on a mat"])
    model.train()
    torch.testing.assert_close(model.encode(texts=["a dog", "a cat on a mat"]), expected, rtol=0, atol=0)
    assert model.training


def test_reloaded_image_processors_use_the_pil_backend():
    """A torchvision-backed image processor (what AutoImageProcessor picks where torchvision exists) is swapped for
    its PIL twin with the same settings: LLaVE checkpoints are trained and converted on the PIL path."""
    from llave_hf import LlaveProcessor
    from llave_hf.modeling.processing_llave import pil_image_processor

    _, processor = tiny_model_and_processor("llava_onevision")
    pil = processor.image_processor

    class LlavaOnevisionImageProcessor:  # stands in for the torchvision class, absent on this machine
        def to_dict(self):
            return pil.to_dict()

    swapped = pil_image_processor(LlavaOnevisionImageProcessor())
    assert type(swapped) is type(pil) and swapped.to_dict() == pil.to_dict()
    assert pil_image_processor(pil) is pil
    rebuilt = LlaveProcessor(swapped, processor.tokenizer, backbone_type="llava_onevision", num_image_tokens=16)
    assert type(rebuilt.image_processor).__name__ == "LlavaOnevisionImageProcessorPil"


def test_model_save_pretrained_writes_its_processor_and_text_processors_load_locally(tmp_path):
    model, _ = tiny_model_and_processor("qwen2")
    model.save_pretrained(tmp_path)  # the model's own save carries the processor (also through push_to_hub)
    assert (tmp_path / "processor_config.json").exists()
    processor = AutoProcessor.from_pretrained(tmp_path)  # no trust_remote_code: llave_hf's registered class
    assert type(processor).__module__ == "llave_hf.modeling.processing_llave"
    assert type(processor).__name__ == "LlaveTextProcessor"


def test_only_the_family_table_branches_on_the_backbone_family():
    """Adding a family must touch `modeling/backbones.py` (and its tiny test model) only: no other module compares
    with a family name or probes the backbone's modules by name."""
    root = Path(__file__).resolve().parent.parent
    names = "|".join(re.escape(family) for family in FAMILIES)
    branch = re.compile(rf"""(==|!=|\bin\b)\s*[\(\[{{]?\s*["']({names})["']|hasattr\([^)]*["'](vision_tower|visual)["']""")
    allowed = {root / "modeling" / "backbones.py", root / "llave_hf" / "testing.py"}
    sources = [*(root / "llave_hf").rglob("*.py"), *(root / "modeling").glob("*.py")]
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sources
        if path not in allowed
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if branch.search(line)
    ]
    assert not offenders, "\n".join(offenders)
