"""An int8 ONNX network's weights made float once, so OpenVINO can compile it.

OpenCV Zoo ships SFace with its weights block-quantised (DequantizeLinear with a block_size, ONNX
opset 21) and the arithmetic in float. OpenVINO's ONNX reader refuses block-wise DequantizeLinear;
onnxruntime runs it, but re-expands every weight on every call (~41 ms a face on one core, against
OpenCV's 30 and OpenVINO's 13). The weights are constants, so their DequantizeLinear and Reshape
nodes are evaluated once here, by ONNX's own reference implementation, and stored as float
initialisers: the same network, with the same values the int8 file decodes to.
"""

from __future__ import annotations

from pathlib import Path

# Nodes evaluated when every input is a constant: the weight decoding of the int8 file.
FOLDED = frozenset({"DequantizeLinear", "Reshape"})


def float_weights_model(path: Path) -> bytes:
    """The ONNX model at `path`, serialised, with its constant weight decoding folded to float."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    opsets = {opset.domain: opset.version for opset in model.opset_import}
    kept, folded = [], {}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in FOLDED and all(name in constants or name in folded for name in inputs):
            feeds = {name: folded.get(name, constants.get(name)) for name in inputs}
            outputs = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
            folded.update(zip(node.output, outputs))
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | {output.name for output in graph.output}
    initialisers = [tensor for tensor in graph.initializer if tensor.name in used]
    initialisers += [numpy_helper.from_array(value, name) for name, value in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initialisers)
    # Older exporters list every weight as a graph input too; only the real inputs stay.
    constant_names = {tensor.name for tensor in initialisers}
    real_inputs = [value for value in graph.input if value.name not in constant_names and value.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    return model.SerializeToString()
