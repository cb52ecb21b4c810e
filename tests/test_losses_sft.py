import math

import torch

from tether.losses import sft_loss


def _example():
    """Two sequences, V = 2, T = 3. Logits (0, ln 3) give p = (1/4, 3/4) at every position.

    Row 0: mask (0, 1, 1), labels (-100, 1, 0): prompt position, then −log(3/4) and −log(1/4).
    Row 1: mask (1, 0, 0), labels (1, 7, 7): −log(3/4), then padding (label 7 is not even a valid id).
    Mean over the 3 masked tokens: [2·log(4/3) + log 4] / 3.
    """
    logits = torch.tensor([0.0, math.log(3)]).expand(2, 3, 2).clone().requires_grad_(True)
    labels = torch.tensor([[-100, 1, 0], [1, 7, 7]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    return logits, labels, mask


def test_sft_loss_is_masked_mean_of_token_nll():
    logits, labels, mask = _example()
    loss, metrics = sft_loss(logits, labels, mask)
    expected = (2 * math.log(4 / 3) + math.log(4)) / 3
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert metrics["tokens"].item() == 3
    # argmax is token 1 everywhere: right on the two tokens labelled 1, wrong on the one labelled 0
    assert math.isclose(metrics["accuracy"].item(), 2 / 3, rel_tol=1e-6)
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())


def test_sft_loss_prompt_and_padding_get_no_gradient():
    """Masked positions carry no loss, so d loss / d logits is exactly 0 there."""
    logits, labels, mask = _example()
    sft_loss(logits, labels, mask)[0].backward()
    grad = logits.grad
    assert torch.all(grad[0, 0] == 0) and torch.all(grad[1, 1:] == 0)
    assert grad[0, 1].abs().sum() > 0


def test_sft_loss_divides_by_given_token_count():
    """With num_tokens = 6 (say, the global count over two processes) the loss is the masked sum / 6,
    i.e. half the local mean over 3 tokens."""
    logits, labels, mask = _example()
    local, _ = sft_loss(logits, labels, mask)
    global_, _ = sft_loss(logits, labels, mask, num_tokens=6)
    assert math.isclose(global_.item(), local.item() / 2, rel_tol=1e-6)
