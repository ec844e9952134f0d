"""llm_profiler: exact, symbolic operation counts for transformer LLMs, from their Hugging Face config.

>>> from llm_profiler import profile
>>> p = profile("llama-2-7b", batch=16, seq=200)
>>> p.total("macs", "model")
21310419763200
"""

from .api import get_model_config, get_profile, print_summary
from .config import ModelConfig, load_config
from .errors import (
    ConfigError,
    HubError,
    ProfilerError,
    QueryError,
    ShapeError,
    UnknownModelTypeError,
    ValidationUnavailableError,
)
from .families import supported_model_types
from .profile import ModelProfile, Profile, profile, profile_model

__version__ = "0.1.0"
__all__ = [
    "ConfigError", "HubError", "ModelConfig", "ModelProfile", "Profile", "ProfilerError", "QueryError",
    "ShapeError", "UnknownModelTypeError", "ValidationUnavailableError", "get_model_config", "get_profile",
    "load_config", "print_summary", "profile", "profile_model", "supported_model_types",
]
