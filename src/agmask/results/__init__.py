"""`agmask results`: docs/RESULTS.md generated from run directories, with no hand-typed number.

Which runs, with their label (test / validation / placeholder / training) and purpose, is `docs/results.yaml`
(`agmask.results.spec`); the page is rendered by `agmask.results.document` from the run directories' JSON files.
"""
from agmask.results.document import render_results, write_results
from agmask.results.spec import LABELS, ResultsSpec, RunEntry, entries_from_dirs, load_results_spec

__all__ = ["LABELS", "ResultsSpec", "RunEntry", "entries_from_dirs", "load_results_spec", "render_results",
           "write_results"]
