import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmeb_fixtures import FakeEncoder, make_mmeb_eval_fixture
from torchrun import torchrun
from trainer_fixtures import SGD_COMPARISON, TinyCollator, rows, tiny_training_args
from transformers import BatchFeature

from llave_hf.collator import ContrastiveBatch
from llave_hf.evaluation import MMEBEvaluator
from llave_hf.grad_cache import grad_cache_backward, slice_rows
from llave_hf.loss import HardnessNormalization, LossDiagnostics, hardness_weighted_contrastive_loss
from llave_hf.modeling.modeling_llave import NonFiniteEmbeddingError
from llave_hf.testing import tiny_model_and_processor
from llave_hf.trainer import ContrastiveTrainer


WORKER = os.path.join(os.path.dirname(__file__), "distributed_workers", "trainer_worker.py")
STEPS = 2  # as in tiny_training_args and the worker


def _args(tmp_path, **overrides):
    return tiny_training_args(str(tmp_path / "out"), **overrides)


def _train(tmp_path, family, batch_rows, **overrides):
    model, processor = tiny_model_and_processor(family, seed=0)
    trainer = ContrastiveTrainer(
        model=model,
        args=_args(tmp_path, **overrides),
        train_dataset=batch_rows,
        data_collator=TinyCollator(processor),
        processing_class=processor,
    )
    trainer.train()
    return trainer


def _loss_fn(size, negatives):
    def loss(embeddings):
        hard = embeddings[2 * size :].view(size, negatives, -1) if negatives else None
        return hardness_weighted_contrastive_loss(
            embeddings[:size], embeddings[size : 2 * size], hard_negatives=hard
        ).loss

    return loss


def _gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_gradients_close(actual, expected):
    assert actual.keys() == expected.keys() and expected
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


# ------------------------------------------------------------------------------------------------------------------
# GradCache, one process


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl", "qwen3_vl"])
def test_grad_cache_equals_uncached_step_with_dropout(family):
    """Dropout on: GradCache must replay each chunk's RNG to reproduce the uncached step's gradients."""
    model, processor = tiny_model_and_processor(family, attention_dropout=0.3)
    model.train()
    batch = TinyCollator(processor)(rows(6, negatives=1))
    inputs, loss_fn = batch.inputs, _loss_fn(6, 1)
    config = model.config.backbone_config
    rows_total, chunk = inputs["input_ids"].shape[0], 5

    # uncached reference: the same chunks encoded with their graphs kept, one backward through everything
    torch.manual_seed(0)
    embeddings = torch.cat(
        [
            model(**slice_rows(inputs, s, min(s + chunk, rows_total), config)).embeddings
            for s in range(0, rows_total, chunk)
        ]
    )
    expected_loss = loss_fn(embeddings)
    expected_loss.backward()
    expected = _gradients(model)
    after_uncached = torch.get_rng_state()

    model.zero_grad()
    torch.manual_seed(0)
    loss = grad_cache_backward(model, inputs, chunk, loss_fn, backward=torch.Tensor.backward, backbone_config=config)
    torch.testing.assert_close(loss, expected_loss.detach())
    _assert_gradients_close(_gradients(model), expected)
    assert torch.equal(torch.get_rng_state(), after_uncached)

    # the replay matters: other dropout masks give other gradients
    model.zero_grad()
    torch.manual_seed(1)
    grad_cache_backward(model, inputs, chunk, loss_fn, backward=torch.Tensor.backward, backbone_config=config)
    assert any(not torch.allclose(_gradients(model)[n], expected[n], atol=1e-5) for n in expected)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl", "qwen3_vl", "llava"])
def test_grad_cache_equals_one_big_forward_without_dropout(family):
    model, processor = tiny_model_and_processor(family)
    batch = TinyCollator(processor)(rows(6, negatives=2))
    inputs, loss_fn = batch.inputs, _loss_fn(6, 2)
    loss_fn(model(**inputs).embeddings).backward()
    expected = _gradients(model)
    model.zero_grad()
    grad_cache_backward(model, inputs, 4, loss_fn, torch.Tensor.backward, backbone_config=model.config.backbone_config)
    _assert_gradients_close(_gradients(model), expected)


