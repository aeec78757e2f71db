"""Export validation tells float32 rounding from a wrong graph: an output further than --atol
from float32 PyTorch passes only when float64 PyTorch shows that float32 itself is that far
off (``validate.compare`` with ``exact``), so an ill-conditioned model exports and a graph with
one weight changed does not."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nlpforge.errors import ExportError
from nlpforge.export.validate import ROUNDING_MARGIN, compare
from tests.conftest import write_jsonl
from tests.test_seq2seq_export import ROWS

ATOL = 1e-4


def _runners(noise: float, bias: float = 0.0):
    """float64 truth, a float32 reference off by about ``noise`` and a candidate off by about
    ``noise`` the other way, plus ``bias`` (a real divergence)."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((2, 5, 8)) * 10
    ref = truth + rng.uniform(-noise, noise, truth.shape)
    cand = truth + rng.uniform(-noise, noise, truth.shape) + bias
    return ([("case", {"x": np.zeros(1)})], lambda f: {"y": ref.astype(np.float32)},
            lambda f: {"y": cand.astype(np.float32)}, lambda f: {"y": truth})


def test_rounding_beyond_atol_passes_only_with_the_float64_yardstick():
    cases, ref, cand, exact = _runners(noise=3e-3)
    with pytest.raises(ExportError, match=r"y on 'case': max abs diff .* > 0.0001"):
        compare(cases, ref, cand, ATOL)
    report = compare(cases, ref, cand, ATOL, exact)
    assert report["passed"] and report["max_abs_diff"]["y"] > ATOL
    seen = report["rounding"]["y"]
    assert ATOL < seen["export"] <= ROUNDING_MARGIN * seen["float32_pytorch"]


def test_a_divergence_beyond_rounding_fails_with_the_yardstick():
    cases, ref, cand, exact = _runners(noise=3e-3, bias=0.05)
    with pytest.raises(ExportError, match=r"from float64 PyTorch, more than 4 x float32"):
        compare(cases, ref, cand, ATOL, exact)


def test_a_nudged_float32_run_widens_the_yardstick_when_the_reference_lands_close():
    """One float32 run close to float64 by luck (here exact) makes rounding look tighter than
    it is; a second, nudged float32 run that lands as far as the candidate lets it pass."""
    cases, _, cand, exact = _runners(noise=3e-3)
    lucky = lambda f: {"y": exact(f)["y"].astype(np.float32)}  # noqa: E731
    with pytest.raises(ExportError, match=r"more than 4 x float32's own"):
        compare(cases, lucky, cand, ATOL, exact)
    nudged = lambda f: {"y": (exact(f)["y"] - 2e-3).astype(np.float32)}  # noqa: E731
    report = compare(cases, lucky, cand, ATOL, exact, nudged)
    assert report["passed"] and report["rounding"]["y"]["float32_nudged"] > ATOL


def test_the_nudged_run_flips_last_bits_and_restores_the_weights_exactly():
    import torch

    from nlpforge.export.seq2seq_graphs import run_nudged

    class Wrapper(torch.nn.Module):
        signature = SimpleNamespace(inputs=["x"], outputs=["y"])

        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(64, 64)

        def forward(self, x):
            return (self.model(x),)

    torch.manual_seed(0)
    wrapper = Wrapper()
    before = {k: v.clone() for k, v in wrapper.model.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    plain = wrapper(torch.from_numpy(x))[0].detach().numpy()
    got = run_nudged(wrapper, {"x": x})["y"]
    assert 0 < np.max(np.abs(got - plain)) < 1e-4
    assert all(torch.equal(before[k], v) for k, v in wrapper.model.state_dict().items())


def test_within_atol_needs_no_float64_run():
    cases, ref, cand, _ = _runners(noise=1e-5)

    def exact(features):
        raise AssertionError("float64 run not needed")

    assert compare(cases, ref, cand, ATOL, exact)["rounding"] == {}


@pytest.fixture(scope="module")
def large_init_t5(tmp_path_factory):
    """The reported model: a 2-layer T5 with large initial weights, trained one step, whose
    float32 rounding exceeds 1e-5 of its outputs' magnitude on long right-padded inputs."""
    from nlpforge.export.onnx import export_run
    from nlpforge.testing.encoder_decoders import make_tiny_t5
    from nlpforge.training.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("large-init-t5")
    base = make_tiny_t5(root / "base", initializer_factor=3.0)
    train(TrainConfig(task="text2text-generation", model=str(base),
                      train=str(write_jsonl(root / "train.jsonl", ROWS)), output=str(root / "run"),
                      max_steps=1, batch_size=8, lr=1e-4, progress=False))
    manifest = export_run(str(root / "run"), str(root / "export"))
    return root / "run", root / "export", manifest


def test_large_init_t5_exports(large_init_t5):
    """Its graphs differ from float32 PyTorch by more than --atol somewhere, and each such
    output is as close to float64 PyTorch as float32 PyTorch is (within the margin)."""
    _, export, manifest = large_init_t5
    graphs = manifest["validation"]["graphs"]
    assert manifest["validation"]["passed"] and (export / "nlpforge.json").is_file()
    judged = [r for g in graphs.values() for r in g["rounding"].values()]
    assert judged, "no output needed the float64 yardstick: the test lost its point"
    assert max(max(g["max_abs_diff"].values()) for g in graphs.values()) > ATOL
    for r in judged:
        float32 = max(r["float32_pytorch"], r["float32_nudged"])
        assert r["export"] <= max(ATOL, ROUNDING_MARGIN * float32)


@pytest.mark.parametrize("graph,scale", [("encoder_model.onnx", 1.01),
                                         ("decoder_with_past_model.onnx", 1.01)])
def test_a_graph_with_one_weight_changed_fails(large_init_t5, tmp_path, graph, scale):
    """One weight initializer of the exported file scaled by 1 % fails validation, in the
    same ill-conditioned model whose rounding passes."""
    import onnx
    from onnx import numpy_helper
    from transformers import AutoModelForSeq2SeqLM

    from nlpforge.export.convert import eager_attention
    from nlpforge.export.seq2seq import validate
    from nlpforge.export.seq2seq_graphs import cache_layout, graphs

    run, export, manifest = large_init_t5
    model = onnx.load(str(export / graph))
    weights = [t for t in model.graph.initializer if len(t.dims) == 2 and
               numpy_helper.to_array(t).dtype == np.float32 and min(t.dims) > 4]
    target = weights[len(weights) // 2]
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * scale, target.name))
    corrupted = tmp_path / graph
    onnx.save(model, str(corrupted))
    torch_model = AutoModelForSeq2SeqLM.from_pretrained(run).eval()
    eager_attention(torch_model)
    layout = cache_layout(torch_model)
    wrappers = graphs(torch_model, layout)
    pad = manifest["io"]["pad_token_id"]
    tokenizer = SimpleNamespace(max_length=64)
    assert validate(wrappers, export, layout, tokenizer, pad, ATOL)["passed"]  # as exported
    with pytest.raises(ExportError, match=rf"{graph}: the exported model differs"):
        validate(wrappers, export, layout, tokenizer, pad, ATOL, {graph: corrupted})
