"""The decoder-only architecture matrix: every type of ``TINY_DECODERS`` (and the variants of
``TINY_DECODER_VARIANTS``) is built as a tiny checkpoint, exported with its KV cache, validated, and generates greedy and beam-search tokens
identical to ``transformers``' ``generate()`` for a left-padded batch of prompts of different
lengths — or is refused with an ``ExportError`` naming the model type and why
(``architecture_status``).

The whole matrix is marked ``matrix`` and runs with ``NLPFORGE_MATRIX=1`` or ``-m matrix``;
``FAST`` always runs: GPT-2 (absolute positions), Llama (rotary, grouped-query attention) and
Gemma-2 (sliding-window layers alternating with global ones, soft-capping). Model types refused
for every config (recurrent, state-space and hybrid caches; remote-code-only types) are
checked from their default config, without building a model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nlpforge.errors import ExportError
from nlpforge.testing.decoders import (TINY_DECODERS, TINY_WINDOW, architecture_status,
                                       tiny_decoder_cases)

FAST = ("gpt2", "llama", "gemma2")
PROMPTS = ["once upon a time there was a little model that learnt to write",
           "the quick brown fox", "hi"]
NEW_TOKENS = 10


def _params():
    return [pytest.param(name, id=name.replace(" ", ""),
                         marks=() if name in FAST else pytest.mark.matrix)
            for name in tiny_decoder_cases()]



def _export(checkpoint: Path, out: Path) -> Path:
    """Export a plain checkpoint (no training) through ``nlpforge export CHECKPOINT``'s path;
    returns the weights that were exported (the reference for ``generate()``)."""
    from nlpforge.export.onnx import export_model

    export_model(str(checkpoint), str(out), task="text-generation")
    return checkpoint


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name of a tiny decoder → (reference weights, export dir, seconds), built on first use."""
    from nlpforge.testing.decoders import make_tiny_causal_lm

    cache: dict[str, tuple[Path, Path, float]] = {}
    root = tmp_path_factory.mktemp("matrix")

    def get(name: str) -> tuple[Path, Path, float]:
        if name not in cache:
            start = time.perf_counter()
            kind, settings = tiny_decoder_cases()[name]
            slug = "".join(c if c.isalnum() else "-" for c in name)
            checkpoint = make_tiny_causal_lm(root / slug, kind, **settings)
            reference = _export(checkpoint, root / f"{slug}-export")
            cache[name] = (reference, root / f"{slug}-export", time.perf_counter() - start)
        return cache[name]

    return get


def _batch(directory: Path):
    from nlpforge.runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(directory)
    tokenizer.padding_side = "left"
    return tokenizer.pad(tokenizer.encode(PROMPTS), ("input_ids", "attention_mask"))


def _until_eos(tokens, eos: list[int], pad: int) -> list[int]:
    out = []
    for t in tokens:
        out.append(int(t))
        if t in eos:
            return out
    while out and out[-1] == pad:
        out.pop()
    return out


def _generated(reference: Path, export: Path, **settings):
    """(ours, transformers') new tokens per returned row, cut after EOS."""
    import torch
    from transformers import AutoModelForCausalLM

    from nlpforge.runtime.generation.config import GenerationConfig
    from nlpforge.runtime.generation.decoder import DecoderStepper
    from nlpforge.runtime.generation.search import generate

    manifest = json.loads((export / "nlpforge.json").read_text())
    stepper = DecoderStepper.load(export, manifest, device="cpu")
    batch = _batch(export)
    assert (batch["attention_mask"][:, 0] == 0).any()  # really left-padded
    settings = {"max_new_tokens": NEW_TOKENS, **settings}
    ours = generate(stepper, batch["input_ids"], batch["attention_mask"],
                    GenerationConfig().with_overrides(settings))
    model = AutoModelForCausalLM.from_pretrained(reference).eval()
    with torch.inference_mode():
        theirs = model.generate(input_ids=torch.from_numpy(batch["input_ids"]),
                                attention_mask=torch.from_numpy(batch["attention_mask"]),
                                do_sample=False, **settings).numpy()
    eos, pad = stepper.eos_token_ids, stepper.pad_token_id
    start = ours.prompt_length
    assert theirs.shape[0] == ours.sequences.shape[0]
    return ([_until_eos(ours.new_tokens(row), eos, pad) for row in range(theirs.shape[0])],
            [_until_eos(theirs[row, start:], eos, pad) for row in range(theirs.shape[0])])


