"""Plan errors: each one names the field path it is about and what is wrong there."""

from __future__ import annotations

from dataclasses import dataclass

from autopack_site.lib.errors import ValidationFailed

DOCUMENT = ""  # the path of errors about the document as a whole (syntax, size)


@dataclass(frozen=True, order=True)
class PlanError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or 'document'}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class PlanInvalid(ValidationFailed):
    """The plan cannot be imported; ``errors`` lists every problem found, not only the first."""

    code = "plan_invalid"

    def __init__(self, errors: list[PlanError]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        summary = f"the plan has {count} error{'s' if count != 1 else ''}"
        lines = "\n".join(str(error) for error in self.errors)
        super().__init__(f"{summary}:\n{lines}", details=[error.as_dict() for error in self.errors])


def join_path(parent: str, key: str | int) -> str:
    """``phases`` + 3 → ``phases[3]``; ``phases[3]`` + ``scope`` → ``phases[3].scope``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)
