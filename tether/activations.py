"""Activation memory: gradient checkpointing of a transformers model's decoder layers.

With checkpointing each decoder layer keeps only its input in the forward pass and recomputes its
activations in the backward pass (Chen et al. 2016): activation memory falls from O(layers × activations of
a layer) to about one layer's worth plus the layer inputs, for one more forward pass of compute.

transformers checkpoints a layer only while that layer is in training mode. tether keeps its models in eval
mode (no dropout, so π/π_old = 1 and resumes are exact), so each checkpointed layer gets its own training
flag set to "gradients are being recorded" just before it runs; its sub-modules (attention, MLP, dropout)
keep the model's mode, so no dropout is switched on.
"""

from __future__ import annotations

import torch

from tether.errors import TetherError


def enable_gradient_checkpointing(model: torch.nn.Module, layers: int = 0) -> None:
    """Checkpoint the decoder layers of `model` (a transformers model, or a peft model around one) with
    non-reentrant torch.utils.checkpoint (transformers also makes the embeddings' output require grads, so
    a frozen LoRA base still passes gradients back to the adapters): all of them, or with `layers` > 0 only
    the first `layers` (the rest keep their activations; more than the model has: all).

    Checkpointing the first ones is what lowers the peak: the backward pass reaches them last, when the kept
    layers' activations are already freed, so the peak is the kept layers' activations plus every layer's
    input; the time added is that share of one forward pass."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from tether.lora import train_while_grad, unwrap

    inner = unwrap(model)
    enable = getattr(inner, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(inner, "gradient_checkpointing_enable"):
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise TetherError(f"{type(inner).__name__} does not support gradient checkpointing")
    found = [m for m in inner.modules() if isinstance(m, GradientCheckpointingLayer)]  # layer order
    if not found:
        raise TetherError(f"{type(inner).__name__} has no checkpointable decoder layers")
    for i, layer in enumerate(found):
        if layers and i >= layers:
            layer.gradient_checkpointing = False  # the transformers switch of this layer alone
        else:
            train_while_grad(layer)
