"""Writes a ResNet-18 (batch-norm folded into the convolutions, random He-initialised weights from a fixed seed) as
ONNX: 11.7 M parameters, 1.8 GFLOP per 224x224 image, the usual "medium vision model" of serving benchmarks. It is
not bundled (45 MB); the GPU check and the performance runs make it on the spot. Needs only numpy and onnx.

    python3 tools/make_resnet.py OUT.onnx

With --mean, it writes instead a model with ResNet-18's input (a batch of 3x224x224 FP32 images, 600 KB each) that
only averages each channel: what a request costs besides the model is then nearly all of its cost, which is what
the shared-memory measurement (load-tests/shared_memory.sh) compares.

    python3 tools/make_resnet.py OUT.onnx --mean
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int, gain: float = 1.0) -> str:
        w = self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k)) * gain
        b = self.rng.standard_normal(c_out) * 0.01
        wn, bn, out = self.name("w"), self.name("b"), self.name("conv")
        self.initializers += [
            numpy_helper.from_array(w.astype(np.float32), wn),
            numpy_helper.from_array(b.astype(np.float32), bn),
        ]
        pad = k // 2
        self.nodes.append(
            helper.make_node("Conv", [x, wn, bn], [out], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        )
        return out

    def op(self, kind: str, inputs: list, **attrs) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def block(self, x: str, c_in: int, c_out: int, stride: int) -> str:
        """A basic block: two 3x3 convolutions and the shortcut (a 1x1 convolution where the shape changes)."""
        y = self.op("Relu", [self.conv(x, c_in, c_out, 3, stride)])
        # The second convolution is scaled down so that the sum stays in range without batch statistics.
        y = self.conv(y, c_out, c_out, 3, 1, gain=0.5)
        shortcut = x if stride == 1 and c_in == c_out else self.conv(x, c_in, c_out, 1, stride)
        return self.op("Relu", [self.op("Add", [y, shortcut])])


def resnet18(seed: int = 18) -> onnx.ModelProto:
    b = Builder(seed)
    x = b.op("Relu", [b.conv("input", 3, 64, 7, 2)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        x = b.block(x, channels, width, stride)
        x = b.block(x, width, width, 1)
        channels = width
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    w = (b.rng.standard_normal((512, 1000)) * np.sqrt(1.0 / 512)).astype(np.float32)
    b.initializers += [
        numpy_helper.from_array(w, "fc_w"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"),
    ]
    b.nodes.append(helper.make_node("Gemm", [x, "fc_w", "fc_b"], ["logits"]))
    graph = helper.make_graph(
        b.nodes,
        "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def image_mean() -> onnx.ModelProto:
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["mean"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "image_mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--mean"]):
        sys.exit(__doc__)
    onnx.save(image_mean() if sys.argv[2:] == ["--mean"] else resnet18(), sys.argv[1])