def test_slice_rows_keeps_each_rows_image(make_image):
    model, processor = tiny_model_and_processor("qwen2_vl")
    texts = ["a", None, "b", None]
    images = [None, make_image(20, 50, seed=1), None, make_image(32, 32, seed=2)]
    inputs = processor(text=texts, images=images)
    config = model.config.backbone_config
    with torch.no_grad():
        whole = model(**inputs).embeddings
        parts = torch.cat([model(**slice_rows(inputs, s, s + 1, config)).embeddings for s in range(4)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=2e-5)


# ------------------------------------------------------------------------------------------------------------------
# ContrastiveTrainer, one process


def test_compute_loss_is_the_loss_of_the_embeddings(tmp_path):
    model, processor = tiny_model_and_processor("llava_onevision")
    trainer = ContrastiveTrainer(model=model, args=_args(tmp_path), data_collator=TinyCollator(processor))
    batch = TinyCollator(processor)(rows(4, negatives=1))
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        embeddings = model(**batch.inputs).embeddings
    q, t, n = embeddings[:4], embeddings[4:8], embeddings[8:].view(4, 1, -1)
    expected = hardness_weighted_contrastive_loss(
        q, t, hard_negatives=n, query_ids=batch.query_ids, target_ids=batch.target_ids,
        hard_negative_ids=batch.negative_ids,
    )  # fmt: skip
    torch.testing.assert_close(loss, expected.loss)


def test_gradient_accumulation_averages_micro_batch_gradients(tmp_path):
    """GA=2 over two batches must apply the mean of their gradients (SGD, lr 1: the update is the gradient)."""
    data = rows(8, with_images=False)
    trainer = _train(
        tmp_path, "qwen2", data, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=1,
        optim="sgd", learning_rate=1.0, loss_mask_false_negatives=False,
    )  # fmt: skip
    model, processor = tiny_model_and_processor("qwen2", seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    collate = TinyCollator(processor)
    for part in (data[:4], data[4:]):
        batch = collate(part)
        (_loss_fn(4, 0)(model(**batch.inputs).embeddings) / 2).backward()
    for name, parameter in trainer.model.named_parameters():
        expected = before[name] - model.get_parameter(name).grad
        torch.testing.assert_close(parameter.detach(), expected, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("limit", [{"max_steps": 2}, {"max_steps": -1, "num_train_epochs": 1}])
def test_data_smaller_than_one_global_batch_is_an_error_stating_the_numbers(tmp_path, limit):
    """2 rows, batch 4, drop_last: no full batch, so 0 steps would run and an untrained model be saved."""
    match = (
        r"2 training rows, fewer than one global batch: per_device_train_batch_size=4 x 1 process\(es\) = 4 rows, "
        r"and dataloader_drop_last=True"
    )
    with pytest.raises(ValueError, match=match):
        _train(tmp_path, "qwen2", rows(2, with_images=False), per_device_train_batch_size=4, **limit)
    # without drop_last the incomplete batch trains
    trainer = _train(
        tmp_path, "qwen2", rows(2, with_images=False), per_device_train_batch_size=4, dataloader_drop_last=False,
        **limit,
    )  # fmt: skip
    assert trainer.state.global_step >= 1


def test_trainer_logs_diagnostics_and_evaluates_without_labels(tmp_path):
    data = rows(12, negatives=1)
    trainer = _train(tmp_path, "llava_onevision", data, per_device_train_batch_size=4, max_steps=3)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3
    for entry in logged:
        assert LossDiagnostics.NAMES == (
            "positive_cosine", "hardest_negative_cosine", "cosine_gap", "top1_accuracy", "mean_hardness_weight",
            "hard_negative_gradient_share",
        )  # fmt: skip
        for key in LossDiagnostics.NAMES:
            assert key in entry and entry[key] == entry[key]  # present and not NaN
        assert entry["collapse"] == 0.0
    assert trainer.state.total_flos > 0  # floating_point_ops reads the batch's model inputs
    metrics = trainer.evaluate(eval_dataset=data[:8])
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))


def test_freeze_vision_tower_keeps_the_projector_trainable():
    for family, projector in (
        ("llava_onevision", "multi_modal_projector"),
        ("qwen2_vl", "visual.merger"),
        ("qwen3_vl", "visual.merger"),
        ("qwen3_vl", "visual.deepstack_merger_list"),  # Qwen3-VL's second projector path
    ):
        model, _ = tiny_model_and_processor(family)
        assert model.freeze_vision_tower() > 0
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert any(projector in n for n in trainable)
        assert not any(("vision_tower" in n or "visual.blocks" in n or "patch_embed" in n) for n in trainable)
        assert any("language_model" in n for n in trainable)


def test_arguments_validate(tmp_path):
    with pytest.raises(ValueError, match="loss_hardness_normalization must be one of 'none', 'mean', got 'max'"):
        _args(tmp_path, loss_hardness_normalization="max")
    assert _args(tmp_path, loss_hardness_normalization="mean").loss_hardness_normalization == HardnessNormalization.MEAN
    for option in ("split_batches", "dispatch_batches"):
        with pytest.raises(ValueError, match="would slice a contrastive batch's rows"):
            _args(tmp_path, accelerator_config={option: True})
    with pytest.raises(ValueError, match="GradCache .* does not run under DeepSpeed"):
        _args(tmp_path, grad_cache_chunk_size=4, deepspeed={"zero_optimization": {"stage": 2}})
    args = _args(tmp_path, activation_checkpointing=True)
    assert args.ddp_find_unused_parameters and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert args.remove_unused_columns is False
    # a negative α would push the hardest negatives away least: a sign slip, refused with what it means
    for alpha in (-9.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="loss_alpha must be a finite number >= 0.*hardest negatives"):
            _args(tmp_path, loss_alpha=alpha)
    assert _args(tmp_path, loss_alpha=0.0).loss_alpha == 0.0
    with pytest.raises(ValueError, match="loss_alpha_warmup_steps must be >= 0, got -1"):
        _args(tmp_path, loss_alpha_warmup_steps=-1)


def test_loss_alpha_warmup_schedule_by_hand(tmp_path):
    """α · min(1, global_step / N): the first optimizer step (global_step 0) trains with 0, step N+1 with α."""
    args = _args(tmp_path, loss_alpha=9.0, loss_alpha_warmup_steps=4)
    assert [args.loss_alpha_at(step) for step in range(7)] == [0.0, 2.25, 4.5, 6.75, 9.0, 9.0, 9.0]
    assert [_args(tmp_path, loss_alpha=9.0).loss_alpha_at(step) for step in (0, 1, 100)] == [9.0, 9.0, 9.0]


def test_loss_alpha_warmup_reaches_the_grad_cache_loss_and_resumes_exactly(tmp_path, monkeypatch):
    """Each micro-batch's loss gets the α of its optimizer step, through GradCache with 2 accumulation steps, and
    is logged; a run interrupted after step 2 and resumed uses the same α per step and ends with the same weights
    (SGD: a different α changes the update)."""
    alphas = []

    def recording_loss(*args, alpha, **kwargs):
        alphas.append(alpha)
        return hardness_weighted_contrastive_loss(*args, alpha=alpha, **kwargs)

    monkeypatch.setattr("llave_hf.trainer.hardness_weighted_contrastive_loss", recording_loss)
    data = rows(8, with_images=False)  # 2 optimizer steps of 2 micro-batches of 2 per epoch
    options = dict(
        per_device_train_batch_size=2, gradient_accumulation_steps=2, grad_cache_chunk_size=1, loss_alpha=9.0,
        loss_alpha_warmup_steps=2, **SGD_COMPARISON,
    )  # fmt: skip

    def train(output_dir, max_steps, resume=None, **saving):
        model, processor = tiny_model_and_processor("qwen2", seed=0)
        trainer = ContrastiveTrainer(
            model=model,
            args=tiny_training_args(str(output_dir), **options, max_steps=max_steps, **saving),
            train_dataset=data,
            data_collator=TinyCollator(processor),
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    per_step = [0.0, 4.5, 9.0, 9.0]  # 9 · min(1, global_step / 2) for global_step 0..3
    full = train(tmp_path / "full", 4)
    assert alphas == [alpha for alpha in per_step for _ in range(2)]
    assert [entry["loss_alpha"] for entry in full.state.log_history if "loss" in entry] == per_step

    alphas.clear()
    train(tmp_path / "split", 2, save_strategy="steps", save_steps=2)
    resumed = train(tmp_path / "split", 4, resume=str(tmp_path / "split" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    assert alphas == [alpha for alpha in per_step for _ in range(2)]
    assert [entry["loss_alpha"] for entry in resumed.state.log_history if "loss" in entry] == per_step
    at_interruption = type(full.model).from_pretrained(tmp_path / "split" / "checkpoint-2")
    expected = dict(full.model.named_parameters())
    assert any(
        not torch.allclose(parameter, expected[name], atol=1e-4) for name, parameter in at_interruption.named_parameters()
    ), "vacuous test"
    for name, parameter in resumed.model.named_parameters():
        torch.testing.assert_close(parameter, expected[name], rtol=0, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------------------------------
# two processes (gloo on CPU) against one process on the concatenated batch


def _torchrun(tmp_path, *runs, timeout=600):
    torchrun(WORKER, tmp_path, *runs, timeout=timeout)
    return {run.split(":")[0]: torch.load(tmp_path / f"{run.split(':')[0]}.pt") for run in runs}


def _assert_params_close(actual, expected, atol=1e-5):
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=atol, msg=name)


def _assert_moved(trained: dict, family: str = "llava_onevision", min_change: float = 1e-3):
    """The SGD runs compared must move some parameters well beyond the tolerances, or a doubled gradient (a change
    of the same size again) could hide under them."""
    initial, _ = tiny_model_and_processor(family, seed=0)
    change = max((value - trained[name]).abs().max().item() for name, value in initial.state_dict().items())
    assert change > min_change, f"training moved the parameters by {change:.1e}: the comparison would be vacuous"


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    """DDP with the differentiable gather, uncached and GradCache, for LLaVA-OneVision, Qwen2-VL and Qwen3-VL."""
    results = _torchrun(
        tmp_path, "ddp:llava_onevision:3:0:0", "gc:llava_onevision:3:2:0", "gcq:qwen2_vl:3:2:0", "gcq3:qwen3_vl:3:2:0"
    )
    one = _train(
        tmp_path, "llava_onevision", rows(6 * STEPS, negatives=1), per_device_train_batch_size=6, **SGD_COMPARISON
    )
    one_params = {k: v.detach() for k, v in one.model.state_dict().items()}
    _assert_moved(one_params)
    _assert_params_close(results["ddp"]["params"], one_params)
    _assert_params_close(results["gc"]["params"], one_params)
    one_losses = [e["loss"] for e in one.state.log_history if "loss" in e]
    two_losses = [e["loss"] for e in results["ddp"]["logs"] if "loss" in e]
    torch.testing.assert_close(torch.tensor(two_losses), torch.tensor(one_losses), rtol=1e-5, atol=1e-6)

    one_qwen = _train(
        tmp_path, "qwen2_vl", rows(6 * STEPS, negatives=1), per_device_train_batch_size=6, grad_cache_chunk_size=4,
        **SGD_COMPARISON,
    )  # fmt: skip
    _assert_params_close(results["gcq"]["params"], {k: v.detach() for k, v in one_qwen.model.state_dict().items()})
    one_qwen3 = _train(
        tmp_path, "qwen3_vl", rows(6 * STEPS, negatives=1), per_device_train_batch_size=6, grad_cache_chunk_size=4,
        **SGD_COMPARISON,
    )  # fmt: skip
    _assert_params_close(results["gcq3"]["params"], {k: v.detach() for k, v in one_qwen3.model.state_dict().items()})


@pytest.mark.slow
def test_deepspeed_zero2_runs_contrastive_steps_on_cpu(tmp_path):
    pytest.importorskip("deepspeed")
    results = _torchrun(tmp_path, "zero2:llava_onevision:3:0:2", timeout=900)
    losses = [e["loss"] for e in results["zero2"]["logs"] if "loss" in e]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
    # ZeRO-2 in float32 shards optimizer state only: it must train like DDP on the same data
    one = _train(
        tmp_path, "llava_onevision", rows(6 * STEPS, negatives=1), per_device_train_batch_size=6, **SGD_COMPARISON
    )
    one_params = {k: v.detach() for k, v in one.model.state_dict().items()}
    _assert_moved(one_params)
    _assert_params_close(results["zero2"]["params"], one_params, 1e-4)


def test_activation_checkpointing_gives_the_same_step(tmp_path):
    data = rows(8, negatives=0)
    plain = _train(tmp_path / "plain", "llava_onevision", data, per_device_train_batch_size=4, max_steps=2)
    checkpointed = _train(
        tmp_path / "ckpt", "llava_onevision", data, per_device_train_batch_size=4, max_steps=2,
        activation_checkpointing=True,
    )  # fmt: skip
    assert checkpointed.model.backbone.language_model.is_gradient_checkpointing
    expected = dict(plain.model.named_parameters())
    for name, parameter in checkpointed.model.named_parameters():
        torch.testing.assert_close(parameter, expected[name], rtol=0, atol=1e-6, msg=name)


def test_loss_options_reach_the_loss(tmp_path):
    model, processor = tiny_model_and_processor("llava_onevision")
    args = _args(
        tmp_path, loss_hardness_normalization="mean", loss_symmetric=False, loss_alpha=4.0, loss_temperature=0.1
    )
    trainer = ContrastiveTrainer(model=model, args=args, data_collator=TinyCollator(processor))
    batch = TinyCollator(processor)(rows(4, negatives=1))
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        embeddings = model(**batch.inputs).embeddings
    expected = hardness_weighted_contrastive_loss(
        embeddings[:4], embeddings[4:8], alpha=4.0, temperature=0.1, symmetric=False,
        hard_negatives=embeddings[8:].view(4, 1, -1), hardness_normalization="mean", query_ids=batch.query_ids,
        target_ids=batch.target_ids, hard_negative_ids=batch.negative_ids,
    )  # fmt: skip
    torch.testing.assert_close(loss, expected.loss)


@pytest.mark.parametrize(
    "options, advises_mean",
    [({}, True), ({"loss_hardness_normalization": "mean"}, False), ({"loss_alpha": 0.0}, False)],
)
def test_collapse_is_flagged_and_warned(tmp_path, caplog, options, advises_mean):
    model, processor = tiny_model_and_processor("qwen2")
    args = _args(tmp_path, **options)
    trainer = ContrastiveTrainer(model=model, args=args, data_collator=TinyCollator(processor))
    # one step's diagnostics: positive 0.999, hardest negative 0.9989, gap 1e-4, top-1 0, weight e^9, share 0.5
    values = dict(zip(LossDiagnostics.NAMES, (0.999, 0.9989, 1e-4, 0.0, 8100.0, 0.5), strict=True))
    trainer._accumulate(torch.ones(4, 8), LossDiagnostics(**{k: torch.tensor(v) for k, v in values.items()}))
    with caplog.at_level("WARNING"):
        trainer.log({"loss": 0.1})
    logged = trainer.state.log_history[-1]
    assert logged["collapse"] == 1.0 and logged["cosine_gap"] == 1e-4
    assert "look collapsed" in caplog.text
    # the degenerate minimum and its remedy belong to unnormalised weights with α > 0 only
    assert ("try loss_hardness_normalization='mean'" in caplog.text) == advises_mean
    assert ("no degenerate minimum" in caplog.text) != advises_mean


def test_non_finite_embeddings_raise_when_logging_naming_the_steps(tmp_path):
    """The check runs on the device every step and is read at the next log (logging_steps 2: at step 2)."""
    model, processor = tiny_model_and_processor("qwen2", seed=0)
    calls = []

    def poison_second_forward(module, inputs, output):
        calls.append(1)
        if len(calls) == 2:
            first_three = torch.arange(len(output.embeddings))[:, None] < 3
            output.embeddings = output.embeddings.masked_fill(first_three, float("nan"))
        return output

    model.register_forward_hook(poison_second_forward)
    trainer = ContrastiveTrainer(
        model=model,
        args=_args(tmp_path, per_device_train_batch_size=4, max_steps=4, logging_steps=2),
        train_dataset=rows(16, with_images=False),
        data_collator=TinyCollator(processor),
    )
    with pytest.raises(NonFiniteEmbeddingError, match=r"^3 non-finite \(NaN or inf\) training embedding row\(s\) "
                       r"between steps 1 and 2"):  # fmt: skip
        trainer.train()
    assert len(calls) == 2  # raised at the first log, not after the run


def test_training_loss_does_not_read_device_values_on_the_host(tmp_path, monkeypatch):
    """No device-to-host sync per step: the loss and the diagnostics' accumulation never read a tensor's value."""
    model, processor = tiny_model_and_processor("llava_onevision")
    trainer = ContrastiveTrainer(model=model, args=_args(tmp_path), data_collator=TinyCollator(processor))
    batch = TinyCollator(processor)(rows(4, negatives=1))
    embeddings = model(**batch.inputs).embeddings.detach()
    model.train()  # diagnostics accumulate for training steps

    def host_read(tensor, *args, **kwargs):
        raise AssertionError("a device value was read on the host")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, host_read)
        for _ in range(2):
            trainer._loss(embeddings, batch)
    trainer.log({"loss": 0.5})
    assert 0.0 <= trainer.state.log_history[-1]["top1_accuracy"] <= 1.0


# ------------------------------------------------------------------------------------------------------------------
# evaluator


class FakeEmbeddingModel(torch.nn.Module):
    """Trains under ContrastiveTrainer (embeddings: a linear map of each row's `features`) and encodes with
    FakeEncoder, whose retrieval scores on the MMEB-eval fixture are known; records its mode at each encode."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 8)
        self.fake = FakeEncoder()
        self.modes = []

    def forward(self, features):
        return SimpleNamespace(embeddings=F.normalize(self.linear(features), dim=-1))

    def encode(self, texts, images, **kwargs):
        self.modes.append(self.training)
        return self.fake(texts, images)


def _feature_batch(items: list[dict]) -> ContrastiveBatch:
    features = torch.stack([item["query"] for item in items] + [item["target"] for item in items])
    ids = torch.arange(len(items))
    return ContrastiveBatch(BatchFeature({"features": features}), len(items), 0, query_ids=ids, target_ids=ids)


def test_trainer_evaluator_logs_p1(tmp_path):
    data_dir = make_mmeb_eval_fixture(tmp_path / "mmeb")
    model = FakeEmbeddingModel()
    generator = torch.Generator().manual_seed(0)
    train = [{"query": torch.randn(4, generator=generator), "target": torch.randn(4, generator=generator)}] * 8
    args = _args(
        tmp_path, max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=0.1,
        eval_strategy="steps", eval_steps=1, metric_for_best_model="ImageNet-1K_p@1", freeze_vision_tower=False,
    )  # fmt: skip
    evaluator = MMEBEvaluator(data_dir, datasets=["ImageNet-1K"], show_progress_bar=False, keep_in_memory=True)
    # no eval_dataset: the evaluator alone runs at each evaluation
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=train, data_collator=_feature_batch, evaluator=evaluator
    )
    trainer.train()
    key = "eval_ImageNet-1K_p@1"
    logged = [(entry["step"], entry[key]) for entry in trainer.state.log_history if key in entry]
    assert logged == [(1, 0.75), (2, 0.75)]
    assert model.modes == [False, False] and model.training  # eval mode while encoding, then restored
    assert trainer.state.best_metric == 0.75  # metric_for_best_model reads the evaluator's metric

    trainer.evaluator = MMEBEvaluator(data_dir, datasets=["ImageNet-1K", "Emoji_t2i"], show_progress_bar=False)
    metrics = trainer.evaluate()
    assert metrics["eval_ImageNet-1K_p@1"] == 0.75 and metrics["eval_Emoji_t2i_p@1"] == 0.5
    assert metrics["eval_mean_p@1"] == pytest.approx(0.625)
    assert trainer.state.log_history[-1]["eval_mean_p@1"] == pytest.approx(0.625)

    # with an eval dataset: its loss and the evaluator's metrics in one evaluation (one log entry)
    metrics = trainer.evaluate(eval_dataset=train[:4])
    assert metrics["eval_mean_p@1"] == pytest.approx(0.625) and metrics["eval_loss"] > 0
    assert {"eval_loss", "eval_mean_p@1"} <= trainer.state.log_history[-1].keys()


@pytest.mark.slow
def test_torch_compiled_step_equals_eager_step(tmp_path):
    """`torch_compile` (the released recipe compiles with inductor) goes through the Trainer: the compiled model takes
    the same SGD step as the eager one. The backend is aot_eager (TorchDynamo capture and AOTAutograd's joint graph,
    inductor's front end): inductor's C++ code generation takes about 5 minutes for this tiny model on 2 CPU cores."""
    data = rows(8, with_images=False)
    arguments = dict(per_device_train_batch_size=4, max_steps=1, optim="sgd", learning_rate=1.0)
    eager = _train(tmp_path / "eager", "qwen2", data, **arguments)
    compiled = _train(
        tmp_path / "compiled", "qwen2", data, **arguments, torch_compile=True, torch_compile_backend="aot_eager"
    )
    assert isinstance(compiled.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)  # it really compiled
    expected = {name: value.detach() for name, value in eager.model.state_dict().items()}
    _assert_moved(expected, "qwen2")
    actual = compiled.model.state_dict()  # the module the compiled wrapper runs
    assert actual.keys() == expected.keys()
    _assert_params_close(actual, expected, atol=1e-6)