def _pytorch_cache_shapes(reference: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(heads, head size) of the first layer's keys and of its values, from a PyTorch run."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reference).eval()
    with torch.inference_mode():
        cache = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True).past_key_values
    layer = cache.layers[0]
    return ((layer.keys.shape[1], layer.keys.shape[3]),
            (layer.values.shape[1], layer.values.shape[3]))


@pytest.mark.parametrize("name", _params())
def test_architecture_exports_and_generates_like_transformers(built, name):
    kind, settings = tiny_decoder_cases()[name]
    status = architecture_status()[name]
    if status != "exports":
        with pytest.raises(ExportError, match=f"{kind} model: "):
            built(name)
        return
    reference, export, _ = built(name)
    manifest = json.loads((export / "nlpforge.json").read_text())
    io, report = manifest["io"], manifest["validation"]
    assert report["passed"] and max(report["max_abs_diff"].values()) < report["atol"]
    assert io["architecture"] == kind and io["num_layers"] == 2
    assert manifest["exporter"] == "torchscript"  # no type needs the slower fallback
    keys, values = _pytorch_cache_shapes(reference)  # what the model's own cache is made of
    assert (io["num_kv_heads"], io["head_dim"], io["value_head_dim"]) == (*keys, values[1])
    assert keys[0] == values[0]
    window = settings.get("sliding_window") or settings.get("window_size")
    assert io["sliding_window"] == window and window in (None, TINY_WINDOW)
    if window:  # validated where the window hides keys
        assert any("past the sliding window" in c["case"] for c in report["cases"])
    assert io["position_ids"] == (kind not in ("bloom", "mpt"))
    for search in ({}, {"num_beams": 3}):
        ours, theirs = _generated(reference, export, **search)
        assert ours == theirs, (name, search)
        assert any(len(row) > 1 for row in ours)


#: optimum-onnx 0.1.0's text-generation-with-past decoder-only types (its encoder-decoders
#: used as decoders aside): each exports; internlm2 (remote code only) and the multimodal
#: gemma3 (not a causal-LM checkpoint; its text decoder gemma3_text exports) are refused
OPTIMUM_ONNX = ("arcee", "bloom", "codegen", "cohere", "deepseek_v3", "falcon", "gemma", "gemma2",
                "gemma3_text", "glm", "gpt2", "gpt_bigcode", "gpt_neo", "gpt_neox",
                "gpt_oss", "gptj", "granite", "helium", "llama", "mistral", "mpt", "nemotron",
                "olmo", "olmo2", "opt", "phi", "phi3", "qwen2", "qwen3", "qwen3_moe", "smollm3",
                "stablelm")


def test_status_table_covers_every_tiny_decoder():
    from nlpforge.export.decoder_arch import REFUSED

    status = architecture_status()
    assert set(status) == set(tiny_decoder_cases()) | set(REFUSED)
    assert set(tiny_decoder_cases()) >= set(TINY_DECODERS) >= set(OPTIMUM_ONNX)
    assert {status[kind] for kind in OPTIMUM_ONNX} == {"exports"}
    refused = {name: reason for name, reason in status.items() if reason != "exports"}
    assert list(refused) == ["falcon (alibi)", *REFUSED]
    assert "cannot export this falcon model: alibi=true" in refused["falcon (alibi)"]
    assert "remote code only" in refused["internlm2"]
    assert "gemma3_text" in refused["gemma3"]
    for kind in REFUSED:
        assert refused[kind].startswith(f"decoder export does not support model type {kind!r}: ")
        assert "supported: " in refused[kind] and f" {kind}," not in refused[kind]
    for kind in ("mamba", "jamba", "recurrent_gemma", "falcon_h1", "zamba", "lfm2"):
        assert "not a key/value cache" in refused[kind]


