"""Property-based checks (hypothesis) of the bottleneck's shapes and masks."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dkvb_nlp import KeyValueBottleneck

CODEBOOKS = [1, 2, 3, 4, 6]


def initialised(c: int, k: int) -> KeyValueBottleneck:
    b = KeyValueBottleneck(12, c, k, num_classes=3, value_init="normal", value_init_std=1.0)
    b.init_keys([torch.randn(max(64, k), 12, generator=torch.Generator().manual_seed(c * 100 + k))])
    return b


MODELS = {(c, k): initialised(c, k) for c in CODEBOOKS for k in (1, 5, 64)}


@settings(max_examples=40, deadline=None)
@given(c=st.sampled_from(CODEBOOKS), k=st.sampled_from([1, 5, 64]), b=st.integers(1, 5),
       t=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_quantize_and_pool_respect_masks(c, k, b, t, seed):
    model = MODELS[(c, k)]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 12, generator=gen)
    mask = torch.rand(b, t, generator=gen) > 0.5
    idx = model.quantize(x, mask)
    assert idx.shape == (b, t, c)
    assert ((idx == -1).all(-1) == ~mask).all() and ((idx >= 0).all(-1) == mask).all()
    assert int(idx.max()) < k
    logits = model(indices=idx)
    assert logits.shape == (b, 3)
    for i in range(b):
        if mask[i].any():
            rows = (idx[i][mask[i]] + model.row_offset).reshape(-1)
            assert torch.allclose(logits[i], model.value_table[rows].mean(0), atol=1e-5)
        else:  # an example with no valid token has no evidence: zero logits
            assert torch.equal(logits[i], torch.zeros(3))
