"""Feed fused ``Attention`` nodes the 2-D padding mask instead of a 4-D additive bias.

The dynamo exporter computes transformers' attention mask as a ``[batch, 1, seq, seq]`` float
bias (``Where(And(...), 0, -inf)``) from the ``attention_mask`` input, and the transformer
fusions pass it to ``com.microsoft.Attention`` as ``attention_bias``. Where that bias depends on
no other value than ``attention_mask`` (an encoder's padding mask), the same node can take the
``[batch, seq]`` mask itself (``mask_index``, int32): the bias subgraph disappears, and ONNX
Runtime's quantizer can turn the node into ``QAttention`` (it cannot quantize an ``Attention``
with ``attention_bias`` or ``qkv_hidden_sizes``). The export validates the result against
PyTorch, padded batches included, like every other pass.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

from nlpforge.export import files

MASK_INPUT = "attention_mask"
CAST_OUTPUT = "attention_mask_int32"
_MASK_INDEX, _PAST, _BIAS = 3, 4, 5


def use_padding_mask(source: Path, target: Path, threshold: int) -> dict[str, int]:
    """Rewrite ``source`` into ``target``; returns how many Attention nodes were changed."""
    model = files.load(source)
    graph = model.graph
    if MASK_INPUT not in {i.name for i in graph.input}:  # nothing to feed
        files.save(model, target, threshold)
        return {}
    producers = {out: node for node in graph.node for out in node.output}
    graph_inputs = {i.name for i in graph.input}
    changed = 0
    for node in graph.node:
        if node.op_type != "Attention" or node.domain != "com.microsoft":
            continue
        inputs = list(node.input) + [""] * (_BIAS + 1 - len(node.input))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (not inputs[_BIAS] or inputs[_MASK_INDEX] or inputs[_PAST] or len(inputs) > _BIAS + 1
                or attrs.get("unidirectional", 0)
                or _value_sources(inputs[_BIAS], producers, graph_inputs) != {MASK_INPUT}):
            continue
        inputs[_MASK_INDEX], inputs[_BIAS] = CAST_OUTPUT, ""
        while inputs[-1] == "":
            inputs.pop()
        del node.input[:]
        node.input.extend(inputs)
        sizes = attrs.get("qkv_hidden_sizes")
        if sizes and len(set(sizes)) == 1:  # equal sizes: implied by the weights
            keep = [a for a in node.attribute if a.name != "qkv_hidden_sizes"]
            del node.attribute[:]
            node.attribute.extend(keep)
        changed += 1
    if changed:
        graph.node.insert(0, helper.make_node("Cast", [MASK_INPUT], [CAST_OUTPUT],
                                              name="attention_mask_to_int32",
                                              to=onnx.TensorProto.INT32))
        _remove_dead_nodes(graph)
    files.save(model, target, threshold)
    return {"com.microsoft.Attention fed the padding mask": changed} if changed else {}


def _value_sources(name: str, producers: dict[str, onnx.NodeProto],
                   graph_inputs: set[str]) -> set[str]:
    """The graph inputs whose values flow into ``name`` (a Shape reads no values)."""
    seen, stack, sources = set(), [name], set()
    while stack:
        current = stack.pop()
        if current in seen or not current:
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None:
            if current in graph_inputs:  # else an initializer
                sources.add(current)
        elif node.op_type != "Shape":
            stack.extend(node.input)
    return sources


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers no graph output depends on any more."""
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))
    weights = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(weights)
