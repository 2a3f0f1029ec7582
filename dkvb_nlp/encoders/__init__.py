"""The frozen front's encoder: name resolution, loading, and fast batched encoding."""

from .encode import EncodedBatch, RaggedStates, check_texts, encode_ragged, iter_encoded, length_sorted_batches
from .load import autocast_dtype, encoder_autocast_dtype, freeze, hidden_size, load_encoder, load_tokenizer
from .resolve import ALIASES, DEFAULT_ENCODER, OFFLINE_COPIES, EncoderNotFoundError, resolve_encoder

__all__ = [
    "ALIASES", "DEFAULT_ENCODER", "OFFLINE_COPIES", "EncodedBatch", "EncoderNotFoundError", "RaggedStates",
    "autocast_dtype", "check_texts", "encoder_autocast_dtype", "encode_ragged", "freeze", "hidden_size", "iter_encoded",
    "length_sorted_batches", "load_encoder", "load_tokenizer", "resolve_encoder",
]
