import base64
import dataclasses
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData, constants
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import get_session
from huggingface_hub.utils import logging as hub_logging
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as transformers_logging

from hub_server import TOKEN, USER
from llave_hf.evaluation import EvaluationResults
from llave_hf.hub import (
    PIPELINE_TAG,
    HubPublishMixin,
    TokenRedactingArgumentsMixin,
    push_to_hub,
    render_model_card,
    save_for_hub,
    training_settings,
)
from llave_hf.testing import tiny_model_and_processor


INSTRUCTION = "<|image_1|> Represent the given image with the following question: "
CAPTION_INSTRUCTION = "Find me an everyday image that matches the given caption: "
TRAINING = {"loss_alpha": 9.0, "loss_temperature": 0.02, "symmetric_loss": True, "learning_rate": 1e-5}
EVAL = {"ImageNet-1K": 0.771, "N24News": 0.821, "MSCOCO": 0.87, "RefCOCO": 0.954, "Emoji_t2i": 0.5}
CODE_FILES = {"modeling_llave.py", "configuration_llave.py", "processing_llave.py", "pipeline_llave.py", "handler.py"}


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _load_handler_module(folder):
    """Imports `handler.py` from a repository folder on its own, as the Inference Endpoints server does."""
    spec = importlib.util.spec_from_file_location(
        f"handler_{abs(hash(str(folder)))}", os.path.join(folder, "handler.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A tiny model, the repository folder `save_for_hub` writes for it, and its `EndpointHandler`."""
    model, processor = tiny_model_and_processor("llava_onevision")
    folder = save_for_hub(model, processor, tmp_path_factory.mktemp("repo"), repo_id=f"{USER}/llave-tiny")
    return model, folder, _load_handler_module(folder).EndpointHandler(str(folder))


@pytest.fixture
def debug_logs(monkeypatch):
    """transformers and huggingface_hub log everything (HF_DEBUG: requests as curl commands) for this test."""
    monkeypatch.setattr(constants, "HF_DEBUG", True)
    levels = transformers_logging.get_verbosity(), hub_logging.get_verbosity()
    transformers_logging.set_verbosity_debug()
    hub_logging.set_verbosity_debug()
    yield
    transformers_logging.set_verbosity(levels[0])
    hub_logging.set_verbosity(levels[1])


def _assert_token_only_in_auth_headers(server, *captured: str):
    for request in server.requests:
        assert TOKEN.encode() not in request.body, request.path
        leaks = [name for name, value in request.headers.items() if TOKEN in value and name != "authorization"]
        assert not leaks, (request.path, leaks)
    for repo in server.repos.values():
        for sha, _ in repo.history:
            for path, content in repo.commits[sha].items():
                assert TOKEN.encode() not in content, f"token in {repo.repo_id}@{sha[:8]}/{path}"
    for text in captured:
        assert TOKEN not in text


def test_push_then_load_in_fresh_process(hub_server, tmp_path, make_image, debug_logs, capfd):
    model, processor = tiny_model_and_processor("llava_onevision")
    paths = [str(tmp_path / "wide.png"), str(tmp_path / "square.png")]
    make_image(20, 50, seed=1).save(paths[0])
    make_image(32, 32, seed=2).save(paths[1])
    expected = model.encode(texts=["what colour is it?", None], images=paths, instruction=INSTRUCTION)
    expected_text = model.encode(texts=["a red car"])

    # A stale shard from an earlier push would shadow the new single-file weights: the push must delete it.
    repo_id = f"{USER}/llave-tiny"
    from huggingface_hub import HfApi

    api = HfApi(token=TOKEN)
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"stale", path_in_repo="model-00001-of-00002.safetensors", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"keep", path_in_repo="last-checkpoint/optimizer.pt", repo_id=repo_id)

    commit = push_to_hub(
        model, processor, "llave-tiny", token=TOKEN, base_model="lmms-lab/llava-onevision-qwen2-0.5b-ov",
        training_args=TRAINING, eval_results=EVAL,
    )  # fmt: skip
    assert commit.oid == hub_server.repos[repo_id].branches["main"]
    files = hub_server.files(repo_id)
    assert CODE_FILES | {"README.md", "config.json", "model.safetensors", "requirements.txt"} <= set(files)
    assert "model-00001-of-00002.safetensors" not in files and "last-checkpoint/optimizer.pt" in files
    assert not any(path.endswith(".bin") for path in files)
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_llave.LlaveEmbeddingModel"

    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        from huggingface_hub import snapshot_download
        from transformers import AutoModel, AutoProcessor

        repo_id, instruction, paths_json, out = sys.argv[1:]
        paths = json.loads(paths_json)
        model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        texts = ["what colour is it?", None]
        encoded = model.encode(texts=texts, images=paths, instruction=instruction, processor=processor).tolist()

        # The endpoint server downloads the repository and imports handler.py from it.
        folder = snapshot_download(repo_id)
        spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
        handler = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler)
        endpoint = handler.EndpointHandler(folder)
        image = lambda path: __import__("base64").b64encode(open(path, "rb").read()).decode()
        request = {
            "inputs": [
                {"text": "what colour is it?", "image": image(paths[0]), "instruction": instruction},
                {"image": "data:image/png;base64," + image(paths[1]), "instruction": instruction},
                "a red car",
            ],
            "parameters": {"batch_size": 2},
        }
        served = endpoint(request)
        assert "llave_hf" not in sys.modules
        json.dump({"encoded": encoded, "served": served}, open(out, "w"))
        """
    )
    out = tmp_path / "out.json"
    env = {**os.environ, "HF_TOKEN": TOKEN, "PYTHONPATH": ""}  # a private repo: the loader authenticates
    subprocess.run(
        [sys.executable, "-c", script, repo_id, INSTRUCTION, json.dumps(paths), str(out)],
        check=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    result = json.loads(out.read_text())
    torch.testing.assert_close(torch.tensor(result["encoded"]), expected, rtol=0, atol=1e-6)
    served = torch.tensor(result["served"])
    torch.testing.assert_close(served[:2], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(served[2:], expected_text, rtol=0, atol=1e-6)
    # The subprocess authenticated with the token, and only ever sent it in the Authorization header.
    assert any(request.headers.get("authorization") == f"Bearer {TOKEN}" for request in hub_server.requests)
    _assert_token_only_in_auth_headers(hub_server, *capfd.readouterr())


def test_card_renders_validates_and_parses_back(hub_server, tmp_path):
    model, _ = tiny_model_and_processor("qwen2")
    widget = [{"text": "a dog", "example_title": "Caption", "output": {"text": "[0.1, ...] (64 dims)"}}]
    card = render_model_card(
        model, repo_id=f"{USER}/llave-card", base_model="zhibinlan/LLaVE-0.5B", datasets=["TIGER-Lab/MMEB-train"],
        tags=["custom"], training_args={**TRAINING, "hub_token": TOKEN}, eval_results=EVAL, widget=widget,
    )  # fmt: skip
    card.validate()  # the test Hub parses the metadata strictly (ModelCardData, model-index)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == PIPELINE_TAG
    assert data["base_model"] == "zhibinlan/LLaVE-0.5B" and data["datasets"] == ["TIGER-Lab/MMEB-train"]
    assert data["license"] == "apache-2.0" and {"llave", "custom"} <= set(data["tags"])
    assert data["widget"] == widget
    assert ModelCardData(**data).to_dict() == data

    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "llave-card"
    by_config = {result.dataset_config: result for result in results if result.dataset_config}
    assert set(by_config) == {"ImageNet-1K", "N24News", "MSCOCO", "RefCOCO"}  # not the custom Emoji_t2i
    assert (
        by_config["ImageNet-1K"].metric_value == 77.1
        and by_config["ImageNet-1K"].dataset_type == "TIGER-Lab/MMEB-eval"
    )
    aggregates = {result.metric_type: result.metric_value for result in results if not result.dataset_config}
    assert aggregates["precision_at_1_overall"] == round(100 * (0.771 + 0.821 + 0.87 + 0.954) / 4, 1)
    assert aggregates["precision_at_1_grounding"] == round(100 * (0.87 + 0.954) / 2, 1)

    text = loaded.text
    assert f'AutoModel.from_pretrained("{USER}/llave-card", trust_remote_code=True)' in text
    assert "| `loss_alpha` | `9.0` |" in text and "hub_token" not in text and TOKEN not in text
    assert "| Emoji_t2i | other | - | 50.0 |" in text and "| ImageNet-1K | Classification | IND | 77.1 |" in text
    assert "arXiv" in text and "2503.04812" in text and "Findings of the Association for Computational" in text
    assert "title     = {{LLaVE}: Large Language and Vision Embedding Models" in text
    citation = text.split("## Citation")[1]
    assert "pages" not in citation and "doi" not in citation  # nothing that we could not check
    assert "the assistant turn is a lone `\\n`" in text  # LLAVE_PROMPT_TEMPLATE's assistant turn
    assert "(`pipeline_tag`) is `feature-extraction`\nbecause" in text

    bare = render_model_card(model)  # nothing known: no model-index, no tables
    assert "model-index" not in bare.data.to_dict() and "not recorded" in bare.text

    # An MMEBEvaluator's results: the card reads only their Precision@1 per dataset.
    evaluator_results = EvaluationResults({"VOC2007": SimpleNamespace(precision_at_1=0.903)})
    assert "| VOC2007 | Classification | IND | 90.3 |" in render_model_card(model, eval_results=evaluator_results).text
    # Per-dataset result objects or dicts are not P@1 values: a clear error, not a broken table.
    with pytest.raises(TypeError, match=r"eval_results\['datasets'\] must be a Precision@1 fraction"):
        render_model_card(model, eval_results={"datasets": {"VOC2007": {"precision_at_1": 0.903}}})
    # The test Hub rejects metadata that the Hub could not parse.
    broken = {"content": "---\nmodel-index: [{results: [{task: 1}]}]\n---\ntext", "repoType": "model"}
    response = get_session().post(f"{hub_server.endpoint}/api/validate-yaml", json=broken)
    assert response.status_code == 400 and "model_index" in response.json()["errors"][0]["message"]


def test_training_settings_keep_local_paths_off_the_card(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert training_settings(args)["deepspeed"] is False
    # Set after construction: TrainingArguments would start DeepSpeed's config handling.
    config = tmp_path / "ds_zero3.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    for deepspeed, shown in [
        (str(config), "ZeRO-3"),
        ({"zero_optimization": {"stage": 2}}, "ZeRO-2"),
        ("/home/alice/secret-project/ds_config.json", "ds_config.json"),  # not readable here: its name only
        ({"train_batch_size": "auto"}, True),
    ]:
        args.deepspeed = deepspeed
        assert training_settings(args)["deepspeed"] == shown


def test_handler_matches_encode(endpoint, make_image):
    model, _, handler = endpoint
    images = [make_image(20, 50, seed=3), make_image(32, 32, seed=4)]
    request = {
        "inputs": [
            "a red car",
            {"image": _png_base64(images[0]), "instruction": INSTRUCTION},
            {"text": "what?", "image": "data:image/png;base64," + _png_base64(images[1]), "instruction": INSTRUCTION},
            {"text": "a blue bus"},
        ],
        "parameters": {"instruction": CAPTION_INSTRUCTION, "batch_size": 3},
    }
    served = torch.tensor(handler(request))
    captions = model.encode(texts=["a red car", "a blue bus"], instruction=CAPTION_INSTRUCTION)
    torch.testing.assert_close(served[[0, 3]], captions, rtol=0, atol=1e-6)
    pictures = model.encode(texts=[None, "what?"], images=images, instruction=INSTRUCTION)
    torch.testing.assert_close(served[[1, 2]], pictures, rtol=0, atol=1e-6)

    single = handler({"inputs": {"text": "a red car"}})
    assert len(single) == 1 and all(isinstance(value, float) for value in single[0])
    torch.testing.assert_close(torch.tensor(single), model.encode(texts=["a red car"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(handler({"inputs": "a red car"})), torch.tensor(single), rtol=0, atol=0)


@pytest.mark.parametrize(
    "request_body, message",
    [
        ({"text": "a"}, 'must be a JSON object with an "inputs" field'),
        ({"inputs": []}, "non-empty list"),
        ({"inputs": "a", "options": {}}, "Unknown request field"),
        ({"inputs": "a", "parameters": {"batch_size": 0}}, "batch_size must be a positive integer"),
        ({"inputs": "a", "parameters": {"normalize": True}}, r"Unknown parameter\(s\) normalize"),
        ({"inputs": ["a", 3]}, r"inputs\[1\]: an item must be a string or an object"),
        ({"inputs": ["a", {"img": "x"}]}, r"inputs\[1\]: unknown field\(s\) img"),
        ({"inputs": [{"text": ""}]}, r"inputs\[0\]: nothing to embed"),
        ({"inputs": [{"text": 1}]}, r"inputs\[0\]: `text` must be a string"),
        ({"inputs": ["a", {"image": "not base64!"}]}, r"inputs\[1\]: `image` is not valid base64"),
        ({"inputs": {"image": base64.b64encode(b"hello").decode()}}, "inputs: `image` does not decode to an image"),
        ({"inputs": ["a", "b", "<|image_1|> what is this?"]}, r"inputs\[2\]: the text contains the image placeholder"),
    ],
)
def test_handler_rejects_bad_requests_naming_the_item(endpoint, request_body, message):
    _, _, handler = endpoint
    with pytest.raises(ValueError, match=message):
        handler(request_body)


@pytest.mark.parametrize("fault", ["forward", "encode"])
def test_handler_reports_model_faults_as_server_errors(endpoint, monkeypatch, fault):
    _, _, handler = endpoint
    model, size = handler.model, handler.model.config.hidden_size
    if fault == "forward":  # encode() finds the NaN itself and raises NonFiniteEmbeddingError, a RuntimeError

        def nan_forward(input_ids, **inputs):
            return SimpleNamespace(embeddings=torch.full((len(input_ids), size), torch.nan))

        monkeypatch.setattr(model, "forward", nan_forward)
    else:  # an encode that returns NaN without complaint
        monkeypatch.setattr(model, "encode", lambda texts, **kwargs: [[math.nan] * size for _ in texts])
    with pytest.raises(RuntimeError, match=r"non-finite embedding for inputs\[[01]\]") as fault_error:
        handler({"inputs": ["a red car", "a blue bus"]})
    # The checkpoint's own exception type reaches the server, not a RuntimeError made from its message.
    expected_type = "NonFiniteEmbeddingError" if fault == "forward" else "RuntimeError"
    assert type(fault_error.value).__name__ == expected_type
    with pytest.raises(ValueError, match=r"inputs\[0\]: nothing to embed"):  # request errors stay ValueError (400)
        handler({"inputs": [{"text": ""}]})


@dataclasses.dataclass
class _Arguments(TokenRedactingArgumentsMixin, TrainingArguments):
    loss_alpha: float = 9.0


class _Trainer(HubPublishMixin, Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        embeddings = model(**inputs).embeddings
        return -(embeddings[0::2] * embeddings[1::2]).sum(dim=-1).mean()  # any differentiable scalar


def test_trainer_pushes_carry_card_code_and_handler(hub_server, tmp_path, debug_logs, capfd):
    model, processor = tiny_model_and_processor("llava_onevision")
    texts = ["a red car", "a blue bus", "a green tree", "a yellow house"]
    args = _Arguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        save_strategy="steps", save_steps=1, push_to_hub=True, hub_model_id="llave-trainer", hub_token=TOKEN,
        hub_strategy="every_save", remove_unused_columns=False, report_to="none", use_cpu=True, logging_steps=1,
    )  # fmt: skip
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=[{"text": text} for text in texts],
        data_collator=lambda features: processor(text=[feature["text"] for feature in features]),
        processing_class=processor,
        hub_card_kwargs={"base_model": "lmms-lab/llava-onevision-qwen2-0.5b-ov", "eval_results": EVAL},
    )
    trainer.train()
    trainer.push_to_hub(tags=["final"])  # changes the card, so that the final push makes a commit

    repo = hub_server.repos[f"{USER}/llave-trainer"]
    messages = [message for _, message in repo.history]
    assert "Training in progress, step 1" in messages and messages[-1] == "End of training"
    for sha, message in repo.history[1:]:
        files = repo.commits[sha]
        assert CODE_FILES | {"README.md", "config.json", "model.safetensors", "requirements.txt"} <= set(files), (
            message
        )
        card = ModelCard(files["README.md"].decode())
        assert (
            card.data.pipeline_tag == PIPELINE_TAG and card.data.base_model == "lmms-lab/llava-onevision-qwen2-0.5b-ov"
        )
        assert "| `loss_alpha` | `9.0` |" in card.text and "| `learning_rate` | `0.001` |" in card.text, message
        assert "| `total_train_batch_size` | `4` |" in card.text
        assert files["handler.py"] == (tmp_path / "run" / "handler.py").read_bytes()
        assert files["modeling_llave.py"] == (tmp_path / "run" / "modeling_llave.py").read_bytes()
        assert card.data.widget and card.data.widget[0]["output"]["text"].endswith("(64 dims)")
    assert "final" in ModelCard(hub_server.files(repo.repo_id)["README.md"].decode()).data.tags
    assert args.hub_token == TOKEN  # still usable in memory
    _assert_token_only_in_auth_headers(hub_server, *capfd.readouterr())


def test_trainer_refuses_a_token_it_would_pickle(tmp_path):
    model, processor = tiny_model_and_processor("qwen2")
    args = TrainingArguments(output_dir=str(tmp_path), hub_token=TOKEN, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="hub_token would be saved in training_args.bin"):
        _Trainer(model=model, args=args, processing_class=processor)


def test_save_for_hub_refuses_a_non_empty_folder(endpoint):
    model, folder, _ = endpoint
    with pytest.raises(ValueError, match="is not empty"):
        save_for_hub(model, None, folder)
