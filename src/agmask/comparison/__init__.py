"""The optional stages that test the method rather than run it: `agmask compare` and `agmask ablate`.

- `variants`: what compare trains, a (loss, neuron mask) pair per variant, masks derived from the run's
  attribution with the mask stage's own functions;
- `runner`: one variant x seed trained at equal steps and evaluated, rows resumed from compare.json;
- `rows`: the columns a row takes from the evaluation's metrics.json, and mean / sd over seeds;
- `ablation`: the causal check of the chosen mask (its top units mean-ablated vs random units of the same
  layers, on the evaluation sets) and the split-half stability of the top units;
- `figures`, `table`: compare.png / ablation.png and the tables the CLI prints.
"""
