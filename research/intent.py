"""Intent clarification for a research question. Framework-free and deterministic (no LLM call).

From the question alone: its key concepts (words of more than three letters, stop words dropped, order
kept), the aspects it touches (performance, security, design, ...), 3–10 concrete questions to answer,
the dimensions to look along (practical, technical, historical, ...), and the time period it names.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how into is it its itself just like more most much must need
    needs never next not now of off on once only or other ought our ours ourselves out over own same shall
    she should so some such than that the their theirs them themselves then there these they this those
    through to too under until up upon very was we were what when where which while who whom why will with
    within without would you your yours yourself yourselves make makes made use used using get gets way ways
    best good better thing things something anything does done want wants know should's whats
    """.split()
)

ASPECT_PATTERNS: dict[str, tuple[str, ...]] = {
    "performance": (
        "performance",
        "latency",
        "speed",
        "slow",
        "fast",
        "throughput",
        "token",
        "cost",
        "budget",
        "memory usage",
    ),
    "security": ("security", "secure", "auth", "permission", "secret", "credential", "vulnerab", "injection", "escape"),
    "design": ("design", "architecture", "structure", "pattern", "interface", "api", "schema", "model"),
    "reliability": ("reliab", "failure", "fail", "crash", "retry", "flaky", "truncat", "error", "robust", "recover"),
    "testing": ("test", "pytest", "coverage", "ci ", " ci", "xfail", "quarantine", "assert"),
    "best practices": ("best practice", "convention", "guideline", "recommend", "should we", "how to"),
    "compatibility": ("windows", "encoding", "utf-8", "compat", "platform", "version", "migration"),
    "operations": ("deploy", "monitor", "telemetry", "dashboard", "observab", "metric", "operat", "runbook"),
}

QUESTION_TEMPLATES: dict[str, str] = {
    "performance": "What limits the performance or cost of {topic}, and what was measured?",
    "security": "Which security risks does {topic} carry, and how were they contained?",
    "design": "How is {topic} designed, and which alternatives were considered?",
    "reliability": "How has {topic} failed before, and which fixes held?",
    "testing": "How is {topic} tested, and which tests failed or were quarantined?",
    "best practices": "What are the recommended practices for {topic}?",
    "compatibility": "Which platform or encoding issues affect {topic}?",
    "operations": "How is {topic} observed and operated in production?",
}
GENERAL_QUESTIONS = (
    "What is {topic}, and where in the project does it live?",
    "What changed most recently in {topic}, and why?",
    "What open problems or next steps remain for {topic}?",
)

DIMENSION_PATTERNS: dict[str, tuple[str, ...]] = {
    "practical": ("how to", "how do", "how should", "fix", "implement", "steps", "workaround"),
    "theoretical": ("why", "theory", "principle", "formula", "model"),
    "historical": ("history", "previous", "past", "before", "earlier", "evolution", "changed", "when"),
    "technical": ("api", "code", "function", "module", "database", "token", "test", "schema", "file"),
    "comparative": (" vs ", "versus", "compare", "comparison", "better than", "alternative", "instead of"),
}

YEAR = re.compile(r"\b(19|20)\d{2}\b")
RELATIVE_TIME = re.compile(
    r"\b(last|past|recent|recently|this|previous)\s+(day|week|month|quarter|year|sprint|\d+\s+(?:days|weeks|months|years))\b",
    re.IGNORECASE,
)
WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


@dataclass
class ClarifiedIntent:
    original_query: str
    key_concepts: list[str]
    clarified_aspects: list[str]
    key_questions: list[str]
    dimensions: list[str]
    time_period: str = ""
    scope: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def extract_concepts(query: str, limit: int = 12) -> list[str]:
    """Content words longer than three letters, lower-cased, stop words dropped, first occurrence order."""
    concepts: list[str] = []
    for word in WORD.findall(query):
        lowered = word.lower().strip("-_")
        if len(lowered) > 3 and lowered not in STOP_WORDS and lowered not in concepts:
            concepts.append(lowered)
    return concepts[:limit]


def identify_aspects(query: str) -> list[str]:
    text = f" {query.lower()} "
    return [aspect for aspect, patterns in ASPECT_PATTERNS.items() if any(pattern in text for pattern in patterns)]


def identify_dimensions(query: str) -> list[str]:
    text = f" {query.lower()} "
    found = [name for name, patterns in DIMENSION_PATTERNS.items() if any(pattern in text for pattern in patterns)]
    return found or ["practical"]


def extract_time_period(query: str) -> str:
    years = sorted({match.group(0) for match in YEAR.finditer(query)})
    if len(years) > 1:
        return f"{years[0]}–{years[-1]}"
    if years:
        return years[0]
    relative = RELATIVE_TIME.search(query)
    return relative.group(0).lower() if relative else ""


def generate_questions(topic: str, aspects: list[str]) -> list[str]:
    """One question per aspect, then general ones, so there are always 3 to 10."""
    questions = [QUESTION_TEMPLATES[aspect].format(topic=topic) for aspect in aspects]
    for template in GENERAL_QUESTIONS:
        if len(questions) >= 3:
            break
        questions.append(template.format(topic=topic))
    return questions[:10]


def clarify_intent(query: str) -> ClarifiedIntent:
    query = " ".join(query.split())
    concepts = extract_concepts(query)
    topic = " ".join(concepts[:4]) or query or "this topic"
    aspects = identify_aspects(query)
    return ClarifiedIntent(
        original_query=query,
        key_concepts=concepts,
        clarified_aspects=aspects,
        key_questions=generate_questions(topic, aspects),
        dimensions=identify_dimensions(query),
        time_period=extract_time_period(query),
        scope={"concept_count": len(concepts), "aspect_count": len(aspects)},
    )
