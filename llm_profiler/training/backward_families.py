"""Registration of the families whose backward has rules of its own modules (``backward_mla``, ...):
``training.backward.FAMILY_BACKWARD`` (model type -> the model's backward counts) and ``VALIDATED``, the
types among them proven exact per node against autograd (tests/test_training_backward_mla.py, ...)."""

from __future__ import annotations

from . import backward as base
from . import (
    backward_deltanet,
    backward_dsv4,
    backward_gemma,
    backward_lightning,
    backward_mla,
    backward_moe,
    backward_routed,
    backward_sinks,
    backward_ssm,
)

for _type in backward_mla.MLA_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_mla.mla_backward
for _type in backward_moe.LLAMA4_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_moe.llama4_backward
for _type in backward_moe.HUNYUAN_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_moe.hunyuan_backward
base.FAMILY_BACKWARD["ernie4_5_moe"] = backward_moe.ernie4_5_moe_backward
base.FAMILY_BACKWARD["phimoe"] = backward_moe.phimoe_backward
base.FAMILY_BACKWARD["mimo_v2_flash"] = backward_moe.mimo_v2_flash_backward
for _type in backward_ssm.SSM_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_ssm.ssm_backward
base.FAMILY_BACKWARD["granitemoehybrid"] = backward_ssm.granitemoehybrid_backward
base.FAMILY_BACKWARD["lfm2"] = backward_ssm.lfm2_backward
base.FAMILY_BACKWARD["mamba"] = backward_ssm.mamba_backward
base.FAMILY_BACKWARD["jamba"] = backward_ssm.jamba_backward
base.FAMILY_BACKWARD["falcon_h1"] = backward_ssm.falcon_h1_backward
base.FAMILY_BACKWARD["falcon_mamba"] = backward_ssm.mamba_backward  # Mamba-1 with weightless dt / B / C norms
base.FAMILY_BACKWARD["bamba"] = backward_ssm.bamba_backward
base.FAMILY_BACKWARD["lfm2_moe"] = backward_ssm.lfm2_backward
# backward-only aten ops of the SSM / conv layers (both sides count them through ATEN_BACKWARD)
base.ATEN_BACKWARD["convolution_backward"] = backward_ssm.aten_conv
base.ATEN_BACKWARD["softplus_backward"] = backward_ssm.aten_softplus
for _type in backward_moe.GPT_OSS_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_moe.gpt_oss_backward
for _type in backward_lightning.LIGHTNING_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_lightning.minimax_backward
for _type in backward_deltanet.DELTANET_TYPES:  # qwen3_next, qwen3_5: the chunked gated delta rule
    base.FAMILY_BACKWARD[_type] = backward_deltanet.deltanet_backward
# deepseek_v4: hyper-connections, compressed attention, sinks, sqrtsoftplus / hash routers
for _type in backward_dsv4.DSV4_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_dsv4.dsv4_backward

# granite_swa, granitemoe_swa: the generic rules plus the post-attention sink scale
for _type in backward_sinks.SINK_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_sinks.sinks_backward

# exact per node, tiny on the CPU at (2, 3) and (1, 5), and full size on meta (tests/test_training_backward_*.py)
VALIDATED: frozenset[str] = (backward_mla.MLA_TYPES | backward_moe.LLAMA4_TYPES | backward_moe.GPT_OSS_TYPES
                              | backward_moe.HUNYUAN_TYPES | {"ernie4_5_moe", "phimoe", "mimo_v2_flash"}
                              | backward_ssm.SSM_TYPES | {"granitemoehybrid", "lfm2", "falcon_h1", "mamba", "jamba"}
                              | backward_lightning.LIGHTNING_TYPES
                              | backward_dsv4.DSV4_TYPES | backward_deltanet.DELTANET_TYPES
                              | backward_routed.ROUTED_TYPES | backward_gemma.GEMMA4_TYPES | backward_gemma.GEMMA3N_TYPES
                              | {"falcon_mamba", "bamba", "lfm2_moe"} | backward_sinks.SINK_TYPES)

# flex_olmo, apertus, dbrx, jetmoe (tests/test_training_backward_routed.py)
for _type in backward_routed.FLEX_OLMO_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_routed.flex_olmo_backward
for _type in backward_routed.APERTUS_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_routed.apertus_backward
for _type in backward_routed.DBRX_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_routed.dbrx_backward
for _type in backward_routed.JETMOE_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_routed.jetmoe_backward
# the 1-norm's backward (DBRX's router): sgn(x) * g; both sides count sgn through ATEN_BACKWARD
base.ATEN_BACKWARD["sgn"] = backward_routed.aten_sgn
# gemma4_text, gemma3n_text (tests/test_training_backward_gemma.py)
for _type in backward_gemma.GEMMA4_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_gemma.gemma4_backward
for _type in backward_gemma.GEMMA3N_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_gemma.gemma3n_backward
