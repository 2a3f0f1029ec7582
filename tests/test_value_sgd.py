"""ValueSGD: the cached-index training step equals autograd + torch.optim.SGD, and stays local."""

import copy

import pytest
import torch
import torch.nn.functional as F

from dkvb_nlp import KeyValueBottleneck
from dkvb_nlp.bottleneck.value_sgd import ValueSGD, cross_entropy_grad


def make(decoder="non_parametric", value_dim=None, dv_classes=4, c=4, k=16):
    b = KeyValueBottleneck(12, c, k, num_classes=dv_classes, value_dim=value_dim, decoder=decoder,
                           value_init="normal", value_init_std=0.3)
    b.init_keys([torch.randn(200, 12)], epochs=2)
    return b


def token_batch(b, n=6, t=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, 12, generator=gen)
    mask = torch.rand(n, t, generator=gen) > 0.4
    mask[:, 0] = True
    return b.quantize(x, mask), torch.randint(b.num_classes, (n,), generator=gen)


def autograd_step(b, idx, y, lr, smoothing, decoder_lr=None):
    params = [b.value_table] + list(b.decoder.parameters())
    opt = torch.optim.SGD([{"params": [b.value_table], "lr": lr},
                           {"params": list(b.decoder.parameters()), "lr": decoder_lr or lr}])
    opt.zero_grad()
    loss = F.cross_entropy(b(indices=idx), y, label_smoothing=smoothing)
    loss.backward()
    opt.step()
    return float(loss.detach()), params


@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("decoder", ["non_parametric", "linear"])
def test_value_sgd_equals_autograd_sgd(tokens, decoder):
    ref = make(decoder=decoder, value_dim=None if decoder == "non_parametric" else 6)
    fast = copy.deepcopy(ref)
    idx, y = token_batch(ref)
    if not tokens:
        idx = ref.quantize(torch.randn(6, 12))
    loss_ref, _ = autograd_step(ref, idx, y, lr=0.7, smoothing=0.1, decoder_lr=0.05)
    dec_opt = torch.optim.SGD(fast.decoder.parameters(), lr=0.05) if decoder == "linear" else None
    loss_fast = ValueSGD(fast, lr=0.7, label_smoothing=0.1, decoder_optimizer=dec_opt).step(idx, y)
    assert loss_fast == pytest.approx(loss_ref, rel=1e-6)
    assert torch.allclose(fast.value_table, ref.value_table, atol=1e-6)
    for p_fast, p_ref in zip(fast.decoder.parameters(), ref.decoder.parameters()):
        assert torch.allclose(p_fast, p_ref, atol=1e-6)


def test_value_sgd_odd_value_dim_and_custom_loss():
    ref = make(dv_classes=3)
    fast = copy.deepcopy(ref)
    idx, y = token_batch(ref)
    autograd_step(ref, idx, y, lr=0.3, smoothing=0.0)
    ValueSGD(fast, lr=0.3, loss_fn=F.cross_entropy).step(idx, y)
    assert torch.allclose(fast.value_table, ref.value_table, atol=1e-6)


def test_value_sgd_is_local_and_keeps_keys():
    b = make(c=6, k=64)
    keys = b.keys.clone()
    before = b.value_table.detach().clone()
    idx, y = token_batch(b, n=3)
    ValueSGD(b, lr=1.0).step(idx, y)
    changed = (b.value_table.detach() != before).any(1)
    fetched = torch.zeros_like(changed)
    fetched[(idx + b.row_offset)[idx >= 0]] = True
    assert torch.equal(changed, fetched)
    assert torch.equal(b.keys, keys)


def test_closed_form_cross_entropy_gradient():
    logits = torch.randn(5, 7, requires_grad=True)
    y = torch.randint(7, (5,))
    loss, grad = cross_entropy_grad(logits.detach(), y, 0.2)
    ref = F.cross_entropy(logits, y, label_smoothing=0.2)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-6)
    assert torch.allclose(grad, logits.grad, atol=1e-7)


def test_epoch_learns_a_separable_problem():
    torch.manual_seed(0)
    centres = torch.randn(4, 12) * 4
    y = torch.arange(4).repeat_interleave(50)
    x = centres[y] + 0.3 * torch.randn(200, 12)
    b = KeyValueBottleneck(12, 4, 32, num_classes=4)
    b.init_keys([x], epochs=5)
    idx = b.quantize(x)
    opt = ValueSGD(b, lr=1.0)
    losses = [opt.epoch(idx, y, batch_size=32, generator=torch.Generator().manual_seed(0)) for _ in range(20)]
    assert losses[-1] < losses[0]
    assert (b(indices=idx).argmax(1) == y).float().mean() == 1.0


def test_value_sgd_rejects_bad_input():
    b = make()
    with pytest.raises(ValueError, match="lr=0"):
        ValueSGD(b, lr=0)
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        ValueSGD(b, lr=1, label_smoothing=1.5)
    idx, y = token_batch(b)
    with pytest.raises(ValueError, match="do not match"):
        ValueSGD(b, lr=1).step(idx, y[:2])
    with pytest.raises(ValueError, match="out of range"):
        ValueSGD(b, lr=1).epoch(torch.full((3, 4), 99), torch.zeros(3, dtype=torch.long))


def test_length_free_step_gives_every_fetched_row_the_whole_gradient():
    torch.manual_seed(3)
    b = KeyValueBottleneck(8, 2, 5, num_classes=3)
    b.keys.copy_(torch.randn(2, 5, 4))
    b.keys_initialized.fill_(True)
    idx = torch.tensor([[[0, 1], [2, 3], [-1, -1]], [[4, 4], [-1, -1], [-1, -1]]])
    y = torch.tensor([1, 2])
    _, grad = cross_entropy_grad(b(indices=idx), y, 0.0)
    ValueSGD(b, lr=2.0, length_free=True).step(idx, y)
    # example 0 fetched rows (codebook, key) (0,0), (1,1), (0,2), (1,3); example 1 fetched (0,4), (1,4)
    for c, k, e in [(0, 0, 0), (1, 1, 0), (0, 2, 0), (1, 3, 0), (0, 4, 1), (1, 4, 1)]:
        assert torch.allclose(b.values[c, k], -2.0 * grad[e])
    untouched = torch.ones(2, 5, dtype=torch.bool)
    for c, k, _ in [(0, 0, 0), (1, 1, 0), (0, 2, 0), (1, 3, 0), (0, 4, 1), (1, 4, 1)]:
        untouched[c, k] = False
    assert not b.values[untouched].any()
