"""End to end on real data: the Hugging Face Trainer trains a DKVB model on 5 CLINC150 intents."""

from __future__ import annotations

import pytest
import torch

from dkvb_nlp import DKVBConfig, DKVBForSequenceClassification

pytestmark = pytest.mark.slow


def test_trainer_learns_five_intents_and_touches_only_values(clinc_rows, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    intents = sorted({r["label"] for r in clinc_rows["train"]})[:5]
    label2id = {name: i for i, name in enumerate(intents)}

    def subset(split):
        rows = [r for r in clinc_rows[split] if r["label"] in label2id]
        return Dataset.from_dict({"text": [r["text"] for r in rows], "label": [label2id[r["label"]] for r in rows]})

    train, test = subset("train"), subset("test")
    assert len(train) == 500 and len(test) == 150
    config = DKVBConfig(num_codebooks=32, num_keys=256, id2label=dict(enumerate(intents)), key_init_batch_rows=2048)
    model = DKVBForSequenceClassification(config)
    model.init_keys(train["text"])  # unlabelled: the texts only
    tok = model.tokenizer

    def tokenize(batch):
        return tok(batch["text"], truncation=True, max_length=config.max_seq_length)

    train_t = train.map(tokenize, batched=True, remove_columns=["text"])
    test_t = test.map(tokenize, batched=True, remove_columns=["text"])
    keys = model.bottleneck.keys.clone()
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=32,
                             learning_rate=0.1, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                             use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train_t, eval_dataset=test_t,
                      processing_class=tok, compute_metrics=accuracy)
    trainer.train()
    result = trainer.evaluate()
    assert result["eval_accuracy"] >= 0.9, result
    assert torch.equal(model.bottleneck.keys, keys)
    assert all(torch.equal(v, encoder_before[k]) for k, v in model.encoder.state_dict().items())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["bottleneck.value_table"]
    # The Trainer's own save goes through our save_pretrained and loads back the same.
    trainer.save_model(str(tmp_path / "final"))
    again = DKVBForSequenceClassification.from_pretrained(tmp_path / "final")
    batch = tok(test["text"][:8], padding=True, return_tensors="pt")
    assert torch.equal(again(**batch).logits, model.eval()(**batch).logits)
