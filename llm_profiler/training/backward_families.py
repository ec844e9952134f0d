"""Registration of the families whose backward has rules of its own modules (``backward_mla``, ...):
``training.backward.FAMILY_BACKWARD`` (model type -> the model's backward counts) and ``VALIDATED``, the
types among them proven exact per node against autograd (tests/test_training_backward_mla.py, ...)."""

from __future__ import annotations

from . import backward as base
from . import backward_mla, backward_moe, backward_ssm

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
# backward-only aten ops of the SSM / conv layers (both sides count them through ATEN_BACKWARD)
base.ATEN_BACKWARD["convolution_backward"] = backward_ssm._aten_conv
base.ATEN_BACKWARD["softplus_backward"] = backward_ssm._aten_softplus
for _type in backward_moe.GPT_OSS_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_moe.gpt_oss_backward

# exact per node, tiny on the CPU at (2, 3) and (1, 5), and full size on meta (tests/test_training_backward_mla.py, _moe.py, _ssm.py)
VALIDATED: frozenset[str] = (backward_mla.MLA_TYPES | backward_moe.LLAMA4_TYPES | backward_moe.GPT_OSS_TYPES
                              | backward_moe.HUNYUAN_TYPES | {"ernie4_5_moe", "phimoe", "mimo_v2_flash"}
                              | backward_ssm.SSM_TYPES | {"granitemoehybrid", "lfm2", "falcon_h1", "mamba", "jamba"})
# gemma4_text (training/backward_gemma.py; tests/test_training_backward_gemma.py)
from . import backward_gemma  # noqa: E402

for _type in backward_gemma.GEMMA4_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_gemma.gemma4_backward
VALIDATED = VALIDATED | backward_gemma.GEMMA4_TYPES
for _type in backward_gemma.GEMMA3N_TYPES:
    base.FAMILY_BACKWARD[_type] = backward_gemma.gemma3n_backward
VALIDATED = VALIDATED | backward_gemma.GEMMA3N_TYPES
