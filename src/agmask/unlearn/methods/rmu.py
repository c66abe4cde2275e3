"""Baseline: RMU. Push the residual stream of the last adapted layer towards a fixed random direction on
forget prompts, keep it at the base's on retain prompts; plain LoRA on the same layers."""
from agmask.unlearn import objectives as obj
from agmask.unlearn.methods import Method


def loss(inputs, conf) -> dict:
    forget = obj.rmu_forget(inputs.model, inputs.forget, inputs.rmu_layer, inputs.rmu_control)
    retain = obj.rmu_retain(inputs.model, inputs.retain, inputs.rmu_layer, inputs.retain_resid)
    return {"loss": forget + conf.rmu_alpha * retain, "rmu_forget": forget, "rmu_retain": retain}


METHOD = Method("rmu", "unmasked", loss, ("retain_resid",), "RMU misdirection + residual retain; unmasked")
