"""Matryoshka training and truncated encoding."""

import pytest
import torch
import torch.nn.functional as F
from test_loss import make_batch, reference_loss
from trainer_fixtures import TinyCollator, rows, tiny_training_args

from llave_hf import LlaveEmbeddingModel
from llave_hf.loss import matryoshka_contrastive_loss
from llave_hf.testing import tiny_model_and_processor
from llave_hf.trainer import ContrastiveTrainer


@pytest.mark.parametrize("use_hard_negatives", [False, True])
def test_loss_matches_a_loop_over_truncated_renormalised_embeddings(use_hard_negatives):
    query, target, hard_negatives, *_ = make_batch()
    hard_negatives = hard_negatives if use_hard_negatives else None
    dims, weights = [8, 4, 2], [1.0, 0.5, 0.25]
    settings = dict(alpha=2.0, temperature=0.05, symmetric=True)
    output = matryoshka_contrastive_loss(
        query, target, dims=dims, weights=weights, hard_negatives=hard_negatives, **settings
    )

    def cut(embeddings, dim):  # each row's first `dim` values, divided by their norm, one row at a time
        if embeddings is None:
            return None
        flat = [row[:dim] / row[:dim].norm() for row in embeddings.reshape(-1, embeddings.shape[-1])]
        return torch.stack(flat).reshape(*embeddings.shape[:-1], dim)

    expected = sum(
        weight * reference_loss(cut(query, dim), cut(target, dim), hard_negatives=cut(hard_negatives, dim), **settings)
        for dim, weight in zip(dims, weights)
    )
    torch.testing.assert_close(output.loss, expected)
    # without the truncated terms it is another loss: the test sees a dropped or unweighted dimension
    single = matryoshka_contrastive_loss(query, target, dims=[8], hard_negatives=hard_negatives, **settings)
    assert not torch.allclose(single.loss, expected)
    with pytest.raises(ValueError, match=r"in \[1, 8\]"):
        matryoshka_contrastive_loss(query, target, dims=[16], **settings)


def test_trainer_trains_every_dimension_and_records_them(tmp_path):
    model, processor = tiny_model_and_processor("llava_onevision", seed=0)
    args = tiny_training_args(str(tmp_path / "out"), matryoshka_dims=[64, 16], matryoshka_weights=[1.0, 2.0])
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=rows(12), data_collator=TinyCollator(processor), processing_class=processor
    )
    batch = TinyCollator(processor)(rows(6))
    embeddings = model(**batch.inputs).embeddings
    query, target, _ = batch.split(embeddings)
    full = trainer._loss(embeddings, batch)
    settings = dict(alpha=args.loss_alpha, temperature=args.loss_temperature, symmetric=args.loss_symmetric)
    ids = dict(query_ids=batch.query_ids, target_ids=batch.target_ids)
    expected = matryoshka_contrastive_loss(query, target, dims=[64, 16], weights=[1.0, 2.0], **settings, **ids).loss
    torch.testing.assert_close(full, expected)
    trainer.save_model(tmp_path / "saved")
    assert LlaveEmbeddingModel.from_pretrained(tmp_path / "saved").config.matryoshka_dims == [64, 16]
    with pytest.raises(ValueError, match="exceed the embedding size 64"):
        ContrastiveTrainer(model=model, args=tiny_training_args(str(tmp_path / "o"), matryoshka_dims=[128]))
    with pytest.raises(ValueError, match="one weight per matryoshka_dims"):
        tiny_training_args(str(tmp_path / "o"), matryoshka_dims=[64, 16], matryoshka_weights=[1.0])


def test_encode_truncate_dim_is_the_renormalised_prefix(make_image):
    model, processor = tiny_model_and_processor("llava_onevision", seed=0)
    texts, images = ["a dog", None], [None, make_image()]
    full = model.encode(texts=texts, images=images, processor=processor)
    short = model.encode(texts=texts, images=images, processor=processor, truncate_dim=16)
    assert short.shape == (2, 16)
    torch.testing.assert_close(short, F.normalize(full[:, :16], dim=-1))
    torch.testing.assert_close(short.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match=r"truncate_dim must be in \[1, 64\]"):
        model.encode(texts=texts, images=images, processor=processor, truncate_dim=65)
