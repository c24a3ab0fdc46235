"""4-bit weights: ONNX Runtime's block quantizer (MatMulNBits) on a bundle's fused ONNX graph.

slm's exported graph is fused by ORT's transformer optimizer: each layer's query/key/value
projections live inside an ``Attention`` contrib op and the word-embedding table inside
``EmbedLayerNormalization``, and ORT's MatMulNBits quantizer touches only plain ``MatMul`` and
``Gather`` nodes. ``unfuse_attention`` and ``unfuse_embeddings`` rewrite those two operators into
equivalent graphs whose weights it can reach (checked against the fused graph before quantizing).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import numpy as np

from slm.extras import require

MS_DOMAIN = "com.microsoft"
BLOCK_SIZES = (16, 32, 64, 128, 256)  # what GatherBlockQuantized accepts (a power of two, at least 16)
DEFAULT_BLOCK_SIZE = 32


@dataclass(frozen=True)
class Int4Recipe:
    """One way to quantize to 4 bits: which weights, and ORT's MatMulNBits quantizer options."""

    name: str
    block_size: int = DEFAULT_BLOCK_SIZE  # weights per scale along the input dimension
    # Asymmetric blocks (a zero point each) stayed closer to fp32 on BANKING77: 98.8% agreement against
    # 98.4% symmetric, for a 2% larger file (15.0 against 14.7 MB).
    symmetric: bool = False
    # MatMulNBits compute: 4 = int8 on the unpacked weights, 0 = fp32. Profiled at batch 1 here, its
    # MatMulNBits time was about half of accuracy level 0's, at the same validation accuracy (within 1 text).
    accuracy_level: int = 4
    embeddings: str = "int4"  # the word-embedding table: "int4" (GatherBlockQuantized), "int8" or "fp32"
    unfuse: bool = True  # rewrite Attention so that its query/key/value weights are 4-bit too

    def to_dict(self) -> dict:
        return asdict(self)


def default_int4_recipes(embeddings: bool, block_size: int) -> list[list[Int4Recipe]]:
    """Tiers of int4 recipes, smallest file first; the next tier is tried only when the gate refuses one.

    Measured on BANKING77 MiniLM-L6 (int8 bundle 22.3 MB; gate on 1,001 validation texts, block 32):
    4-bit MatMuls of the fused graph alone cover 36% of the weights (19.5 MB, 0.87x int8, -0.10 points,
    99.1% agreement with fp32); unfusing attention brings its QKV in (48%, 18.5 MB, 0.83x, -0.70,
    98.5%); the word-embedding table is 53% of the weights, so only a 4-bit table reaches 0.7x int8
    (99% 4-bit, 15.0 MB, 0.67x, -0.70, 98.8%; fused attention + 4-bit table 16.0 MB, 0.72x, -0.40,
    99.2%). Block 128 is 12.8 MB (0.57x) at 98.3% agreement: --block-size 128 for the smallest file.
    """
    table = "int4" if embeddings else "fp32"
    tiers = [[Int4Recipe("int4", block_size, embeddings=table)]]
    if embeddings:
        tiers.append([Int4Recipe("int4-int8-embeddings", block_size, embeddings="int8")])
    tiers.append([Int4Recipe("int4-fused-attention", block_size, embeddings="int8" if embeddings else "fp32",
                             unfuse=False)])  # fmt: skip
    return tiers


def _initializers(graph) -> dict:
    return {tensor.name: tensor for tensor in graph.initializer}


def _replace_nodes(graph, replacements: dict[int, list]) -> None:
    """Swap the nodes at the given positions for their replacement lists, keeping the graph's order."""
    nodes = []
    for index, node in enumerate(graph.node):
        nodes.extend(replacements.get(index, [node]))
    graph.ClearField("node")
    graph.node.extend(nodes)


