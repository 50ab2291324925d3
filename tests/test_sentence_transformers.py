"""sentence-transformers loads a saved checkpoint and embeds exactly as `LlaveEmbeddingModel.encode`."""

import json

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

from llave_hf.hub import save_for_hub
from llave_hf.testing import tiny_model_and_processor


PROMPTS = {
    "query": "Find me an everyday image that matches the given caption: ",
    "document": "<|image_1|> Represent the given image.",
}


@pytest.fixture(scope="module", params=["llava_onevision", "qwen2_vl"])
def saved(request, tmp_path_factory):
    model, processor = tiny_model_and_processor(request.param, seed=0)
    folder = save_for_hub(model, processor, tmp_path_factory.mktemp(request.param) / "repo", prompts=PROMPTS)
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    return model, processor, folder, st


def _assert_same(actual, expected):
    assert actual.shape == expected.shape
    cosines = F.cosine_similarity(torch.as_tensor(actual).float().cpu(), expected, dim=-1)
    assert cosines.min() >= 0.9999, cosines


def test_encode_query_document_match_our_encode(saved, make_image):
    model, processor, _, st = saved
    images = [make_image(32, 32, seed=1), make_image(48, 24, seed=2)]
    texts = ["a dog catching a frisbee", "a red double-decker bus in the rain"]

    def ours(texts=None, images=None, instruction=None):
        return model.encode(texts=texts, images=images, instruction=instruction, processor=processor)

    _assert_same(st.encode(texts, convert_to_tensor=True), ours(texts))
    _assert_same(st.encode(images, convert_to_tensor=True), ours(images=images))
    pairs = [{"text": text, "image": image} for text, image in zip(texts, images)]
    _assert_same(st.encode(pairs, convert_to_tensor=True), ours(texts, images))
    # Prompts are instructions for every modality, images included (the stock module would drop them there).
    _assert_same(st.encode_query(texts, convert_to_tensor=True), ours(texts, instruction=PROMPTS["query"]))
    _assert_same(st.encode_document(images, convert_to_tensor=True), ours(images=images, instruction=PROMPTS["document"]))
    _assert_same(
        st.encode_document(pairs, convert_to_tensor=True), ours(texts, images, instruction=PROMPTS["document"])
    )
    # One batch may mix modalities.
    mixed = [texts[0], images[0], pairs[1]]
    expected = ours([texts[0], None, texts[1]], [None, images[0], images[1]], instruction=PROMPTS["query"])
    _assert_same(st.encode_query(mixed, batch_size=3, convert_to_tensor=True), expected)
    # The prompt changes the vector: the comparisons above can see a dropped instruction.
    assert F.cosine_similarity(ours(images=images), ours(images=images, instruction=PROMPTS["document"])).min() < 0.9999
    assert st.get_embedding_dimension() == model.config.hidden_size


def test_folder_files_and_remote_code_opt_in(saved):
    folder = saved[2]
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == PROMPTS and config["similarity_fn_name"] == "cosine"
    assert json.loads((folder / "modules.json").read_text())[0]["type"] == "sentence_transformers_llave.LlaveTransformer"
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(folder), device="cpu")


def test_unusable_inputs_and_settings_raise(saved, make_image):
    _, processor, _, st = saved
    with pytest.raises(ValueError, match=r"input \{'text': 'a', 'caption': 'b'\}: unknown keys"):
        st.encode(["a", {"text": "a", "caption": "b"}])
    with pytest.raises(TypeError, match=r"images_kwargs\['do_resize'\]"):
        processor(text=["a"], images_kwargs={"do_resize": False})
    with pytest.raises(TypeError, match=r"text_kwargs\['padding'\]='max_length'"):
        processor(text=["a"], text_kwargs={"padding": "max_length"})
    # max_length from the per-modality convention truncates this call only.
    long_text = "the quick brown fox jumps over the lazy dog " * 20
    short = processor(text=[long_text], text_kwargs={"max_length": 64, "truncation": True})
    assert short["input_ids"].shape[1] <= 64
    assert processor(text=[long_text])["input_ids"].shape[1] > 64
