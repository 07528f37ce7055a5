"""The phase engine: framework-free Python (no Django imports anywhere under this package).

Modules owned by "Engine I" (the security core; LLM output is untrusted input):

- ``providers``  LLM providers behind one ``LLMProvider`` protocol: ``AnthropicProvider`` (real SDK, retries,
  typed errors, prompt caching), ``ReplayProvider`` / ``RecordingProvider`` (JSON-lines cassettes),
  ``ScriptedProvider`` (in-memory, for tests) and ``cassette_entry`` / ``write_cassette`` to build cassettes.
- ``edits``      ``parse_edits(text) -> ParseResult``: NDJSON operations, full-file JSON, unified diff, with
  salvage of truncated output and repair of common malformations. Also ``apply_search_replace``.
- ``paths``      ``normalize_path`` and the path rules (absolute, drive letters, ``..``, NUL, ``.git``).
- ``apply``      ``governed_apply(workspace, operations, policy=ApplyPolicy(...)) -> ApplyResult``: all or nothing.
- ``workspace``  ``Workspace``: one git worktree per run on ``autopack/<run>``, phase commits with trailers, lock.

Modules owned by "Engine II": pipeline, ci, toolchains, budget, context, prompts, finalizer, hardening, doctor,
outcome.
"""
