"""Ground truth: the FID graph executed by TensorFlow itself, fed and read exactly as ADM's evaluator does.

When the weights come from ADM's `classify_image_graph_def.pb`, that file is imported as is. Otherwise
`build_graph_def` writes the same graph from the canonical weights: the same node names, the same ops
(`ResizeBilinear`, `Conv2D` with "SAME"/"VALID", the original `BatchNormWithGlobalNormalization` kernel, `AvgPool`,
`MaxPool`, `Concat`) and an old producer version so TF still accepts that deprecated batch-norm op. Either way the
graph is run like ADM: `tf.import_graph_def(input_map={"ExpandDims:0": images})`, reading `pool_3:0` and
`mixed_6/conv:0`, and logits as `pool_3 @ softmax/weights` (the MatMul's second input, no bias).

This file describes the network a second time, independently of `network.py`, in TensorFlow's terms.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.errors import BenchError
from bench.inception.network import CONFIG
from bench.inception.weights import InceptionWeights

# The graph predates GraphDef version 9, which removed BatchNormWithGlobalNormalization from *new* graphs.
GRAPH_PRODUCER_VERSION = 8


def _tf():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise BenchError("backend='tf' needs tensorflow (pip install 'bench[tf]')") from e
    return tf


class _GraphWriter:
    """Appends NodeDefs named like the 2015-12-05 graph (`mixed_9/tower/mixed/conv`, `.../conv2d_params`, ...)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        tf = _tf()
        from tensorflow.core.framework import types_pb2

        self.tf, self.float, self.tensors = tf, types_pb2.DT_FLOAT, tensors
        self.graph_def = tf.compat.v1.GraphDef()
        self.graph_def.versions.producer = GRAPH_PRODUCER_VERSION

    def node(self, name: str, op: str, inputs: list[str], **attrs) -> str:
        node = self.graph_def.node.add(name=name, op=op, input=inputs)
        for key, value in attrs.items():
            if isinstance(value, bool):
                node.attr[key].b = value
            elif isinstance(value, float):
                node.attr[key].f = value
            elif isinstance(value, int):
                node.attr[key].i = value
            elif isinstance(value, str):
                node.attr[key].s = value.encode()
            elif isinstance(value, list):
                node.attr[key].list.i.extend(value)
            else:
                node.attr[key].CopyFrom(value)
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        proto = self.tf.make_tensor_proto(value)
        node = self.graph_def.node.add(name=name, op="Const")
        node.attr["dtype"].type = proto.dtype
        node.attr["value"].tensor.CopyFrom(proto)
        return name

    def dtype(self, type_enum: int):
        from tensorflow.core.framework import attr_value_pb2

        return attr_value_pb2.AttrValue(type=type_enum)

    def conv(self, x: str, name: str, stride: int = 1, padding: str = "SAME") -> str:
        """Conv2D -> BatchNormWithGlobalNormalization -> Relu, the Relu node carrying the layer's name."""
        t = self.tensors
        weight = self.const(f"{name}/conv2d_params", t[f"{name}.weight"].permute(2, 3, 1, 0).numpy())  # OIHW->HWIO
        conv = self.node(f"{name}/Conv2D", "Conv2D", [x, weight], T=self.dtype(self.float),
                         strides=[1, stride, stride, 1], padding=padding, data_format="NHWC")
        bn = [self.const(f"{name}/batchnorm/{field}", t[f"{name}.{key}"].numpy())
              for field, key in (("moving_mean", "mean"), ("moving_variance", "var"), ("beta", "beta"),
                                 ("gamma", "gamma"))]
        scale_after = not bool((t[f"{name}.gamma"] == 1).all())
        norm = self.node(f"{name}/batchnorm", "BatchNormWithGlobalNormalization", [conv, *bn],
                         T=self.dtype(self.float), variance_epsilon=CONFIG.bn_eps,
                         scale_after_normalization=scale_after)
        return self.node(name, "Relu", [norm], T=self.dtype(self.float))

    def pool(self, x: str, name: str, kind: str, kernel: int, stride: int, padding: str) -> str:
        return self.node(name, "MaxPool" if kind == "max" else "AvgPool", [x], T=self.dtype(self.float),
                         ksize=[1, kernel, kernel, 1], strides=[1, stride, stride, 1], padding=padding,
                         data_format="NHWC")

    def concat(self, name: str, inputs: list[str]) -> str:
        axis = self.const(f"{name}/concat_dim", np.array(3, dtype=np.int32))
        return self.node(name, "Concat", [axis, *inputs], T=self.dtype(self.float), N=len(inputs))