def unfuse_attention(model) -> int:
    """Rewrite each ``Attention`` node as MatMul → Split → ``MultiHeadAttention``; returns how many it rewrote.

    The QKV projection becomes a plain MatMul that MatMulNBits can quantize; MultiHeadAttention adds the
    same QKV bias and takes the same 1-D mask index (valid lengths, right padding). A node in any other
    form (extra inputs or attributes) is left fused, and its weights stay in int8.
    """
    import onnx
    from onnx import helper

    graph = model.graph
    inits = _initializers(graph)
    replacements: dict[int, list] = {}
    for index, node in enumerate(graph.node):
        if node.op_type != "Attention" or node.domain != MS_DOMAIN:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weights = inits.get(node.input[1])
        if set(attrs) != {"num_heads"} or len(node.input) not in (3, 4) or weights is None or len(weights.dims) != 2:
            continue
        width = int(weights.dims[1]) // 3
        base = node.name or f"Attention_{index}"
        split = helper.make_tensor(f"{base}_split", onnx.TensorProto.INT64, [3], [width] * 3)
        graph.initializer.append(split)
        qkv, q, k, v = (f"{base}_{part}" for part in ("qkv", "q", "k", "v"))
        mask = node.input[3] if len(node.input) > 3 else ""
        replacements[index] = [
            helper.make_node("MatMul", [node.input[0], node.input[1]], [qkv], name=f"{base}_MatMul"),
            helper.make_node("Split", [qkv, split.name], [q, k, v], name=f"{base}_Split", axis=2),
            helper.make_node(
                "MultiHeadAttention", [q, k, v, node.input[2], mask], list(node.output), name=f"{base}_MHA",
                domain=MS_DOMAIN, num_heads=int(attrs["num_heads"]),
            ),
        ]  # fmt: skip
    _replace_nodes(graph, replacements)
    return len(replacements)


def unfuse_embeddings(model) -> bool:
    """Rewrite ``EmbedLayerNormalization`` as Gather + Slice + Add + LayerNormalization; True if it did.

    The word table then feeds a plain Gather, which ORT's quantizer turns into GatherBlockQuantized
    (4-bit rows, dequantized only for the tokens looked up). Positions are ``0..S-1`` as in the fused
    op, and its mask-index output (valid tokens per row) becomes a ReduceSum of the mask.
    """
    import onnx
    from onnx import helper

    graph = model.graph
    found = [i for i, n in enumerate(graph.node) if n.op_type == "EmbedLayerNormalization" and n.domain == MS_DOMAIN]
    if len(found) != 1:
        return False
    node = graph.node[found[0]]
    inputs = list(node.input) + [""] * (9 - len(node.input))
    ids, segments, words, positions, types, gamma, beta, mask, position_ids = inputs[:9]
    uses_mask = len(node.output) > 1 and bool(node.output[1])
    if position_ids or (uses_mask and not mask) or not (words and positions and gamma and beta):
        return False
    epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
    p = f"{node.name or 'EmbedLayerNormalization'}_unfused"
    graph.initializer.extend([
        helper.make_tensor(f"{p}_zero", onnx.TensorProto.INT64, [1], [0]),
        helper.make_tensor(f"{p}_one", onnx.TensorProto.INT64, [1], [1]),
    ])  # fmt: skip
    new = [
        helper.make_node("Gather", [words, ids], [f"{p}_words"], name=f"{p}_WordGather", axis=0),
        helper.make_node("Shape", [ids], [f"{p}_length"], name=f"{p}_Shape", start=1, end=2),
        helper.make_node("Slice", [positions, f"{p}_zero", f"{p}_length", f"{p}_zero"], [f"{p}_positions"],
                         name=f"{p}_PositionSlice"),
        helper.make_node("Add", [f"{p}_words", f"{p}_positions"], [f"{p}_sum"], name=f"{p}_AddPositions"),
    ]  # fmt: skip
    total = f"{p}_sum"
    if segments and types:
        new += [
            helper.make_node("Gather", [types, segments], [f"{p}_types"], name=f"{p}_TypeGather", axis=0),
            helper.make_node("Add", [total, f"{p}_types"], [f"{p}_sum_types"], name=f"{p}_AddTypes"),
        ]
        total = f"{p}_sum_types"
    new.append(helper.make_node("LayerNormalization", [total, gamma, beta], [node.output[0]], name=f"{p}_LayerNorm",
                                axis=-1, epsilon=float(epsilon)))  # fmt: skip
    if uses_mask:
        new.append(helper.make_node("ReduceSum", [mask, f"{p}_one"], [node.output[1]], name=f"{p}_MaskIndex",
                                    keepdims=0))  # fmt: skip
    _replace_nodes(graph, {found[0]: new})
    return True