@pytest.mark.matrix
def test_a_recurrent_checkpoint_is_refused_before_anything_is_written(tmp_path):
    """A state-space checkpoint (Mamba) saved like a real one: export_model refuses it with
    the reason, and writes no export dir."""
    from nlpforge.export.onnx import export_model
    from nlpforge.testing.decoders import make_tiny_causal_lm

    checkpoint = make_tiny_causal_lm(tmp_path / "mamba", "mamba", hidden_size=16,
                                     state_size=4, num_hidden_layers=1, expand=2)
    with pytest.raises(ExportError, match="model type 'mamba': its cache is a fixed-size recurrent"):
        export_model(str(checkpoint), str(tmp_path / "out"), task="text-generation")
    assert not (tmp_path / "out").exists()


def test_default_mistral_window_is_accepted_and_recorded():
    """Mistral's default 4096-token window is exported (keys outside a window are masked,
    not dropped); the manifest records it."""
    from transformers import AutoConfig

    from nlpforge.export.decoder_arch import architecture, describe

    config = AutoConfig.for_model("mistral", num_hidden_layers=2)
    assert config.sliding_window == 4096
    assert describe(config, architecture(config)).sliding_window == 4096
    qwen = AutoConfig.for_model("qwen2", num_hidden_layers=2)  # use_sliding_window off
    assert describe(qwen, architecture(qwen)).sliding_window is None


def test_sizes_come_from_the_config():
    """Falcon's multi-query and new_decoder_architecture head counts, Qwen3's own head_dim,
    BLOOM's n_layer: what the model's cache is made of."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nlpforge.export.decoder_arch import architecture, describe

    for kind, overrides in [("falcon", dict(TINY_DECODERS["falcon"])),
                            ("falcon", dict(TINY_DECODERS["falcon"], new_decoder_architecture=True,
                                            num_kv_heads=2)),
                            ("qwen3", TINY_DECODERS["qwen3"]), ("bloom", TINY_DECODERS["bloom"]),
                            ("gpt2", TINY_DECODERS["gpt2"])]:
        config = AutoConfig.for_model(kind, vocab_size=50, **overrides)
        shape = describe(config, architecture(config))
        model = AutoModelForCausalLM.from_config(config).eval()
        with torch.inference_mode():
            cache = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).past_key_values
        assert len(cache.layers) == shape.num_layers
        assert tuple(cache.layers[0].keys.shape) == (1, shape.kv_heads, 3, shape.head_dim)
        assert shape.hidden_size == 32 and shape.num_heads == 4


def test_a_plugin_registers_an_architecture():
    from types import SimpleNamespace

    from nlpforge.export import decoder_arch
    from nlpforge.export.decoder_arch import Architecture, architecture, register_architecture

    mine = Architecture(kv_heads=lambda config: 1)
    with pytest.raises(ExportError, match="model type 'tinymamba'.*register_architecture"):
        architecture(SimpleNamespace(model_type="tinymamba"))
    register_architecture("tinymamba", mine)
    try:
        assert architecture(SimpleNamespace(model_type="tinymamba")) is mine
        with pytest.raises(ValueError, match="already registered"):
            register_architecture("tinymamba", Architecture())
        with pytest.raises(TypeError, match="needs an Architecture"):
            register_architecture("other", object())
    finally:
        decoder_arch.ARCHITECTURES.pop("tinymamba")
    refusing = Architecture(refuse=lambda config: "its cache is recurrent")
    register_architecture("gpt2", refusing, replace=True)
    try:
        with pytest.raises(ExportError, match="gpt2 model: its cache is recurrent"):
            architecture(SimpleNamespace(model_type="gpt2"))
    finally:
        register_architecture("gpt2", decoder_arch.STANDARD, replace=True)