def build_graph_def(tensors: dict[str, torch.Tensor]):
    """The FID graph as a GraphDef, from canonical weights."""
    g = _GraphWriter(tensors)
    tf_int32 = np.int32

    # Input: ADM replaces ExpandDims:0 with its own float32 NHWC batch.
    image = g.node("Cast", "Placeholder", [], dtype=g.dtype(g.float))
    g.const("ExpandDims/dim", np.array(0, dtype=tf_int32))
    x = g.node("ExpandDims", "ExpandDims", [image, "ExpandDims/dim"], T=g.dtype(g.float))
    g.const("ResizeBilinear/size", np.array([CONFIG.input_size, CONFIG.input_size], dtype=tf_int32))
    x = g.node("ResizeBilinear", "ResizeBilinear", [x, "ResizeBilinear/size"], T=g.dtype(g.float), align_corners=False)
    x = g.node("Sub", "Sub", [x, g.const("Sub/y", np.array(float(tensors["input.sub"]), np.float32))],
               T=g.dtype(g.float))
    x = g.node("Mul", "Mul", [x, g.const("Mul/y", np.array(float(tensors["input.mul"]), np.float32))],
               T=g.dtype(g.float))

    # Stem.
    x = g.conv(x, "conv", 2, "VALID")
    x = g.conv(x, "conv_1", 1, "VALID")
    x = g.conv(x, "conv_2")
    x = g.pool(x, "pool", "max", 3, 2, "VALID")
    x = g.conv(x, "conv_3", 1, "VALID")
    x = g.conv(x, "conv_4", 1, "VALID")
    x = g.pool(x, "pool_1", "max", 3, 2, "VALID")

    for m in ("mixed", "mixed_1", "mixed_2"):  # 35x35
        x = g.concat(f"{m}/join", [
            g.conv(x, f"{m}/conv"),
            g.conv(g.conv(x, f"{m}/tower/conv"), f"{m}/tower/conv_1"),
            g.conv(g.conv(g.conv(x, f"{m}/tower_1/conv"), f"{m}/tower_1/conv_1"), f"{m}/tower_1/conv_2"),
            g.conv(g.pool(x, f"{m}/tower_2/pool", "avg", 3, 1, "SAME"), f"{m}/tower_2/conv"),
        ])

    x = g.concat("mixed_3/join", [  # 35 -> 17
        g.conv(x, "mixed_3/conv", 2, "VALID"),
        g.conv(g.conv(g.conv(x, "mixed_3/tower/conv"), "mixed_3/tower/conv_1"), "mixed_3/tower/conv_2", 2, "VALID"),
        g.pool(x, "mixed_3/pool", "max", 3, 2, "VALID"),
    ])

    for m in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):  # 17x17
        tower = x
        for layer in ("conv", "conv_1", "conv_2"):
            tower = g.conv(tower, f"{m}/tower/{layer}")
        tower_1 = x
        for layer in ("conv", "conv_1", "conv_2", "conv_3", "conv_4"):
            tower_1 = g.conv(tower_1, f"{m}/tower_1/{layer}")
        x = g.concat(f"{m}/join", [
            g.conv(x, f"{m}/conv"), tower, tower_1,
            g.conv(g.pool(x, f"{m}/tower_2/pool", "avg", 3, 1, "SAME"), f"{m}/tower_2/conv"),
        ])

    tower_1 = x  # mixed_8: 17 -> 8
    for layer in ("conv", "conv_1", "conv_2"):
        tower_1 = g.conv(tower_1, f"mixed_8/tower_1/{layer}")
    x = g.concat("mixed_8/join", [
        g.conv(g.conv(x, "mixed_8/tower/conv"), "mixed_8/tower/conv_1", 2, "VALID"),
        g.conv(tower_1, "mixed_8/tower_1/conv_3", 2, "VALID"),
        g.pool(x, "mixed_8/pool", "max", 3, 2, "VALID"),
    ])

    for m, pool in (("mixed_9", "avg"), ("mixed_10", "max")):  # 8x8; mixed_10's pool is a max pool in this graph
        a = g.conv(x, f"{m}/tower/conv")
        b = g.conv(g.conv(x, f"{m}/tower_1/conv"), f"{m}/tower_1/conv_1")
        x = g.concat(f"{m}/join", [
            g.conv(x, f"{m}/conv"),
            g.concat(f"{m}/tower/mixed", [g.conv(a, f"{m}/tower/mixed/conv"), g.conv(a, f"{m}/tower/mixed/conv_1")]),
            g.concat(f"{m}/tower_1/mixed", [g.conv(b, f"{m}/tower_1/mixed/conv"),
                                            g.conv(b, f"{m}/tower_1/mixed/conv_1")]),
            g.conv(g.pool(x, f"{m}/tower_2/pool", pool, 3, 1, "SAME"), f"{m}/tower_2/conv"),
        ])

    x = g.pool(x, "pool_3", "avg", 8, 8, "VALID")
    if "softmax.weight" in tensors:
        flat = g.node("pool_3/_reshape", "Reshape", [x, g.const("pool_3/_reshape/shape", np.array(
            [-1, CONFIG.pool_dim], dtype=tf_int32))], T=g.dtype(g.float))
        weights = g.const("softmax/weights", tensors["softmax.weight"].numpy())
        g.node("softmax/logits/MatMul", "MatMul", [flat, weights], T=g.dtype(g.float))
    return g.graph_def


class TFInception:
    """Runs the graph in a TF1-style session, like ADM's evaluator; `run` maps a batch to ADM's three outputs."""

    def __init__(self, weights: InceptionWeights):
        tf = _tf()
        if weights.graph_path is not None:
            graph_def = tf.compat.v1.GraphDef()
            graph_def.ParseFromString(weights.graph_path.read_bytes())
        else:
            graph_def = build_graph_def(weights.tensors)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
            pool3, spatial = tf.compat.v1.import_graph_def(
                graph_def, input_map={"ExpandDims:0": self.images},
                return_elements=["pool_3:0", f"{CONFIG.spatial_layer}:0"], name="")
            batch = tf.shape(self.images)[0]
            self.pool = tf.reshape(pool3, [batch, CONFIG.pool_dim])
            self.spatial = tf.reshape(spatial[..., :CONFIG.spatial_channels], [batch, -1])
            self.logits = None
            if weights.has_logits:
                softmax_weights = self.graph.get_operation_by_name("softmax/logits/MatMul").inputs[1]
                self.logits = tf.matmul(self.pool, softmax_weights)
        self.session = tf.compat.v1.Session(graph=self.graph)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        fetches = {"pool": self.pool, "spatial": self.spatial}
        if self.logits is not None:
            fetches["logits"] = self.logits
        return self.session.run(fetches, {self.images: images.astype(np.float32)})
