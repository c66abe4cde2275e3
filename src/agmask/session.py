"""What one run shares between stages: the config, the concept, the run directory and ONE lazily loaded model."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agmask.concepts import LoadedConcept, load_concept
from agmask.config import RunConfig
from agmask.progress import SILENT, Reporter
from agmask.rundir import RunDir


@dataclass
class Session:
    cfg: RunConfig
    concept: LoadedConcept
    run_dir: Path  # while a stage runs: its staging view (see agmask.transaction)
    reporter: Reporter = SILENT
    prior_adapters: list[Path] = field(default_factory=list)  # incremental mode: earlier concepts' adapters
    model_sha256: str | None = None  # identifies the weights (set by the driver; else read from the manifest)
    _loaded: tuple | None = None
    _recipe: tuple | None = None  # (what it was computed from, Recipe)

    @classmethod
    def create(cls, cfg: RunConfig, concept: str | None = None, run_dir: Path | None = None,
               reporter: Reporter = SILENT, prior_adapters: list[Path] | None = None) -> "Session":
        return cls(cfg, load_concept(concept or cfg.concepts[0]), Path(run_dir or cfg.run_dir), reporter,
                   list(prior_adapters or []))

    @property
    def spec(self):
        return self.concept.spec

    @property
    def paths(self) -> RunDir:
        """Every artefact path of the run directory the session reads and writes now."""
        return RunDir(self.run_dir)

    @property
    def adapter_dir(self) -> Path:
        """This concept's adapter: `adapters/<concept>/`."""
        return self.paths.adapter(self.spec.name)

    def model(self):
        """(model, tokenizer, info), loaded on first use and shared by every later stage of the run."""
        if self._loaded is None:
            from agmask.distributed import process_device
            from agmask.models import load

            device = process_device(self.cfg.device)  # several processes: `cuda` is this process's own GPU
            self.reporter.log(f"loading {self.cfg.model} on {device}")
            self._loaded = load(self.cfg.model, device=device, dtype=self.cfg.dtype, seed=self.cfg.seed,
                                log=self.reporter.log)
        return self._loaded

    def with_prior_adapters(self, model):
        """The base model with the earlier concepts' adapters loaded, active and frozen (incremental mode)."""
        from agmask.lora import load_adapter

        for path in self.prior_adapters:
            model = load_adapter(model, path, name=Path(path).name).model
        return model

    def adapted_model(self):
        """The base model + earlier adapters + this concept's adapter, all frozen, as a MaskedAdapter whose
        `.model` is a PeftModel: its `disable_adapter()` gives back the base model itself (never a copy)."""
        from agmask.lora import load_adapter

        model, _, _ = self.model()
        return load_adapter(self.with_prior_adapters(model), self.adapter_dir, name=self.spec.name)

    def drop_adapters(self, peft_model) -> None:
        """Remove every LoRA layer so the session's model is the plain base again."""
        base = peft_model.unload()
        model, tokenizer, info = self._loaded
        self._loaded = (base, tokenizer, info)

    def recipe(self):
        """The recipe the attribute, mask and unlearn stages use (`agmask.tuning.recipe`); a choice that is not
        applied is explained once in the log."""
        from agmask.tuning.recipe import recipe_for, recipe_key

        key = recipe_key(self)
        if self._recipe is None or self._recipe[0] != key:
            recipe = recipe_for(self)
            if recipe.note:
                self.reporter.log(recipe.note)
            self._recipe = (key, recipe)
        return self._recipe[1]

    def stage_config(self, name: str):
        """The resolved Config of stage `name` (budget preset + the recipe's options + overrides)."""
        from agmask.config import resolve_stage_config
        from agmask.pipeline import stage_module
        from agmask.tuning.recipe import RECIPE_STAGES

        recipe = self.recipe().for_stage(name) if name in RECIPE_STAGES else None
        return resolve_stage_config(stage_module(name), self.cfg, recipe)
