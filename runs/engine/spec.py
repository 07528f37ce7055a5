"""Everything the engine needs to run one attempt of a phase, as plain data.

``PhaseSpec`` is built on the Django side (``runs.execution.build_phase_spec``) from the Phase, its Run and
Project, the claim and the settings; a remote executor receives it as JSON (``to_dict`` / ``from_dict``) and
runs exactly the same engine. Nothing here imports Django.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "builder": {"low": "claude-haiku-4-5", "medium": "claude-sonnet-4-6", "high": "claude-sonnet-4-6"},
    "auditor": {"low": "claude-haiku-4-5", "medium": "claude-sonnet-4-6", "high": "claude-sonnet-4-6"},
    "doctor": {"low": "claude-sonnet-4-6", "medium": "claude-sonnet-4-6", "high": "claude-opus-4-6"},
}
DEFAULT_LADDER: list[str] = ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"]
GOAL_ANCHOR_BYTES = 2048  # the run's goal in every Builder prompt
GOAL_REMINDER_BYTES = 512  # the run's goal in the Doctor prompt


def truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary and marked with an ellipsis when cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - len("…".encode())].decode("utf-8", errors="ignore") + "…"


@dataclass
class CiSpec:
    """How to test the project; empty fields fall back to the project's default and to detection."""

    command: str = ""
    install_command: str = ""
    timeout_seconds: float = 600.0
    working_directory: str = ""  # relative to the worktree
    junit_path: str = ""  # a path or glob relative to the working directory; pytest gets --junitxml
    required_tests: list[str] = field(default_factory=list)
    coverage: bool = False
    coverage_json: str = "coverage.json"
    coverage_drop_threshold: float = 1.0  # percentage points
    strict: bool = False
    skip: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CiSpec:
        data = dict(data or {})
        if "timeout" in data and "timeout_seconds" not in data:
            data["timeout_seconds"] = data.pop("timeout")
        if "cwd" in data and "working_directory" not in data:
            data["working_directory"] = data.pop("cwd")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class Budgets:
    run_token_cap: int = 5_000_000
    run_usd_cap: float = 50.0
    run_tokens_used: int = 0
    run_cost_usd: float = 0.0
    phase_token_cap: int = 1_000_000
    phase_usd_cap: float = 10.0
    phase_tokens_used: int = 0
    phase_cost_usd: float = 0.0
    context_tokens: int = 120_000
    context_max_files: int = 40
    context_max_chars_per_file: int = 15_000


@dataclass
class History:
    attempt_number: int = 1  # this attempt, 1-based, counted since the last operator requeue
    attempt_count: int = 0  # monotonic attempts before this one
    max_attempts: int = 5
    revision_epoch: int = 0
    escalation_level: int = 0
    budget_override: int | None = None
    builder_hint: str = ""
    last_failure_reason: str = ""
    failure_fingerprints: list[str] = field(default_factory=list)
    phase_doctor_calls: int = 0
    run_doctor_calls: int = 0
    max_doctor_calls_phase: int = 2
    max_doctor_calls_run: int = 10
    # CI settings changed by failure hardening on earlier attempts (already applied to ``PhaseSpec.ci``);
    # every outcome carries them forward in its summary so a later unrelated failure does not drop them.
    ci_overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class PhaseSpec:
    run_id: int
    phase_pk: int
    phase_id: str
    name: str
    attempt_id: int | None = None
    claim_epoch: int = 0
    description: str = ""
    category: str = "feature"
    complexity: str = "medium"
    # Scope: a path ending "/" is a directory prefix, otherwise an exact file.
    scope_paths: list[str] = field(default_factory=list)
    read_only_context: list[str] = field(default_factory=list)
    deliverables: list[str] = field(default_factory=list)
    acceptance_criteria: list[str] = field(default_factory=list)
    allow_test_edits: bool = False
    allow_noop: bool = False
    ci: CiSpec = field(default_factory=CiSpec)
    # Project and run.
    project_slug: str = ""
    repository_path: str = ""
    base_branch: str = "main"
    branch: str = ""
    protected_paths: list[str] = field(default_factory=list)
    default_test_command: str = ""
    goal: str = ""
    goal_anchor: str = ""
    insights: str = ""
    memory: str = ""
    # Models, prices (USD per million tokens: input, output, cache_write, cache_read) and provider name.
    provider: str = "anthropic"
    provider_cassette: str = ""  # set when the run replays a cassette (relative to the project checkout)
    models: dict[str, dict[str, str]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_MODELS.items()})
    escalation_ladder: list[str] = field(default_factory=lambda: list(DEFAULT_LADDER))
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    # Calibrated phase overheads of the token estimator, {"category/complexity": tokens}; empty: the defaults.
    estimator_overheads: dict[str, int] = field(default_factory=dict)
    # Reports of this run's finished research phases, for the later phases' context.
    research: str = ""
    budgets: Budgets = field(default_factory=Budgets)
    history: History = field(default_factory=History)
    # Where the engine keeps CI logs, JUnit files and the baseline cache (outside the worktree).
    artifacts_dir: str = ""
    cache_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseSpec:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["ci"] = CiSpec.from_dict(values.get("ci"))
        values["budgets"] = _subset(Budgets, values.get("budgets"))
        values["history"] = _subset(History, values.get("history"))
        return cls(**values)


def _subset(kind: type, data: dict[str, Any] | None) -> Any:
    known = {f.name for f in fields(kind)}
    return kind(**{key: value for key, value in (data or {}).items() if key in known})
