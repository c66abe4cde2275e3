"""`agmask tune`: choose the recipe (attribute, mask and unlearn options) on the training halves only.

space.py    the searched options, declared once, and the starting points
measure.py  half-B measurements of a model, and a trial's numbers against the base
rule.py     the selection rule (in words and in code) and its constraints
fit.py      one trial's attribution, mask and training on half A (cached where nothing changes)
search.py   the Optuna study in the run directory (seeded, resumable)
recipe.py   `--recipe auto|defaults`: the choice applied to the stages (light: no Optuna)
figures.py  tune/trials.png
"""
