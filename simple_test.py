"""The seed's whole-transformer summary for Llama-3.2-1B at batch 16, sequence 200 (bundled preset, offline)."""

from llm_profiler import get_model_config, print_summary

config = get_model_config("meta-llama/Llama-3.2-1B")
kwargs = {"model_config": config, "input_shape": [16, 200]}
print_summary(kwargs)  # scope "transformer": everything but the lm_head
