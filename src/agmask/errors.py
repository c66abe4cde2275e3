"""User-facing errors: one line that names what is wrong and how to fix it."""


class AgmaskError(Exception):
    """A user mistake or an environment problem. The CLI prints `error: <message>` and exits 2."""

    exit_code = 2


class ConceptError(AgmaskError):
    """A concept spec that cannot be used (file and field are in the message)."""


class ModelError(AgmaskError):
    """A model that cannot be loaded (missing package, bad checksum, unknown name, offline hub)."""


class StageError(AgmaskError):
    """A stage that cannot run on its inputs (empty prompt set, a mask that selects nothing, ...)."""
