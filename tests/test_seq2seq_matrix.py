"""The encoder-decoder architecture matrix: every row of ``TINY_ENCODER_DECODERS`` is built as
a tiny checkpoint, exported (three graphs validated against PyTorch), and its greedy and beam
search tokens compared with transformers' ``generate()`` on the same weights, for a batch of
three inputs of different lengths. Types the export refuses are refused with an ExportError
naming them; a row ``nlpforge export`` cannot reach yet (``blocked``) is checked to be refused
and reported as an expected failure.

The whole matrix is marked ``matrix`` and runs with ``NLPFORGE_MATRIX=1`` or ``-m matrix``;
t5 and bart always run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nlpforge.testing.encoder_decoders import (REFUSED_ENCODER_DECODERS, TINY_ENCODER_DECODERS,
                                               architecture_status, refusal)
from tests.test_seq2seq_export import TEXTS, _batch, _generate, _open

FAST = ("t5", "bart")


def _params(rows):
    return [pytest.param(row, id=row.replace(" ", ""),
                         marks=() if row in FAST else pytest.mark.matrix)
            for row in rows]


def _blocked(row: str) -> None:
    """A row ``nlpforge export`` cannot reach yet: its export must still be refused (the
    strict expectation flips once the block is lifted, so the row is then checked fully)."""
    reason = TINY_ENCODER_DECODERS[row].blocked
    if reason:
        pytest.xfail(reason)



def _export(checkpoint: Path, root: Path) -> tuple[Path, Path]:
    """Export a plain checkpoint (no training) through ``nlpforge export CHECKPOINT``'s path;
    returns (weights the export was made from, export dir)."""
    from nlpforge.export.onnx import export_model

    export_model(str(checkpoint), str(root / "export"), task="text2text-generation")
    return checkpoint, root / "export"


@pytest.fixture(scope="module", params=_params(TINY_ENCODER_DECODERS))
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    row = TINY_ENCODER_DECODERS[request.param]
    if row.blocked:
        from nlpforge.errors import UsageError

        with pytest.raises(UsageError, match="does not fit"):
            _export(row.build(root / "base"), root)
        _blocked(request.param)
    weights, export = _export(row.build(root / "base"), root)
    return request.param, weights, export


def test_export_records_the_cache_layout_of_the_config(exported):
    """The manifest's cache sizes are the config's decoder sizes (not the encoder's, where
    the row makes them differ)."""
    row, weights, export = exported
    config = json.loads((weights / "config.json").read_text())
    manifest = json.loads((export / "nlpforge.json").read_text())
    io = manifest["io"]
    assert config["model_type"] == TINY_ENCODER_DECODERS[row].model_type
    layers, heads, dim = _decoder_sizes(config)
    assert (io["num_layers"], io["num_heads"], io["head_dim"]) == (layers, heads, dim)
    assert (io["cross_num_heads"], io["cross_head_dim"]) == (heads, dim)
    generation = json.loads((weights / "generation_config.json").read_text())
    assert io["decoder_start_token_id"] == generation["decoder_start_token_id"]
    assert io["forced_bos_token_id"] == generation.get("forced_bos_token_id")
    assert manifest["validation"]["passed"]


def _decoder_sizes(config: dict) -> tuple[int, int, int]:
    """(layers, heads, head size) of the decoder, from config.json as each family names them."""
    if config["model_type"] == "encoder-decoder":  # a composite: the decoder's own config
        decoder = config["decoder"]
        heads = decoder["num_attention_heads"]
        return decoder["num_hidden_layers"], heads, decoder["hidden_size"] // heads
    if "num_decoder_attention_heads" in config:  # ProphetNet
        heads = config["num_decoder_attention_heads"]
        return config["num_decoder_layers"], heads, config["hidden_size"] // heads
    if "d_kv" in config:  # T5-like
        return config["num_decoder_layers"], config["num_heads"], config["d_kv"]
    heads = config["decoder_attention_heads"]
    return config["decoder_layers"], heads, config["d_model"] // heads


@pytest.mark.parametrize("num_beams,new_tokens", [(1, 10), (3, 8)], ids=["greedy", "beam3"])
def test_generation_matches_transformers(exported, num_beams, new_tokens):
    """Greedy and beam search through the ONNX stepper give generate()'s tokens for a batch
    of three inputs of different lengths."""
    from nlpforge.runtime.generation import search
    from nlpforge.runtime.generation.config import GenerationConfig

    _, weights, export = exported
    _, stepper, tokenizer, model = _open(weights, export)
    batch = _batch(tokenizer, TEXTS)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == len(TEXTS)
    want = _generate(model, batch, num_beams=num_beams, max_new_tokens=new_tokens)
    config = GenerationConfig.from_dir(export).with_overrides(
        {"num_beams": num_beams, "max_new_tokens": new_tokens})
    got = search.generate(stepper, batch["input_ids"], batch["attention_mask"], config)
    np.testing.assert_array_equal(got.sequences[:, :want.shape[1]], want)
    assert len(set(want[:, 1:].ravel().tolist())) > 1  # the parity saw more than one token


@pytest.mark.parametrize("name", _params(REFUSED_ENCODER_DECODERS))
def test_refused_types_name_themselves(name):
    """The tiny model is refused before any graph is traced, with an ExportError naming its
    type and why; the status table reports that message."""
    message = refusal(name)
    assert f"model type {name.split(' (')[0]!r} cannot be exported" in message
    assert architecture_status()[name] == message


#: optimum-onnx 0.1.0's text2text-generation-with-past types
OPTIMUM_ONNX = ("bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "encoder-decoder",
                "longt5", "m2m_100", "marian", "mbart", "mt5", "pegasus", "t5")


def test_status_lists_every_row():
    status = architecture_status()
    assert {status[row.model_type] for row in TINY_ENCODER_DECODERS.values()
            if not row.blocked} == {"exports"}
    assert set(status) >= set(OPTIMUM_ONNX) | {"umt5", "plbart", "fsmt", "switch_transformers"}
    assert status["encoder-decoder"] == "exports"
    assert "use_cache=True" in status["prophetnet"] and "attention_window" in status["led"]
    assert "original_full" in status["bigbird_pegasus (block_sparse)"]
