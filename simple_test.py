"""The seed's example, offline: Llama-3.2-1B-Instruct (bundled) at batch 16, sequence 200 — the whole-transformer
summary, then the seed's own call, ``get_profile(kwargs, "mult", "attn")``."""

from llm_profiler import get_model_config, get_profile, print_summary

config = get_model_config("meta-llama/Llama-3.2-1B-Instruct")  # bundled: the base's architecture, its eos ids
kwargs = {"model_config": config, "input_shape": [16, 200]}
print_summary(kwargs)  # scope "transformer": everything but the lm_head (the last line says so)
get_profile(kwargs, "mult", "attn")  # returns the exact int, 579403776000
