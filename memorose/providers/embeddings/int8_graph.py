"""Keep a weight-only int8 ONNX model's weights int8 inside onnxruntime.

The pinned model stores each weight as int8 codes with float32 scales, dequantised in the
graph by ``Cast`` then ``Mul``. onnxruntime constant-folds that subgraph at load, so the
process holds float32 copies of every weight (plus MLAS's prepacked copies): +155 MiB of
RSS for 23 MB of codes, which alone broke the idle-RSS budget of a node.

This rewrite, applied in memory to the verified file (the file on disk is never changed):

- ``MatMul(x, Mul(Cast(Wq), scale[1, N]))`` becomes ``com.microsoft.MatMulNBits`` with
  ``bits=8``: the codes stay int8 (shifted to uint8 with zero point 128, one scale per
  column repeated per block) and the product runs in int8 (``accuracy_level=4``: the
  activations are quantised per block of ``block_size`` values). The same per-column
  scales, so the weights are exactly the model's; only the activations' rounding is new.
- ``Gather(Mul(Cast(Eq), scale[V, 1]), ids)`` (the token and position embedding tables)
  becomes a gather of the int8 rows and of their scales, then ``Cast`` and ``Mul`` on
  the gathered rows only.

Anything else is left as it is, so a model without this pattern loads unchanged.
Measured on all-MiniLM-L6-v2 int8 (docs/retrieval.md): +41 instead of +155 MiB at load,
faster for one query and in batches, vectors at cosine 0.997 to 1.000 of the folded graph's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Values per quantisation block of the activations (a divisor of every K of the model).
BLOCK_SIZE = 128
#: MatMulNBits' int8 compute path (onnxruntime's ``accuracy_level`` 4).
INT8_COMPUTE = 4


@dataclass
class _Rewrite:
    """Nodes and initializers to drop, and replacements keyed by the node they stand for.

    Nodes are keyed by ``id()`` of the wrappers in ``nodes``, which this record holds: a
    protobuf message's Python wrapper may be rebuilt (and its id reused) once released."""

    nodes: list[Any]
    drop_nodes: set[int] = field(default_factory=set)
    drop_initializers: set[str] = field(default_factory=set)
    replacements: dict[int, list[Any]] = field(default_factory=dict)
    initializers: list[Any] = field(default_factory=list)
    rewritten: int = 0


def keep_weights_int8(model_bytes: bytes, block_size: int = BLOCK_SIZE) -> tuple[bytes, int]:
    """The model with its int8 weights kept int8, and how many weights were rewritten
    (0: the bytes come back unchanged)."""
    import onnx  # only a node with the local model pays for it

    model = onnx.load_from_string(model_bytes)
    rewrite = _plan(model, block_size)
    if not rewrite.rewritten:
        return model_bytes, 0
    _apply(model, rewrite)
    return model.SerializeToString(), rewrite.rewritten


def _plan(model: Any, block_size: int) -> _Rewrite:
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    rewrite = _Rewrite(list(graph.node))
    consumers: dict[str, list[Any]] = {}
    for node in rewrite.nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for codes in (i for i in graph.initializer if i.data_type == TensorProto.INT8):
        dequantised = _dequantisation(codes.name, consumers, initializers)
        if dequantised is None:
            continue
        cast, mul, scale_name = dequantised
        q = numpy_helper.to_array(codes)
        scale = numpy_helper.to_array(initializers[scale_name])
        users = consumers.get(mul.output[0], [])
        if _all_matmul_weight(users, mul.output[0]) and _per_column(q, scale, block_size):
            _to_matmul_nbits(rewrite, codes.name, q, scale, users, block_size)
            rewrite.drop_initializers.add(scale_name)
        elif _all_gather_table(users, mul.output[0]) and scale.shape == (q.shape[0], 1):
            _to_int8_gather(rewrite, codes.name, scale_name, users)
        else:
            continue
        rewrite.drop_nodes.update({id(cast), id(mul)})
        rewrite.rewritten += 1
    return rewrite


def _dequantisation(
    name: str, consumers: dict[str, list[Any]], initializers: dict[str, Any]
) -> tuple[Any, Any, str] | None:
    """``(Cast, Mul, scale initializer)`` when ``name`` is only dequantised by them."""
    users = consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "Cast":
        return None
    cast = users[0]
    muls = consumers.get(cast.output[0], [])
    if len(muls) != 1 or muls[0].op_type != "Mul":
        return None
    others = [x for x in muls[0].input if x != cast.output[0]]
    if len(others) != 1 or others[0] not in initializers:
        return None
    return cast, muls[0], others[0]


