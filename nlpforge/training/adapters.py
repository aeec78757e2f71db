"""Optional ways to train less or with less memory: frozen base, gradient checkpointing, LoRA."""

from __future__ import annotations

from typing import Any

from nlpforge.errors import UsageError


def adapt_model(model: Any, config: Any) -> Any:
    """Apply --freeze-base, --gradient-checkpointing and --lora-r to a freshly built model."""
    if config.freeze_base:
        base = getattr(model, "base_model", None)
        if base is None or base is model:
            raise UsageError("--freeze-base: this model has no separate base model to freeze")
        for param in base.parameters():
            param.requires_grad = False
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UsageError("--gradient-checkpointing: this model does not support it")
        model.gradient_checkpointing_enable()
    if config.lora_r:
        model = _lora(model, config)
    return model


def _lora(model: Any, config: Any) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UsageError("--lora-r needs the peft package: pip install 'nlpforge[lora]'")
    import torch

    prefix = getattr(model, "base_model_prefix", "")
    containers = (torch.nn.ModuleDict, torch.nn.ModuleList)
    head = [name for name, module in model.named_children()  # the task head stays trainable
            if name != prefix and not isinstance(module, containers)
            and any(True for _ in module.parameters())]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules or None,
                      modules_to_save=head or None)
    try:
        return get_peft_model(model, lora)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--lora-r: peft cannot adapt this model ({exc}); name the layers "
                         f"with --lora-target-modules")


def merged(model: Any) -> Any:
    """The plain model to save: LoRA weights merged into the base, so export is unchanged."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
