"""Builds the configured providers from settings: offline defaults everywhere; Gemini when
a Google API key is configured (``provider = "auto"``) or asked for explicitly."""

from __future__ import annotations

from memorose.config import Settings
from memorose.errors import ConfigError
from memorose.providers.embeddings import Embedder, load_embedder
from memorose.providers.llm import LLMProvider, load_llm

DEFAULT_GEMINI_EMBEDDING_MODEL = "gemini-embedding-001"
LOCAL_DIM = 384  # all-MiniLM-L6-v2 (providers/embeddings/local.py; not imported: it is lazy)


def llm_provider_name(settings: Settings) -> str:
    name = settings.llm.provider
    if name == "auto":
        return "gemini" if settings.google_api_key() else "offline"
    return name


def embedder_name(settings: Settings) -> str:
    name = settings.embeddings.provider
    if name == "auto":
        return "gemini" if settings.google_api_key() else "local"
    return name


def build_llm(settings: Settings) -> LLMProvider:
    c, llm = settings.consolidation, settings.llm
    if llm_provider_name(settings) == "offline":
        from memorose.consolidation.arbitration import Thresholds

        thresholds = Thresholds(
            c.reinforce_threshold, c.merge_threshold, c.supersede_threshold, c.max_merged_chars
        )
        return load_llm("offline", max_fact_chars=c.max_fact_chars, thresholds=thresholds)
    key = settings.google_api_key()
    if not key:
        raise ConfigError("[llm] provider = 'gemini' needs api_key or GOOGLE_API_KEY")
    return load_llm(
        "gemini",
        api_key=key,
        model=llm.model,
        base_url=llm.base_url,
        events_per_call=llm.events_per_call,
        max_attempts=llm.max_attempts,
        backoff_initial_secs=llm.backoff_initial_secs,
        backoff_max_secs=llm.backoff_max_secs,
        timeout_secs=llm.timeout_secs,
    )


def build_embedder(settings: Settings) -> Embedder:
    e, dim, llm = settings.embeddings, settings.index.embedding_dim, settings.llm
    name = embedder_name(settings)
    if name == "hashing":
        return load_embedder("hashing", dim=dim)
    if name == "local":
        if dim != LOCAL_DIM:
            raise ConfigError(
                f"[embeddings] provider = 'local' makes {LOCAL_DIM}-dimensional vectors; "
                f"[index] embedding_dim is {dim}"
            )
        return load_embedder("local", threads=e.local_threads)
    retry = {
        "max_attempts": llm.max_attempts,
        "backoff_initial_secs": llm.backoff_initial_secs,
        "backoff_max_secs": llm.backoff_max_secs,
        "timeout_secs": e.timeout_secs,
        "batch_size": e.batch_size,
    }
    if name == "gemini":
        key = e.api_key or settings.google_api_key()
        if not key:
            raise ConfigError("[embeddings] provider = 'gemini' needs an API key or GOOGLE_API_KEY")
        return load_embedder(
            "gemini",
            api_key=key,
            model=e.model or DEFAULT_GEMINI_EMBEDDING_MODEL,
            dim=dim,
            base_url=e.base_url or llm.base_url,
            **retry,
        )
    if not e.base_url or not e.model:
        raise ConfigError("[embeddings] provider = 'openai_compat' needs base_url and model")
    return load_embedder(
        "openai_compat", base_url=e.base_url, model=e.model, dim=dim, api_key=e.api_key, **retry
    )
