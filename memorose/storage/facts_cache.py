"""The timelines' text facts kept on disk between runs, so that a start-up need not analyse
every memory's text again (docs/retrieval.md, "Ranking facts").

Ranking reads each memory's analysed terms and whether its text is dated from the
timeline (``retrieval/timeline.py``). Both depend on the text alone, and computing them is
most of what loading a timeline costs (~10-15 us a memory: 16 s of a 1M-memory node's
start-up). The indexer writes them here, keyed by the text's 64-bit digest
(``timeline.text_digest``), when it stops, after a rebuild, and after a start-up that found
many missing; a start-up looks each record's text up and analyses only what is not here.

A cache, not an index: nothing here is trusted beyond what it is checked against. A text
whose digest is absent (new, changed) is analysed; a cache written by an analyser that
packs a probe text differently, or of another format, is ignored whole; a missing or
damaged directory is an empty cache. Two texts share a digest with probability 2^-64 per
pair (~3e-8 over a 1M-memory start-up), which would give one memory another's terms until
it is next indexed.

On disk: ``facts/`` beside the other derived indexes, four ``.npy`` arrays (sorted digests,
offsets into the packed terms, the dated flags, the packed terms) and a manifest, read
memory-mapped (a start-up holds no second copy of them) and replaced whole (written to
``facts.tmp`` first).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from memorose.retrieval.terms import pack
from memorose.retrieval.timeline import TenantTimeline

log = logging.getLogger(__name__)

FORMAT = 1
#: A text the cache's writer packed; a cache whose probe packs differently now came from
#: another analyser (tokens, stems) and is ignored.
PROBE = "Ana's cafés: running 12 km on 2024-05-12, naïvely at 6:30 — 42 times!"

Known = tuple[bool, bytes]  # (dated, packed terms) of a text


class FactsCache:
    """Facts of texts by digest, as read from disk (``load``); empty when there were none."""

    def __init__(self, digests: np.ndarray, offsets: np.ndarray, dated: np.ndarray, blob: np.ndarray) -> None:
        # Plain views of the memory-mapped arrays: a slice of a ``np.memmap`` is a new memmap
        # object, a quarter of a 1M-memory start-up's lookups.
        self.digests = digests.view(np.ndarray)  # uint64, sorted, unique
        self.offsets = offsets.view(np.ndarray)  # int64, len + 1: terms of i are blob[o[i]:o[i+1]]
        self.dated = dated.view(np.ndarray)  # bool
        self.blob = blob.view(np.ndarray).data  # uint8, as a memoryview: slices are cheap
        self.hits = 0
        self.misses = 0

    @classmethod
    def empty(cls) -> FactsCache:
        return cls(np.zeros(0, np.uint64), np.zeros(1, np.int64), np.zeros(0, bool), np.zeros(0, np.uint8))

    def __len__(self) -> int:
        return len(self.digests)

    @classmethod
    def load(cls, root: Path) -> FactsCache:
        """The cache in ``root`` (memory-mapped), or an empty one where there is none
        usable: missing, damaged, of another format or another analyser."""
        try:
            manifest = json.loads((root / "manifest.json").read_text())
            if manifest.get("format") != FORMAT or manifest.get("probe") != pack(PROBE).hex():
                log.info("facts cache in %s ignored: written by another version", root)
                return cls.empty()
            names = ("digests", "offsets", "dated", "blob")
            cache = cls(*(np.load(root / f"{name}.npy", mmap_mode="r") for name in names))
            n = int(manifest["count"])
            if not (len(cache.digests) == len(cache.dated) == n and len(cache.offsets) == n + 1):
                raise ValueError("array lengths disagree with the manifest")
            if n and (int(cache.offsets[-1]) != len(cache.blob) or int(cache.offsets[0]) != 0):
                raise ValueError("offsets disagree with the packed terms")
            return cache
        except FileNotFoundError:
            return cls.empty()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("facts cache in %s unreadable (%s): start-up analyses every text", root, exc)
            return cls.empty()

    def lookup(self, digests: list[int]) -> list[Known | None]:
        """(dated, packed terms) of each digest, None where the cache has none."""
        out: list[Known | None] = [None] * len(digests)
        n = len(self.digests)
        if n and digests:
            keys = np.array(digests, np.uint64)
            at = np.minimum(np.searchsorted(self.digests, keys), n - 1)
            found = np.flatnonzero(self.digests[at] == keys)
            rows = at[found]
            starts, ends = self.offsets[rows].tolist(), self.offsets[rows + 1].tolist()
            dated = self.dated[rows].tolist()
            blob = self.blob
            for i, start, end, flag in zip(found.tolist(), starts, ends, dated, strict=True):
                out[i] = (flag, blob[start:end].tobytes())
        hits = sum(k is not None for k in out)
        self.hits += hits
        self.misses += len(digests) - hits
        return out


def write(root: Path, timelines: Iterable[TenantTimeline]) -> int:
    """Replace the cache in ``root`` with the facts of every row of ``timelines`` whose
    digest is known; returns how many texts it holds."""
    digest_parts, dated_parts, term_parts = [], [], []
    for timeline in timelines:
        known = timeline.digests != 0
        digest_parts.append(timeline.digests[known])
        dated_parts.append(timeline.dated[known])
        term_parts.append(timeline.terms[known])
    digests = np.concatenate(digest_parts) if digest_parts else np.zeros(0, np.uint64)
    unique, first = np.unique(digests, return_index=True)
    dated = np.concatenate(dated_parts)[first] if digest_parts else np.zeros(0, bool)
    terms = np.concatenate(term_parts)[first].tolist() if term_parts else []
    offsets = np.zeros(len(unique) + 1, np.int64)
    np.cumsum([len(t) for t in terms], out=offsets[1:])
    blob = np.frombuffer(b"".join(terms), np.uint8)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, array in (("digests", unique), ("offsets", offsets), ("dated", dated), ("blob", blob)):
        np.save(tmp / f"{name}.npy", array)
    manifest = {"format": FORMAT, "probe": pack(PROBE).hex(), "count": len(unique)}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(root, ignore_errors=True)  # a crash here leaves no cache: texts are analysed
    tmp.rename(root)
    return len(unique)
