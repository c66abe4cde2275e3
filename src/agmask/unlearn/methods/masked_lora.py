"""AG-Masked-LoRA: NPO on the concept's own answer + KL retain, LoRA restricted to the attribution mask."""
from agmask.unlearn.methods import Method
from agmask.unlearn.methods.common import prepare

METHOD = Method("masked_lora", "mask", prepare,
                "NPO on the answer after the lead (+ optional refusal CE, recommend_train terms) + KL to the base on "
                "retain_train; masked")
