"""Vector memory: faiss collections per project, persisted, rebuilt from the database, with retention."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from research.embedders import HASHING_NAME, EmbedderUnavailable, HashingEmbedder, get_embedder
from research.memory import active_embedder_name, memory_add, memory_apply_retention, memory_rebuild, memory_search
from research.models import MemoryItem

pytestmark = pytest.mark.django_db

CI_ERRORS = [
    "ModuleNotFoundError: No module named 'autopack.research' while collecting tests",
    "UnicodeDecodeError: 'charmap' codec can't decode byte 0x9d on Windows runners",
    "max_tokens truncation: output stopped at 16384 tokens, escalation retried with 20480",
    "sqlite3.OperationalError: database is locked during the batch drain",
]


def test_the_hashing_embedder_is_deterministic_and_normalised() -> None:
    first = HashingEmbedder().embed(["Token Estimator Overhead Model", ""])
    again = HashingEmbedder().embed(["Token Estimator Overhead Model", ""])

    assert first.shape == (2, 384) and first.dtype == np.float32
    assert np.array_equal(first, again)
    assert np.isclose(np.linalg.norm(first[0]), 1.0)
    assert np.linalg.norm(first[1]) == 0.0


def test_search_returns_the_closest_item_and_names_the_embedder(project) -> None:
    for text in CI_ERRORS:
        memory_add(project_id=project.pk, collection="ci_errors", text=text)

    hits = memory_search(project_id=project.pk, collection="ci_errors", query="decode error on windows", limit=2)

    assert hits[0].text == CI_ERRORS[1]
    assert hits[0].embedder == HASHING_NAME
    assert len(hits) == 2 and hits[0].score >= hits[1].score


def test_collections_and_projects_are_separate(project, tmp_path) -> None:
    from runs.models import Project

    other = Project.objects.create(name="Other", slug="other", repository_path=str(tmp_path))
    memory_add(project_id=project.pk, collection="doctor_hints", text="pin the dependency")
    memory_add(project_id=other.pk, collection="ci_errors", text="pin the dependency")

    assert memory_search(project_id=project.pk, collection="ci_errors", query="pin the dependency") == []
    assert len(memory_search(project_id=other.pk, collection="ci_errors", query="pin the dependency")) == 1


def test_adding_the_same_text_twice_keeps_one_item(project) -> None:
    first = memory_add(project_id=project.pk, collection="planning", text="split the phase in two")
    second = memory_add(project_id=project.pk, collection="planning", text="split the phase in two")

    assert first.pk == second.pk
    assert MemoryItem.objects.count() == 1


def test_the_index_is_persisted_under_the_data_dir_and_rebuilt_when_lost(project) -> None:
    for text in CI_ERRORS:
        memory_add(project_id=project.pk, collection="ci_errors", text=text)
    path = Path(settings.DATA_DIR) / "memory" / HASHING_NAME / f"project-{project.pk}" / "ci_errors.faiss"
    assert path.exists()

    path.unlink()
    hits = memory_search(project_id=project.pk, collection="ci_errors", query="database is locked")

    assert hits[0].text == CI_ERRORS[3]
    assert path.exists()
    assert memory_rebuild(project_id=project.pk)["ci_errors"] == 4


def test_an_index_out_of_step_with_the_database_is_rebuilt(project) -> None:
    for text in CI_ERRORS:
        memory_add(project_id=project.pk, collection="ci_errors", text=text)
    MemoryItem.objects.filter(text=CI_ERRORS[1]).delete()  # e.g. deleted in the admin

    hits = memory_search(project_id=project.pk, collection="ci_errors", query="decode error on windows", limit=4)

    assert CI_ERRORS[1] not in [hit.text for hit in hits]
    assert len(hits) == 3


def test_retention_drops_old_items_and_keeps_the_newest_within_the_count_cap(project) -> None:
    now = timezone.now()
    for age_days, text in enumerate(CI_ERRORS):
        item = memory_add(project_id=project.pk, collection="ci_errors", text=text)
        MemoryItem.objects.filter(pk=item.pk).update(created_at=now - timedelta(days=age_days * 100))

    deleted = memory_apply_retention(project_id=project.pk, max_age_days=250, max_items=2, now=now)

    assert deleted == 2
    assert sorted(MemoryItem.objects.values_list("text", flat=True)) == sorted(CI_ERRORS[:2])
    hits = memory_search(
        project_id=project.pk, collection="ci_errors", query="database is locked", limit=5, min_score=-1.0
    )
    assert len(hits) == 2


def test_an_unknown_collection_is_refused(project) -> None:
    with pytest.raises(ValueError, match="unknown memory collection"):
        memory_add(project_id=project.pk, collection="secrets", text="x")


def test_the_active_embedder_is_the_hashing_one_by_default() -> None:
    assert active_embedder_name() == "hashing-ngram-384"


def test_an_unknown_embedder_is_reported_loudly_not_replaced(monkeypatch) -> None:
    monkeypatch.setenv("AUTOPACK_EMBEDDER", "word2vec")

    assert active_embedder_name().startswith("unavailable: unknown embedder 'word2vec'")
    with pytest.raises(EmbedderUnavailable):
        get_embedder()


def test_health_shows_the_active_embedder(client, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPACK_EMBEDDER", "word2vec")

    body = client.get("/health").json()

    assert body["embedder"].startswith("unavailable:")


SEMANTIC_INSTALLED = importlib.util.find_spec("sentence_transformers") is not None


@pytest.mark.skipif(SEMANTIC_INSTALLED, reason="sentence-transformers is installed here")
def test_semantic_requested_without_the_extra_says_so(monkeypatch) -> None:
    monkeypatch.setenv("AUTOPACK_EMBEDDER", "semantic")

    assert "sentence-transformers is not installed" in active_embedder_name()
    with pytest.raises(EmbedderUnavailable):
        get_embedder()


@pytest.mark.slow
@pytest.mark.skipif(not SEMANTIC_INSTALLED, reason="the semantic extra (requirements-semantic.txt) is not installed")
def test_the_semantic_embedder_places_paraphrases_close(monkeypatch) -> None:
    monkeypatch.setenv("AUTOPACK_EMBEDDER", "semantic")

    embedder = get_embedder()
    vectors = embedder.embed(["the output was cut off", "the response got truncated", "colour of the logo"])

    assert active_embedder_name() == "semantic-all-MiniLM-L6-v2" == embedder.name
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
