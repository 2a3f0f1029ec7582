"""A trained DKVB strategy as the Hugging Face model: `DKVBForSequenceClassification` + a model card.

The strategy learns from the run's cached features and indices (fast); `export_model` puts
its trained parts (keys, values, the order-free rule's statistics, decoder) into the one DKVB
model class of the toolkit, with the run's encoder, tokenizer, maximum length and precision,
and saves it with `save_pretrained`. The folder then loads with `AutoModelForSequenceClassification`
and `pipeline("text-classification")` (after `import dkvb_nlp`), and its predictions on the
run's test texts are those the run scored (tests/test_export.py asserts the accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path


def model_config(opts, ctx, num_classes: int):
    """The `DKVBConfig` of a DKVB strategy (its options, the run's encoder, the labels of its first
    `num_classes` classes): the strategy builds its bottleneck from it, and exports with it."""
    from ..modeling import DKVBConfig

    o, stream = opts, ctx.stream
    if stream.num_heads == 1:
        names = list(stream.heads[0][:num_classes])
        labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    else:
        labels = {"task_labels": [list(names) for names in stream.heads]}
    return DKVBConfig(
        encoder_name_or_path=str(ctx.encoder_name), max_seq_length=ctx.cache.max_length, autocast=ctx.cache.autocast,
        split=o.split, num_codebooks=o.num_codebooks, num_keys=o.num_keys, key_dim=o.key_dim,
        value_dim=None if o.decoder == "non_parametric" else 2 * max(stream.classes_per_head), pooling=o.pooling,
        decoder_type=o.decoder, value_init=o.value_init, key_init_epochs=o.key_init_epochs, ema_decay=o.ema_decay,
        dead_key_threshold=o.dead_key_threshold, key_init_batch_rows=o.key_init_batch_rows, values=o.values,
        smoothing=o.smoothing, counts_weight=o.counts_weight, ridge=o.ridge, ridge_features=o.ridge_features,
        seed=ctx.seed, **labels)


def to_model(strategy):
    """A `DKVBForSequenceClassification` holding the strategy's trained parts (shared encoder)."""
    from ..modeling import DKVBForSequenceClassification

    ctx = strategy.ctx
    config = model_config(strategy.opts, ctx, strategy.heads[0].num_classes)
    model = DKVBForSequenceClassification(config, encoder=ctx.cache.encoder,
                                          tokenizer=ctx.cache.tokenizer)
    model.bottleneck.load_state_dict(strategy.front.state_dict())
    for mine, theirs in zip(model.task_heads, strategy.heads[1:]):
        mine.load_state_dict(theirs.state_dict())
    return model.eval()


def export_model(strategy, folder: str | Path, record: dict | None = None) -> Path:
    """Save the strategy's model to `folder` (config, tokenizer, weights, README.md model card)."""
    from ..io import atomic_write_text

    folder = Path(folder)
    model = to_model(strategy)
    model.save_pretrained(folder)
    atomic_write_text(folder / "README.md", model_card(strategy, record))
    return folder


def model_card(strategy, record: dict | None) -> str:
    """README.md of an exported model: what it is, what it learned, how well, how to load it."""
    ctx, o = strategy.ctx, strategy.opts
    stream = ctx.stream
    dataset = stream.options.get("dataset") or ", ".join(stream.options.get("datasets", [])) or "?"
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:",
             "- dkvb", "- continual-learning", f"base_model: {ctx.encoder_name}", "---", "",
             f"# DKVB text classifier on {ctx.encoder_name}", "",
             "A Discrete Key-Value Bottleneck (dkvb-nlp) over a frozen encoder: token states snap to frozen keys, "
             "the keys' values (learned with the order-free rule below) are pooled into class scores. It keeps "
             "learning new classes with `model.partial_fit(texts, labels)` without forgetting the old ones.", "",
             "## Training", "",
             f"- base encoder: `{ctx.encoder_name}` (frozen, not saved here; loaded from its own location)",
             f"- data: {dataset}, scenario `{stream.scenario}`, {stream.num_tasks} tasks, seed {ctx.seed}",
             f"- bottleneck: {o.num_codebooks} codebooks x {o.num_keys} keys, pooling `{o.pooling}`, decoder "
             f"`{o.decoder}`, values `{o.values}` (smoothing {o.smoothing}, counts weight {o.counts_weight}, "
             f"ridge {o.ridge}, {o.ridge_features} random features)",
             f"- max length {ctx.cache.max_length} tokens, encoder precision {ctx.cache.precision}"]
    if record:
        pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"
        lines += ["", "## Results (test split, after the last task)", "",
                  "| final accuracy | average incremental accuracy | BWT | forgetting |", "|---|---|---|---|",
                  f"| {pct(record.get('final_accuracy'))} | {pct(record.get('average_incremental_accuracy'))} | "
                  f"{pct(record.get('bwt'))} | {pct(record.get('forgetting'))} |"]
    lines += ["", "## How to load", "", "```python", "# pip install dkvb-nlp", "import dkvb_nlp  # registers the DKVB model type",
              "from transformers import pipeline", "", 'classify = pipeline("text-classification", model="PATH_OR_HUB_ID")',
              'print(classify("how do I reset my password?"))', "```", "",
              "Label names: " + json.dumps([list(h) for h in stream.heads])[:2000], ""]
    return "\n".join(lines)
