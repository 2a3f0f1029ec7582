"""Run the frozen encoder over many texts fast: length-sorted batches, dynamic padding, no grad."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from .load import encoder_autocast_dtype


def check_texts(texts: Sequence, name: str = "texts") -> list[str]:
    """The texts as a list, or a ValueError naming the first empty or non-string entry."""
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a list of strings, got a single string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty; give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{i}] is {type(text).__name__} {text!r:.60}; every text must be a str")
        if not text.strip():
            raise ValueError(f"{name}[{i}] is an empty string; every text needs some content")
    return texts


@dataclass
class EncodedBatch:
    """Token states of one batch: `positions` index the input texts this batch holds."""

    positions: torch.Tensor  # (b,) int64, into the input order
    states: torch.Tensor  # (b, T, D) float32
    mask: torch.Tensor  # (b, T) bool, True at real tokens


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar lengths, longest first (the peak memory shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def tokenize(tokenizer, texts: list[str], text_pairs: list[str] | None, max_length: int):
    """Token ids of every text (truncated to max_length, not padded)."""
    args = (texts,) if text_pairs is None else (texts, text_pairs)
    enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
    return enc


def iter_encoded(
    encoder: nn.Module,
    tokenizer,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    *,
    max_length: int = 128,
    batch_size: int = 64,
    autocast: str = "auto",
    sort_by_length: bool = True,
    shuffle_seed: int | None = None,
    progress: bool | None = None,
    encoding=None,
) -> Iterator[EncodedBatch]:
    """Yield token states batch by batch under `torch.inference_mode`.

    Batches hold texts of similar length (sorted, longest first) padded only to their own
    longest text, so short texts do not pay for long ones. `shuffle_seed` visits those batches
    in a seeded random order (for consumers, like k-means, that must not see the longest texts
    first). `progress=None` shows a bar for runs of more than 2,000 texts. `encoding` takes the
    unpadded token ids of exactly these texts (from `tokenize`) when the caller already has them.
    """
    texts = check_texts(texts)
    if text_pairs is not None:
        text_pairs = check_texts(text_pairs, "text_pairs")
        if len(text_pairs) != len(texts):
            raise ValueError(f"{len(text_pairs)} text_pairs for {len(texts)} texts; give one pair per text")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    enc = tokenize(tokenizer, texts, text_pairs, max_length) if encoding is None else encoding
    if len(enc["input_ids"]) != len(texts):
        raise ValueError(f"encoding holds {len(enc['input_ids'])} texts, not {len(texts)}")
    keys = list(enc.keys())
    lengths = [len(ids) for ids in enc["input_ids"]]
    if sort_by_length:
        batches = length_sorted_batches(lengths, batch_size)
    else:
        batches = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(batches)
    device = next(encoder.parameters()).device
    dtype = encoder_autocast_dtype(autocast, encoder)
    def cast_context():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if progress is None:
        progress = len(texts) > 2000
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=len(texts), desc="encoding", unit="text")
    was_training = encoder.training
    encoder.eval()

    def run(features: dict) -> torch.Tensor:
        # The modes are entered per batch, never across a `yield`: a context held open in a
        # generator would leak inference mode and autocast into the consumer's code.
        with torch.inference_mode(), cast_context():
            states = encoder(**features).last_hidden_state
        return states.float().clone()  # a normal tensor again, usable outside inference mode

    try:
        for batch in batches:
            features = tokenizer.pad({k: [enc[k][i] for i in batch] for k in keys}, return_tensors="pt")
            features = {k: v.to(device) for k, v in features.items()}
            yield EncodedBatch(torch.tensor(batch), run(features), features["attention_mask"].bool())
            if bar is not None:
                bar.update(len(batch))
    finally:
        encoder.train(was_training)
        if bar is not None:
            bar.close()


@dataclass
class RaggedStates:
    """Token states of N texts without padding: rows of text i are `states[offsets[i]:offsets[i+1]]`."""

    states: torch.Tensor  # (total tokens, D)
    offsets: torch.Tensor  # (N + 1,) int64

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def get(self, i: int) -> torch.Tensor:
        """Token states (T_i, D) of text i."""
        return self.states[self.offsets[i] : self.offsets[i + 1]]

    def padded(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """States (b, T, D) and mask (b, T) of the given texts, padded to their longest."""
        rows = [self.get(int(i)) for i in positions]
        t = max(r.shape[0] for r in rows)
        out = self.states.new_zeros(len(rows), t, self.states.shape[1])
        mask = torch.zeros(len(rows), t, dtype=torch.bool)
        for j, r in enumerate(rows):
            out[j, : r.shape[0]] = r
            mask[j, : r.shape[0]] = True
        return out, mask


def encode_ragged(encoder: nn.Module, tokenizer, texts: Sequence[str], text_pairs=None,
                  dtype: torch.dtype = torch.float32, **kwargs) -> RaggedStates:
    """All token states of `texts` in input order, padding dropped (see `iter_encoded`)."""
    pieces: dict[int, torch.Tensor] = {}
    for batch in iter_encoded(encoder, tokenizer, texts, text_pairs, **kwargs):
        for j, pos in enumerate(batch.positions.tolist()):
            pieces[pos] = batch.states[j][batch.mask[j]].to(dtype).cpu()
    n = len(pieces)
    lengths = torch.tensor([pieces[i].shape[0] for i in range(n)])
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    return RaggedStates(torch.cat([pieces[i] for i in range(n)]), offsets)
