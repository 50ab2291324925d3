"""What the model card tells beyond the model: training data, final diagnostics, Matryoshka dimensions, LoRA,
framework versions, sentence-transformers usage, limitations; and what a Trainer fills in by itself."""

import transformers
from huggingface_hub import ModelCard
from trainer_fixtures import TinyCollator, rows, tiny_training_args

from llave_hf.hub import final_training_diagnostics, render_model_card, training_data_summary
from llave_hf.testing import tiny_model_and_processor
from llave_hf.trainer import ContrastiveTrainer


def test_card_sections(tmp_path):
    model, _ = tiny_model_and_processor("llava_onevision", seed=0)
    model.config.matryoshka_dims = [64, 16]
    card = render_model_card(
        model,
        repo_id="me/llave-tiny",
        prompts={"query": "Find me an everyday image that matches the given caption: "},
        training_data={"MSCOCO_t2i": 1200, "VOC2007": 300},
        training_diagnostics={"loss": 1.25, "top1_accuracy": 0.5},
        lora={"r": "16", "lora_alpha": "32"},
    )
    text = str(card)
    assert "| Matryoshka dimensions | 64, 16:" in text and "truncate_dim=16" in text
    assert "1,500 query-target pairs" in text and "| MSCOCO_t2i | 1,200 |" in text
    assert "| loss | top1_accuracy |" in text and "| 1.25 | 0.5 |" in text
    assert "Trained with LoRA adapters (PEFT): `r` = `16`, `lora_alpha` = `32`." in text
    assert f"- transformers: {transformers.__version__}" in text
    assert 'SentenceTransformer("me/llave-tiny", trust_remote_code=True)' in text
    assert '`query` = `"Find me an everyday image that matches the given caption: "`' in text
    assert "## Intended use and limitations" in text and "No benchmark results were recorded" in text
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.pipeline_tag == "feature-extraction"


def test_trainer_fills_training_data_and_final_diagnostics(tmp_path):
    model, processor = tiny_model_and_processor("llava_onevision", seed=0)
    data = rows(12)
    trainer = ContrastiveTrainer(
        model=model,
        args=tiny_training_args(str(tmp_path / "out")),
        train_dataset=data,
        data_collator=TinyCollator(processor),
        processing_class=processor,
    )
    trainer.train()
    final = final_training_diagnostics(trainer.state.log_history)
    assert {"loss", "positive_cosine", "top1_accuracy", "step"} <= set(final) and final["step"] == 2
    assert training_data_summary(data) == {"train": 12}
    trainer.prepare_hub_files()
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "12 query-target pairs" in readme and f" {final['loss']:.4g} |" in readme
    assert (tmp_path / "out" / "modules.json").exists()
