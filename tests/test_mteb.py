"""mteb evaluates a LLaVE checkpoint (through its sentence-transformers files) on a small local any-to-any
retrieval task, and its scores agree with our own metrics on the same data."""

# mteb is in the test extra: a broken install fails this module instead of skipping it
import mteb
import numpy as np
import pytest
import torch
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from llave_hf.evaluation.mteb_encoder import mteb_encoder
from llave_hf.hub import save_for_hub
from llave_hf.metrics import retrieval_metrics
from llave_hf.testing import tiny_model_and_processor


PROMPTS = {"query": "Find me an everyday image that matches the given caption: ", "document": "Represent the given image."}
NUM_PAIRS = 8


def _image(index: int):
    from PIL import Image

    return Image.fromarray(np.random.RandomState(index).randint(0, 256, (32, 32, 3), dtype=np.uint8))


class TinyTextToImage(AbsTaskRetrieval):
    """Captions -> images, one relevant image per caption, defined here (mteb's own tasks download data)."""

    metadata = TaskMetadata(
        name="LlaveTinyTextToImage",
        description="Tiny local text-to-image retrieval for tests.",
        reference=None,
        dataset={"path": "local", "revision": "local"},
        type="Any2AnyRetrieval",
        category="t2i",
        modalities=["text", "image"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )

    def load_data(self, **kwargs):
        split = RetrievalSplitData(
            queries=Dataset.from_dict({"id": [f"q{i}" for i in range(NUM_PAIRS)], "text": CAPTIONS}),
            corpus=Dataset.from_dict({"id": [f"d{i}" for i in range(NUM_PAIRS)], "image": IMAGES}),
            relevant_docs={f"q{i}": {f"d{i}": 1} for i in range(NUM_PAIRS)},
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


CAPTIONS = [f"a picture of colour number {index}" for index in range(NUM_PAIRS)]
IMAGES = [_image(index) for index in range(NUM_PAIRS)]


def test_mteb_scores_agree_with_our_metrics(tmp_path):
    model, processor = tiny_model_and_processor("llava_onevision", seed=0)
    folder = save_for_hub(model, processor, tmp_path / "repo", prompts=PROMPTS)
    encoder = mteb_encoder(str(folder), device="cpu")  # mteb takes the checkpoint's "query"/"document" prompts
    result = mteb.evaluate(encoder, TinyTextToImage(), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]

    queries = model.encode(texts=CAPTIONS, instruction=PROMPTS["query"], processor=processor)
    documents = model.encode(images=IMAGES, instruction=PROMPTS["document"], processor=processor)
    ours = retrieval_metrics((queries @ documents.T).numpy(), labels=list(range(NUM_PAIRS)), k_values=(1, 3, 5))
    assert 0 < ours["precision@1"] < 1 and ours["mrr"] < 1  # not a degenerate ranking: the comparison can fail
    assert scores["precision_at_1"] == pytest.approx(ours["precision@1"], abs=1e-5)
    for k in (1, 3, 5):
        assert scores[f"recall_at_{k}"] == pytest.approx(ours[f"recall@{k}"], abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(ours["mrr"], abs=1e-5)
    # the instructions reach the encoder: without them, the embeddings (and the ranking) are other ones
    plain = model.encode(texts=CAPTIONS, processor=processor)
    assert not torch.allclose(plain, queries, atol=1e-3)