def rewrite(source: Path, target: Path, recipe: Int4Recipe) -> dict:
    """Write ``target``: the fp32 graph ``source`` with the fused operators unfused as ``recipe`` needs.

    Returns what was rewritten; the caller checks the rewritten graph against ``source`` before quantizing.
    """
    import onnx

    model = onnx.load(str(source))
    attention = unfuse_attention(model) if recipe.unfuse else 0
    embeddings = unfuse_embeddings(model) if recipe.embeddings == "int4" else False
    onnx.save(model, str(target))
    return {"attention_unfused": attention, "embeddings_unfused": embeddings}


def _nbits_quantizer():
    """ORT's MatMulNBitsQuantizer, imported without the ``logging.basicConfig`` its module runs on import
    (which would give the root logger a stderr handler for the rest of the process)."""
    require("onnx_ir", "train", what="--quantize int4")
    with mock.patch.object(logging, "basicConfig", lambda *args, **kwargs: None):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    return MatMulNBitsQuantizer


def quantize_int4(source: Path, target: Path, recipe: Int4Recipe) -> dict[str, float]:
    """Write ``target``: the (rewritten) fp32 graph ``source`` with 4-bit weights; returns the precision shares.

    MatMul weights (and with ``embeddings="int4"`` the unfused word table) go through ORT's block
    quantizer; what stays fused (Attention, EmbedLayerNormalization) goes through ORT's dynamic int8
    quantizer, as ``--quantize int8`` does, unless ``embeddings="fp32"`` keeps the table in fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    quantizer = _nbits_quantizer()(
        model, bits=4, block_size=recipe.block_size, is_symmetric=recipe.symmetric,
        accuracy_level=recipe.accuracy_level or None, quant_axes=(("MatMul", 0), ("Gather", 1)),
        op_types_to_quantize=("MatMul", "Gather") if recipe.embeddings == "int4" else ("MatMul",),
    )  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero block (the [PAD] row) has scale 0: handled
        quantizer.process()
    model = quantizer.model.model
    fused = {node.op_type for node in model.graph.node if node.domain == MS_DOMAIN}
    dynamic = ["Attention"] if "Attention" in fused else []
    if recipe.embeddings != "fp32" and "EmbedLayerNormalization" in fused:
        dynamic.append("EmbedLayerNormalization")
    if not dynamic:
        onnx.save(model, str(target))
        return precision_shares(model)
    staged = target.with_name(f"{target.stem}-nbits.onnx")
    onnx.save(model, str(staged))
    quantize_dynamic(
        str(staged), str(target), per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=dynamic,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )  # fmt: skip
    staged.unlink()
    return precision_shares(onnx.load(str(target)))


# Inputs of the 4-bit contrib ops that hold quantization parameters, not weights.
_NBITS_PARAMS = {"MatMulNBits": (2, 3), "GatherBlockQuantized": (2, 3)}


def precision_shares(model) -> dict[str, float]:
    """Share of the model's weight elements (matrices and tables) stored at 4, 8 and 32 bits.

    Counted per element, so a share is also the share of the fp32 source's weight bytes. Scales and
    zero points of the 4-bit blocks are overhead, not weights.
    """
    import onnx

    consumers: dict[str, tuple[str, int]] = {}
    nbits: dict[str, int] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, (node.op_type, index))
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            nbits[node.input[1]] = int(attrs["K"]) * int(attrs["N"])
    counts = {"int4": 0, "int8": 0, "fp32": 0}
    for tensor in model.graph.initializer:
        op, index = consumers.get(tensor.name, ("", -1))
        if index in _NBITS_PARAMS.get(op, ()):
            continue
        if tensor.name in nbits:
            counts["int4"] += nbits[tensor.name]
        elif op == "GatherBlockQuantized" and index == 0:
            counts["int4"] += int(np.prod(tensor.dims))
        elif len(tensor.dims) >= 2 and tensor.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            counts["int8"] += int(np.prod(tensor.dims))
        elif len(tensor.dims) >= 2 and tensor.data_type == onnx.TensorProto.FLOAT:
            counts["fp32"] += int(np.prod(tensor.dims))
    total = max(sum(counts.values()), 1)
    return {kind: round(n / total, 4) for kind, n in counts.items()}
