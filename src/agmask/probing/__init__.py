"""Activation capture with hooks that never outlive their context manager."""
from agmask.probing.capture import capture, hook_names, mlp_hook_name, resid_hook_name

__all__ = ["capture", "hook_names", "mlp_hook_name", "resid_hook_name"]
