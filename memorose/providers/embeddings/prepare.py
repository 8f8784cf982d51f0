"""``memorose prepare-model``: write the local model's derived files into the cache dir
before a node needs them (``make`` and the container build run it): the int8 rewrite of
the model (int8_graph.py) and its word table (word_table.py). A node without them works:
it rewrites the model at its first start and embeds every word with the model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from memorose.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "prepare-model", help="write the local embedding model's int8 rewrite and word table to the cache dir"
    )
    parser.add_argument("--config", help="a memorose.toml (default: environment and defaults only)")
    parser.add_argument("--cache-dir", help="instead of [embeddings] local_cache_dir")
    parser.add_argument("--force", action="store_true", help="build the word table again even if it is there")
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)  # the first N words only: tests
    parser.set_defaults(func=cmd_prepare_model)


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from memorose.config import load_settings
    from memorose.providers.embeddings.local import LocalEmbedder
    from memorose.providers.factory import build_embedder, embedder_name

    settings = load_settings(args.config)
    if args.cache_dir:
        settings.embeddings.local_cache_dir = Path(args.cache_dir)
    name = embedder_name(settings)
    if name != "local":
        print(f"memorose: the embedder is {name!r}; only 'local' has files to prepare")
        return 0
    embedder = build_embedder(settings)
    if not isinstance(embedder, LocalEmbedder) or embedder.cache_dir is None:
        raise ConfigError("the local model needs a cache dir to prepare ([embeddings] local_cache_dir)")
    started = time.perf_counter()
    embedder.load()  # verifies the files and writes the int8 rewrite
    if embedder.word_table() is not None and not args.force:
        print(f"{embedder.model}: int8 model and word table already in {embedder.cache_dir}")
        return 0
    path = embedder.build_word_table(args.limit)
    took = time.perf_counter() - started
    print(f"prepared {embedder.model} in {embedder.cache_dir} ({path.name}) in {took:.1f} s")
    return 0
