"""Which token positions an attribution sums over (and which a causal ablation replaces).

Every sequence is chat-rendered prompt + lead + answer, tokenised jointly (`agmask.scoring`). The loss
always sits on the answer; the positions only choose where activation x gradient (and Fisher) are
summed, or where an activation is replaced:

  answer   the answer-predicting positions (position t predicts token t+1 of the answer)
  all      every real token (attention mask): chat header, prompt, lead, answer
  subject  the user message's own tokens, i.e. the prompt text inside the chat template (not the
           template's header or footer): where the subject is recalled
  prompt   every real token from the user message on: `all` without the chat header (system prompt,
           `<|im_start|>user`), which is the same for every prompt

Subject tokens are found from the tokenizer's character offsets: a token is a subject token when its
character span overlaps the prompt text's span in the rendered template (a fast tokenizer is needed).
"""
from __future__ import annotations

import torch

from agmask.errors import StageError
from agmask.scoring import render_prompt
from agmask.scoring.encode import AnswerBatch, tokens

POSITIONS = ("answer", "all", "subject", "prompt")


def check_positions(kind: str) -> str:
    if kind not in POSITIONS:
        raise StageError(f"unknown positions {kind!r} (choose {', '.join(POSITIONS)})")
    return kind


def subject_token_mask(tokenizer, prompt: str, text: str) -> torch.Tensor:
    """(T,) 1.0 on the tokens of `text` (chat-rendered `prompt` + whatever follows) that spell the prompt.

    `text` must start with `render_prompt(tokenizer, prompt)`; its tokens are those of
    `tokens(tokenizer, text)`, the joint tokenisation every stage uses.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise StageError("positions=subject needs a fast tokenizer (character offsets); use positions=all or answer")
    rendered = render_prompt(tokenizer, prompt)
    if not text.startswith(rendered):
        raise ValueError("text does not start with the rendered prompt")
    start = rendered.rfind(prompt)  # the user message comes after any system prompt in the template
    if start < 0:
        raise StageError(f"the chat template changed the prompt's text, so its tokens cannot be found: {prompt!r}; "
                         "use positions=all or answer")
    end = start + len(prompt)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if enc["input_ids"] != tokens(tokenizer, text):
        raise StageError("the tokenizer's offsets do not match its tokens; use positions=all or answer")
    return torch.tensor([float(s < end and e > start) for s, e in enc["offset_mapping"]])


def position_mask(tokenizer, kind: str, batch: AnswerBatch, prompts: list[str], texts: list[str]) -> torch.Tensor:
    """(B, T) float mask of the `kind` positions of a right-padded batch.

    prompts, texts: per row, the raw prompt and the full joint text (prefix + answer) the row encodes.
    """
    real = batch.attention_mask.float()
    if kind == "answer":
        return batch.target_mask.float() * real
    if kind == "all":
        return real
    check_positions(kind)
    out = torch.zeros_like(real)
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        row = subject_token_mask(tokenizer, prompt, text)
        if len(row) != int(real[i].sum()):
            raise StageError(f"subject tokens of {prompt!r} do not line up with the batch; use positions=all or answer")
        if kind == "prompt":  # from the first subject token to the end
            row = (row.cumsum(0) > 0).float()
        out[i, : len(row)] = row.to(out.device)
    return out
