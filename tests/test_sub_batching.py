"""Length sub-batches inside one forward (`config.sub_batching`): the same embeddings and gradients as one padded
backbone call, for every family, GradCache included."""

import itertools
import random

import pytest
import torch
from trainer_fixtures import colour_image

from llave_hf.grad_cache import grad_cache_backward
from llave_hf.modeling.modeling_llave import length_sub_batches
from llave_hf.testing import FAMILIES, tiny_model_and_processor


def _partitions(items):
    """Every set partition of `items` (the brute-force reference)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1 :]]


def _cost(groups, lengths, overhead):
    return sum(overhead + len(group) * max(lengths[row] for row in group) for group in groups)


@pytest.mark.parametrize("overhead", [0, 7, 40, 1000])
def test_length_sub_batches_is_an_optimal_partition(overhead):
    rng = random.Random(overhead)
    for _ in range(20):
        lengths = [rng.choice([3, 5, 40, 41, 90, 300]) + rng.randrange(4) for _ in range(rng.randint(1, 6))]
        groups = length_sub_batches(lengths, overhead)
        assert sorted(itertools.chain(*groups)) == list(range(len(lengths)))
        assert all(group == sorted(group) for group in groups)
        best = min(_cost(p, lengths, overhead) for p in _partitions(list(range(len(lengths)))))
        assert _cost(groups, lengths, overhead) == best


def _batch(family, processor):
    """Rows of very different lengths, image rows interleaved with text rows (so that a sub-batch's images are not
    consecutive in the batch), images of different sizes and token counts."""
    long_text = "a long caption about a red car parked next to a green tree and a blue house " * 3
    texts = ["dog", long_text, "a red car", "cat", long_text + "again", "a blue house"]
    images = [None] * len(texts)
    if family != "qwen2":
        texts += ["<|image_1|> Represent the given image.", None, "<|image_1|> what colour?", None]
        images += [colour_image(1), colour_image(2), colour_image(3, size=24), colour_image(4)]
    order = [0, 6, 1, 7, 2, 8, 3, 9, 4, 5] if family != "qwen2" else list(range(len(texts)))
    return processor(text=[texts[i] for i in order], images=[images[i] for i in order])


def _embeddings_and_gradients(model, inputs, weights):
    model.zero_grad()
    output = model(**inputs, output_hidden_states=True)
    (output.embeddings * weights).sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output, gradients


@pytest.mark.parametrize("family", FAMILIES)
def test_sub_batched_forward_equals_padded_forward(family):
    model, processor = tiny_model_and_processor(family)
    inputs = _batch(family, processor)
    model.config.sub_batch_overhead_tokens = 0  # as many sub-batches as lengths differ
    calls = []
    model.backbone.register_forward_hook(lambda module, args, kwargs: calls.append(1))
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(inputs["input_ids"].shape[0], model.config.hidden_size, generator=generator)

    model.config.sub_batching = False
    padded, padded_gradients = _embeddings_and_gradients(model, inputs, weights)
    assert len(calls) == 1
    model.config.sub_batching = True
    sub_batched, gradients = _embeddings_and_gradients(model, inputs, weights)
    assert len(calls) > 3  # really split

    torch.testing.assert_close(sub_batched.embeddings, padded.embeddings, rtol=0, atol=2e-5)
    assert gradients.keys() == padded_gradients.keys() and gradients
    for name in gradients:
        torch.testing.assert_close(gradients[name], padded_gradients[name], rtol=1e-4, atol=1e-5, msg=name)
    mask = inputs["attention_mask"].bool()  # right-padded already: real tokens sit where the mask is 1
    torch.testing.assert_close(sub_batched.last_hidden_state[mask], padded.last_hidden_state[mask], rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_grad_cache_with_sub_batches_equals_padded_uncached_step(family):
    model, processor = tiny_model_and_processor(family)
    inputs = _batch(family, processor)
    rows = inputs["input_ids"].shape[0]
    weights = torch.randn(rows, model.config.hidden_size, generator=torch.Generator().manual_seed(1))

    def loss_fn(embeddings):  # depends on all rows at once, as a contrastive loss
        return torch.logsumexp(embeddings @ embeddings.T * 5, dim=1).mean() + (embeddings * weights).sum()

    model.config.sub_batching = False
    loss_fn(model(**inputs).embeddings).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.config.sub_batching, model.config.sub_batch_overhead_tokens = True, 0
    grad_cache_backward(model, inputs, 4, loss_fn, torch.Tensor.backward, backbone_config=model.config.backbone_config)
    for name, gradient in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, gradient, rtol=1e-4, atol=1e-5, msg=name)


def test_one_sub_batch_when_a_call_costs_more_than_the_padding():
    model, processor = tiny_model_and_processor("qwen2")
    inputs = processor(text=["dog", "cat", "a red car"])
    calls = []
    model.backbone.register_forward_hook(lambda module, args, kwargs: calls.append(1))
    with torch.no_grad():
        model(**inputs)
    assert len(calls) == 1
    assert length_sub_batches([3, 4, 5], 256) == [[0, 1, 2]]
    assert length_sub_batches([40, 3000, 41, 2900], 256) == [[1, 3], [0, 2]]