def _all_matmul_weight(users: list[Any], weight: str) -> bool:
    return bool(users) and all(u.op_type == "MatMul" and list(u.input)[1:] == [weight] for u in users)


def _all_gather_table(users: list[Any], table: str) -> bool:
    return bool(users) and all(
        u.op_type == "Gather"
        and u.input[0] == table
        and all(a.name != "axis" or a.i == 0 for a in u.attribute)
        for u in users
    )


def _per_column(q: np.ndarray, scale: np.ndarray, block_size: int) -> bool:
    return q.ndim == 2 and scale.shape == (1, q.shape[1]) and q.shape[0] % block_size == 0


def _to_matmul_nbits(
    rewrite: _Rewrite, name: str, q: np.ndarray, scale: np.ndarray, users: list[Any], block_size: int
) -> None:
    from onnx import helper, numpy_helper

    k, n = q.shape
    blocks = k // block_size
    packed = (q.T.astype(np.int16) + 128).astype(np.uint8).reshape(n, blocks, block_size)
    scales = np.repeat(scale.reshape(n, 1), blocks, axis=1).reshape(-1).astype(np.float32)
    b = numpy_helper.from_array(packed, f"{name}_int8_blocks")
    s = numpy_helper.from_array(scales, f"{name}_int8_scales")
    rewrite.initializers += [b, s]
    rewrite.drop_initializers.add(name)
    for user in users:
        node = helper.make_node(
            "MatMulNBits",
            [user.input[0], b.name, s.name],
            list(user.output),
            name=f"{user.name}_int8",
            domain="com.microsoft",
            K=k,
            N=n,
            bits=8,
            block_size=block_size,
            accuracy_level=INT8_COMPUTE,
        )
        rewrite.drop_nodes.add(id(user))
        rewrite.replacements[id(user)] = [node]


def _to_int8_gather(rewrite: _Rewrite, name: str, scale_name: str, users: list[Any]) -> None:
    from onnx import TensorProto, helper

    for user in users:
        ids, out = user.input[1], user.output[0]
        rewrite.drop_nodes.add(id(user))
        rewrite.replacements[id(user)] = [
            helper.make_node("Gather", [name, ids], [f"{out}_codes"], axis=0),
            helper.make_node("Cast", [f"{out}_codes"], [f"{out}_rows"], to=TensorProto.FLOAT),
            helper.make_node("Gather", [scale_name, ids], [f"{out}_scales"], axis=0),
            helper.make_node("Mul", [f"{out}_rows", f"{out}_scales"], [out]),
        ]


def _apply(model: Any, rewrite: _Rewrite) -> None:
    from onnx import helper

    graph = model.graph
    nodes: list[Any] = []
    for node in rewrite.nodes:
        if id(node) in rewrite.replacements:
            nodes += rewrite.replacements[id(node)]
        elif id(node) not in rewrite.drop_nodes:
            nodes.append(node)
    kept = [i for i in graph.initializer if i.name not in rewrite.drop_initializers]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + rewrite.initializers)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


#: Part of the cached file's name: a change to the rewrite gets a new file.
REWRITE_VERSION = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/memorose`` (``~/.cache/memorose``): shared by every node and test
    of the machine, so the rewrite runs once per model, not once per data dir."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "memorose"


def int8_model(source: Path, source_sha256: str, cache_dir: Path | None) -> Path | bytes:
    """What onnxruntime loads for ``source`` (already verified against ``source_sha256``):
    the rewritten model's file in ``cache_dir``, written there on first use and checked
    against its recorded hash on every later one; the bytes rewritten in memory where the
    cache cannot be written. A file is the cheaper of the two: onnxruntime keeps a copy of
    a model given as bytes (+22 MiB), and a cached file spares the node importing ``onnx``."""
    if cache_dir is not None:
        target = cache_dir / f"{source.stem}-{source_sha256[:16]}-int8mm-v{REWRITE_VERSION}.onnx"
        digest_file = target.with_suffix(".sha256")
        with contextlib.suppress(OSError):
            if target.is_file() and digest_file.read_text().strip() == file_sha256(target):
                return target
        rewritten, _ = keep_weights_int8(source.read_bytes())
        try:
            write_atomically(target, rewritten)
            write_atomically(digest_file, _sha256(rewritten).encode())
            return target
        except OSError as exc:
            log.warning("cannot cache the int8 model in %s (%s): rewriting it in memory", cache_dir, exc)
            return rewritten
    return keep_weights_int8(source.read_bytes())[0]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """In 1 MiB blocks: a whole-file read would leave its 23 MB in a node's heap."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a concurrent reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
