"""Weight storage from a config's ``quantization_config``: which tensors are quantized, in what format.

A checkpoint that declares ``quantization_config`` stores some of its weights in a quantized format (the
values plus their scales / zero points); the rest stays at the checkpoint dtype (bf16 here, the default
weight dtype). ``from_config`` reads the dict into a ``Quantization``: a format for the linear layers'
matrices (``TensorClass.MATRIX``), one for the routed experts (``TensorClass.EXPERTS``) and the module-name
patterns left unquantized. ``traffic`` asks ``Quantization.format_for`` for each weight of each node.

What every format leaves unquantized (per the quantizers and vLLM's model code):

- embeddings and the lm_head (``TensorClass.EMBEDDING``): none of these quantizers converts an embedding,
  and transformers adds the output embedding to ``modules_to_not_convert`` (``get_keys_to_not_convert``);
- norm scales and biases (``TensorClass.VECTOR``);
- MoE routers: vLLM builds the router as an unquantized ``ReplicatedLinear(..., quant_config=None)``
  (``vllm/model_executor/models/deepseek_v2.py``, ``mixtral.py``, ``qwen3_moe.py``), DeepSeek's fp8
  checkpoint stores ``mlp.gate.weight`` in bf16 (no ``weight_scale_inv``), and gpt-oss lists
  ``model.layers.*.mlp.router`` in ``modules_to_not_convert``;
- modules matching ``modules_to_not_convert`` / ``ignore`` / ``exclude_modules`` / ``llm_int8_skip_modules``,
  matched as transformers' ``should_convert_module`` does: a regex from the start of the module name up
  to a module boundary, or a suffix.

Formats and their exact byte rule (``hardware.dtypes.weight_bytes``; a matrix is out x in, groups run along
the input features):

- ``mxfp4`` (gpt-oss): OCP Microscaling Formats (MX) v1.0, MXFP4: FP4 E2M1 elements with one E8M0 (8-bit)
  shared scale per block of 32: 4 + 8/32 = 4.25 bits per element. transformers' ``Mxfp4Config`` converts
  only the MoE experts (``integrations/mxfp4.py`` replaces ``GptOssExperts``; the checkpoint stores
  ``*_blocks`` (uint8, 2 values each) and ``*_scales`` (uint8) per expert matrix).
- ``fp8`` with ``weight_block_size`` [bo, bi] (DeepSeek-V3, MiniMax-M2; transformers'
  ``FineGrainedFP8Config``, vLLM's ``Fp8Config``): 8-bit e4m3 values and one fp32 ``weight_scale_inv`` per
  bo x bi block: ceil(out/bo) * ceil(in/bi) fp32 scales per matrix (DeepSeek-V3's ``inference/model.py``
  ``Linear``: ``scale = Parameter(torch.empty(scale_out_features, scale_in_features, dtype=torch.float32))``).
  ``scale_fmt: ue8m0`` (V3.1 / V3.2) makes the scales powers of two, still stored as fp32. Without a block
  size: one fp32 scale per tensor (vLLM's per-tensor fp8).
- ``modelopt`` NVFP4: FP4 E2M1 values, one fp8 E4M3 scale per 16 elements, and per tensor an fp32
  ``weight_scale_2`` (global scale) and an fp32 ``input_scale`` (vLLM ``modelopt.py``,
  ``ModelOptNvFp4LinearMethod.create_weights``): 4 + 8/16 bits per element + 64 bits per tensor.
  ``modelopt`` FP8: fp8 values + fp32 ``weight_scale`` and ``input_scale`` per tensor.
- ``gptq`` / ``awq``: ``bits``-bit integers with one fp16 scale and one ``bits``-bit zero point per
  ``group_size`` input features of a row (GPTQ's ``qweight`` / ``qzeros`` / ``scales``; AWQ's the same,
  without zero points when ``zero_point`` is false); ``group_size`` -1 = one group per row. GPTQ's
  ``g_idx`` (one int32 per input feature, for act-order) is not counted. 4 bits, group 128: the existing
  ``int4`` format, 4 + (16 + 4)/128 bits.
- ``bitsandbytes`` 4-bit (nf4 / fp4): 4-bit values, one fp32 absmax per block of 64
  (``bnb.functional.quantize_4bit(blocksize=64)``); with ``bnb_4bit_use_double_quant`` the absmax values
  are themselves quantized to 8 bits with one fp32 scale per 256 of them (``compress_statistics``:
  ``quantize_blockwise(absmax, blocksize=256)``). The per-tensor code book (16 or 256 fp32) and offset are
  not counted. 8-bit (LLM.int8): int8 values + one fp32 scale per output row (``Int8Params.SCB``).
  bitsandbytes replaces ``nn.Linear`` modules only: the routed experts (3-D parameters in transformers 5)
  stay at the checkpoint dtype.
- ``compressed-tensors``: each ``config_groups`` entry's ``weights``: ``num_bits``, ``type`` (int / float),
  ``strategy`` (tensor, channel, group, block, tensor_group), ``group_size`` / ``block_structure``,
  ``symmetric``; scales stored at the checkpoint dtype (16 bits) except ``tensor_group`` (NVFP4: an fp8
  scale per group and an fp32 global scale); an asymmetric int format adds a zero point per scale
  (``num_bits`` wide). The first group whose ``targets`` include ``Linear`` is used.

Unknown methods (and settings this module cannot price) give a note and the default storage, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .facts import TensorClass, Weight
from .hardware.dtypes import FP8, INT4, DType, int4

NONE, CONFIG = "none", "config"
MODES: tuple[str, ...] = (CONFIG, NONE)

_ROUTER, _EXPERTS = "router", "experts"  # graph.node.NodeKind values (not imported: no graph import here)

# --- formats -------------------------------------------------------------------------------------------

# OCP MX v1.0: FP4 (E2M1) elements, an E8M0 scale per 32.
MXFP4 = DType(name="mxfp4", bits=4, group_size=32, scale_bits=8)
# NVFP4: E2M1 values, an E4M3 scale per 16, fp32 weight_scale_2 + fp32 input_scale per tensor.
NVFP4 = DType(name="nvfp4", bits=4, group_size=16, scale_bits=8, tensor_scale_bits=64)
# ModelOpt FP8: fp32 weight_scale + fp32 input_scale per tensor.
FP8_TENSOR = DType(name="fp8-tensor", bits=8, tensor_scale_bits=64)


def fp8_block(block_out: int, block_in: int) -> DType:
    """fp8 values with one fp32 scale per ``block_out x block_in`` block (DeepSeek-V3: 128 x 128)."""
    return DType(name=f"fp8-b{block_out}x{block_in}", bits=8, group_size=block_in, block_rows=block_out,
                 scale_bits=32)


def int_grouped(bits: int, group_size: int | None, zero_point: bool = True, scale_bits: int = 16) -> DType:
    """``bits``-bit integers, a ``scale_bits`` scale (and a ``bits``-bit zero point) per ``group_size``
    input features of a row; ``group_size`` None: one per row (per channel)."""
    zero = bits if zero_point else 0
    if group_size is None:
        return DType(name=f"int{bits}-channel{'' if zero_point else '-sym'}", bits=bits,
                     channel_scale_bits=scale_bits + zero)
    if bits == 4 and zero_point and scale_bits == 16:
        return int4(group_size)  # the existing int4 / int4-gN formats
    return DType(name=f"int{bits}-g{group_size}{'' if zero_point else '-sym'}", bits=bits, group_size=group_size,
                 scale_bits=scale_bits, zero_point_bits=zero)


def bnb_4bit(quant_type: str = "nf4", double_quant: bool = False, blocksize: int = 64) -> DType:
    """bitsandbytes 4-bit: fp32 absmax per ``blocksize``; double quant: 8-bit absmax + fp32 per 256."""
    if double_quant:
        return DType(name=f"{quant_type}-dq", bits=4, group_size=blocksize, scale_bits=8, super_group=256,
                     super_scale_bits=32)
    return DType(name=quant_type, bits=4, group_size=blocksize, scale_bits=32)


BNB_INT8 = DType(name="int8-llm", bits=8, channel_scale_bits=32)  # LLM.int8(): fp32 SCB per row


# --- the resolved storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """Storage of a quantized checkpoint: ``matrix`` for linear layers, ``experts`` for routed experts (None:
    the default weight dtype), ``skip`` module patterns left unquantized, ``notes`` what could not be
    priced. Hashable: part of ``traffic.Dtypes``."""

    method: str
    matrix: DType | None = None
    experts: DType | None = None
    skip: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def skipped(self, path: str) -> bool:
        """Whether the module at ``path`` is left unquantized (transformers' ``should_convert_module``)."""
        name = path.split(":", 1)[0]
        boundary = r"(?:(?<=\.)|(?=\.|$))"
        for key in self.skip:
            try:
                if re.match(rf"(?:{key}){boundary}", name):
                    return True
            except re.error:
                pass
            if name.endswith(key):
                return True
        return False

    def format_for(self, path: str, kind: str, weight: Weight) -> DType | None:
        """The storage of ``weight`` of the node at ``path`` (of ``kind``); None: the default."""
        if kind == _ROUTER or self.skipped(path):
            return None
        if weight.tensor_class == TensorClass.MATRIX:
            return self.matrix
        if weight.tensor_class == TensorClass.EXPERTS:
            return self.experts
        if weight.tensor_class == TensorClass.VECTOR and kind == _EXPERTS and weight.name == "weight":
            # an experts node whose family names no experts weight (its params fell to the default
            # vector, e.g. deepseek): they are the experts' matrices, grouped along the flat tensor
            return self.experts
        return None

    def describe(self) -> str:
        parts = []
        if self.matrix is not None:
            parts.append(f"linear layers {self.matrix.name}")
        if self.experts is not None:
            parts.append(f"routed experts {self.experts.name}")
        what = ", ".join(parts) if parts else "nothing quantized"
        skip = f"; not converted: {', '.join(self.skip)}" if self.skip else ""
        return f"{self.method}: {what}; embeddings, lm_head, routers, norms and biases unquantized{skip}"


def _unknown(method: str, why: str) -> Quantization:
    return Quantization(method=method, notes=(f"quantization_config {why}: weights left at the default dtype",))


def _patterns(*values: Any) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(str(x) for x in v if isinstance(x, str))
    return tuple(out)


def _int(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    return default


def _fp8(q: Mapping[str, Any], method: str) -> Quantization:
    block = q.get("weight_block_size")
    skip = _patterns(q.get("modules_to_not_convert"), q.get("ignored_layers"))
    if isinstance(block, (list, tuple)) and len(block) == 2 and all(_int(b) and b > 0 for b in block):
        fmt = fp8_block(int(block[0]), int(block[1]))
    elif block is None:
        fmt = DType(name="fp8-tensor", bits=8, tensor_scale_bits=32)  # one fp32 weight_scale per tensor
    else:
        return _unknown(method, f"weight_block_size {block!r} is not [rows, cols]")
    return Quantization(method=method, matrix=fmt, experts=fmt, skip=skip)


def _gptq_awq(q: Mapping[str, Any], method: str) -> Quantization:
    bits = _int(q.get("bits", q.get("w_bit")), 4)
    group = _int(q.get("group_size", q.get("q_group_size")), 128)
    zero = bool(q.get("zero_point", True)) if method == "awq" else True  # GPTQ stores qzeros even when sym
    if bits not in (2, 3, 4, 8) or group is None or group == 0 or group < -1:
        return _unknown(method, f"bits {bits!r} / group_size {group!r} not priced")
    fmt = int_grouped(bits, None if group == -1 else group, zero_point=zero)
    skip = _patterns(q.get("modules_to_not_convert"))
    return Quantization(method=method, matrix=fmt, experts=fmt, skip=skip)


def _bnb(q: Mapping[str, Any]) -> Quantization:
    skip = _patterns(q.get("llm_int8_skip_modules"))
    if q.get("load_in_4bit"):
        kind = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
        fmt = bnb_4bit(kind, bool(q.get("bnb_4bit_use_double_quant", False)))
        return Quantization(method="bitsandbytes", matrix=fmt, skip=skip)
    if q.get("load_in_8bit"):
        return Quantization(method="bitsandbytes", matrix=BNB_INT8, skip=skip)
    return _unknown("bitsandbytes", "sets neither load_in_4bit nor load_in_8bit")


def _modelopt(q: Mapping[str, Any]) -> Quantization:
    nested = q.get("quantization")
    inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else q  # hf_quant_config.json layout
    algo = str(inner.get("quant_algo", "")).upper()
    skip = _patterns(inner.get("exclude_modules"), q.get("ignore"), q.get("modules_to_not_convert"))
    kv = inner.get("kv_cache_quant_algo")
    notes = (f"the checkpoint's KV cache is {kv}: pass kv_dtype='fp8' to count it so",) if kv else ()
    if algo == "NVFP4":
        group = _int(inner.get("group_size"), 16)
        fmt = NVFP4 if group == 16 else DType(name=f"nvfp4-g{group}", bits=4, group_size=group or 16, scale_bits=8,
                                              tensor_scale_bits=64)
        return Quantization(method="modelopt", matrix=fmt, experts=fmt, skip=skip, notes=notes)
    if algo == "FP8":
        return Quantization(method="modelopt", matrix=FP8_TENSOR, experts=FP8_TENSOR, skip=skip, notes=notes)
    return _unknown("modelopt", f"quant_algo {algo or None!r} is not priced (NVFP4 and FP8 are)")


def _ct_weights(w: Mapping[str, Any]) -> DType | str:
    """A compressed-tensors ``weights`` scheme as a format, or why it cannot be priced."""
    bits, kind = _int(w.get("num_bits")), str(w.get("type", "int"))
    strategy, group = str(w.get("strategy", "tensor")), _int(w.get("group_size"))
    zero = kind == "int" and not w.get("symmetric", True)
    if bits is None or bits <= 0:
        return f"num_bits {w.get('num_bits')!r}"
    if strategy == "tensor_group":  # NVFP4: fp8 scale per group + fp32 global scale
        return DType(name=f"{kind}{bits}-tg{group or 16}", bits=bits, group_size=group or 16, scale_bits=8,
                     tensor_scale_bits=32)
    per = 16 + (bits if zero else 0)  # a checkpoint-dtype (bf16) scale, plus a zero point when asymmetric
    name = f"{'fp' if kind == 'float' else 'int'}{bits}"
    if strategy == "tensor":
        return DType(name=f"{name}-tensor", bits=bits, tensor_scale_bits=per)
    if strategy == "channel":
        return DType(name=f"{name}-channel", bits=bits, channel_scale_bits=per)
    if strategy == "group" and group and group > 0:
        return DType(name=f"{name}-g{group}", bits=bits, group_size=group, scale_bits=16,
                     zero_point_bits=bits if zero else 0)
    block = w.get("block_structure")
    if strategy == "block" and isinstance(block, (list, tuple)) and len(block) == 2 and all(_int(b) for b in block):
        return DType(name=f"{name}-b{block[0]}x{block[1]}", bits=bits, group_size=int(block[1]),
                     block_rows=int(block[0]), scale_bits=16, zero_point_bits=bits if zero else 0)
    return f"strategy {strategy!r} (group_size {group!r}, block_structure {block!r})"


def _compressed_tensors(q: Mapping[str, Any]) -> Quantization:
    method, skip = "compressed-tensors", _patterns(q.get("ignore"))
    groups = q.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        return _unknown(method, "has no config_groups")
    for name, g in groups.items():
        if not isinstance(g, Mapping):
            continue
        targets = _patterns(g.get("targets"))
        w = g.get("weights")
        if "Linear" not in targets or not isinstance(w, Mapping):
            continue
        fmt = _ct_weights(w)
        if isinstance(fmt, str):
            return _unknown(method, f"config_groups.{name}.weights {fmt} is not priced")
        notes: tuple[str, ...] = () if len(groups) == 1 else (
            f"compressed-tensors: {len(groups)} config_groups; the Linear group {name!r} is applied to every "
            "linear layer",)
        if isinstance(q.get("kv_cache_scheme"), Mapping):
            notes += ("the checkpoint quantizes the KV cache (kv_cache_scheme): pass kv_dtype to count it so",)
        return Quantization(method=method, matrix=fmt, experts=fmt, skip=skip, notes=notes)
    return _unknown(method, "has no config group targeting Linear with weights")


def from_config(config: Any) -> Quantization | None:
    """The storage a config's ``quantization_config`` declares (None: the config has none). ``config``: the
    raw config dict, a ``ModelConfig`` (its ``data``), or a ``quantization_config`` dict itself."""
    data = getattr(config, "data", config)
    if not isinstance(data, Mapping):
        return None
    q = data.get("quantization_config", data if "quant_method" in data else None)
    if q is None:
        return None
    if not isinstance(q, Mapping):
        return _unknown("?", f"is a {type(q).__name__}, not an object")
    method = str(q.get("quant_method", "")).lower().replace("_", "-")
    if method == "mxfp4":
        return Quantization(method="mxfp4", experts=MXFP4, skip=_patterns(q.get("modules_to_not_convert")))
    if method in ("fp8", "fbgemm-fp8"):
        return _fp8(q, method)
    if method in ("gptq", "awq"):
        return _gptq_awq(q, method)
    if method == "bitsandbytes" or (not method and (q.get("load_in_4bit") or q.get("load_in_8bit"))):
        return _bnb(q)
    if method == "modelopt":
        return _modelopt(q)
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    return _unknown(method or "?", f"quant_method {q.get('quant_method')!r} is not known (known: mxfp4, fp8, "
                                   "modelopt, gptq, awq, bitsandbytes, compressed-tensors)")


def config_data(source: Any) -> dict[str, Any] | None:
    """The raw config of a model source (preset name, path, dict, ``ModelConfig``, ``PretrainedConfig``); for
    a ``ModelProfile``, the config of the preset it was built from (None when it was not built from one)."""
    from .config.loader import ModelConfig, load_config
    from .profile import ModelProfile, profile_model

    if isinstance(source, ModelConfig):
        return source.data
    if isinstance(source, dict):
        return source
    if isinstance(source, ModelProfile):
        from .config.presets import find_preset

        name = source.spec.name
        if not name or find_preset(name) is None:
            return None
        cfg = load_config(name)
        return cfg.data if profile_model(cfg) is source else None
    try:
        return load_config(source).data
    except Exception:  # the profile was built from it already; a second load failing is not this module's error
        return None


def resolve(source: Any, weight_dtype: Any, quantization: Any) -> tuple[Quantization | None, list[str]]:
    """The quantization to apply and the notes that say so.

    Precedence: ``quantization="none"``: none; a ``Quantization``: that one; ``"config"`` (the default):
    the config's ``quantization_config`` unless ``weight_dtype`` is given explicitly (not None), which
    stores every matrix at that dtype and overrides the config (a note says so).
    """
    if isinstance(quantization, Quantization):
        return quantization, [f"weights stored as {quantization.describe()}", *quantization.notes]
    if quantization not in MODES:
        from .errors import QueryError

        raise QueryError(f"quantization must be one of {', '.join(MODES)}, got {quantization!r}")
    if quantization == NONE:
        return None, []
    q = from_config(config_data(source))
    if q is None:
        return None, []
    if weight_dtype is not None:
        name = weight_dtype if isinstance(weight_dtype, str) else getattr(weight_dtype, "name", weight_dtype)
        return None, [f"weight dtype {name} overrides the config's quantization_config ({q.method})"]
    return q, [f"weights stored as the config's quantization_config: {q.describe()}", *q.notes]


__all__ = ["BNB_INT8", "CONFIG", "FP8", "FP8_TENSOR", "INT4", "MODES", "MXFP4", "NONE", "NVFP4", "Quantization",
           "bnb_4bit", "config_data", "fp8_block", "from_config", "int_grouped", "resolve"]
