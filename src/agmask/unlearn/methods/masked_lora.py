"""AG-Masked-LoRA: NPO on the concept's own answer + KL retain, LoRA restricted to the attribution mask."""
from agmask.unlearn.methods import Method
from agmask.unlearn.methods.common import NEEDS, forget_and_retain

METHOD = Method("masked_lora", "mask", forget_and_retain, NEEDS,
                "NPO on the answer after the lead (+ optional refusal CE) + KL to the base on retain_train; masked")
