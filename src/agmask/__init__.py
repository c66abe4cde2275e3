"""agmask: Activation-Guided Masked LoRA unlearning.

Public API (everything else is internal):

    from agmask import load_model, load_concept, RunConfig, run_pipeline
"""
from agmask.errors import AgmaskError

__version__ = "0.1.0"

__all__ = ["AgmaskError", "load_model", "load_concept", "RunConfig", "run_pipeline", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import agmask` (and the CLI's --help) fast: torch loads only when needed.
    if name == "load_model":
        from agmask.models import load
        return load
    if name == "load_concept":
        from agmask.concepts import load_concept
        return load_concept
    if name == "RunConfig":
        from agmask.config import RunConfig
        return RunConfig
    if name == "run_pipeline":
        from agmask.pipeline import run_pipeline
        return run_pipeline
    raise AttributeError(f"module 'agmask' has no attribute {name!r}")
