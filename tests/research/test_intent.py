"""Intent clarification on questions written against the real ledger."""

from __future__ import annotations

from research.intent import clarify_intent, extract_concepts, extract_time_period

QUESTION = "How did we fix max_tokens truncation in the token estimator, and what did it cost in 2025?"


def test_key_concepts_drop_stop_words_and_short_words_and_keep_order() -> None:
    assert extract_concepts(QUESTION) == ["max_tokens", "truncation", "token", "estimator", "cost"]


def test_aspects_dimensions_and_period_are_recognised() -> None:
    intent = clarify_intent(QUESTION)

    assert intent.clarified_aspects == ["performance", "reliability"]
    assert intent.dimensions == ["practical", "technical"]
    assert intent.time_period == "2025"


def test_there_are_always_between_3_and_10_questions() -> None:
    one_aspect = clarify_intent("Why was the Windows encoding broken?")
    many_aspects = clarify_intent(
        "Compare design, security, performance, test coverage, deployment and Windows encoding best practice "
        "for the retry failure handling"
    )
    no_aspect = clarify_intent("BUILD-146")

    assert 3 <= len(one_aspect.key_questions) <= 10
    assert len(many_aspects.key_questions) == len(many_aspects.clarified_aspects) == 8
    assert len(no_aspect.key_questions) == 3
    assert one_aspect.key_questions[0] == "Which platform or encoding issues affect windows encoding broken?"


def test_year_ranges_and_relative_periods_are_extracted() -> None:
    assert extract_time_period("Telemetry changes between 2024 and 2025") == "2024–2025"
    assert extract_time_period("What failed in the last month?") == "last month"
    assert extract_time_period("What failed?") == ""
