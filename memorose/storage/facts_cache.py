"""The timelines' text facts kept on disk between runs, so that a start-up need not analyse
every memory's text again (docs/retrieval.md, "Ranking facts").

Ranking reads each memory's analysed terms and whether its text is dated from the
timeline (``retrieval/timeline.py``). Both depend on the text alone, and computing them is
most of what loading a timeline costs (~10-15 us a memory: 16 s of a 1M-memory node's
start-up). The indexer writes them here, keyed by the text's 64-bit digest
(``timeline.text_digest``), when it is idle and a tenth of the rows was indexed since it
last did (after a rebuild, a bulk load, a start-up that found many missing), or ten minutes
passed with any; and at stop for small timelines (``indexer.FACTS_*``). A start-up looks
each record's text up and analyses only what is not here.

A cache, not an index: nothing here is trusted beyond what it is checked against. A text
whose digest is absent (new, changed) is analysed; a cache written by an analyser that
packs a probe text differently, or of another format, is ignored whole; a missing or
damaged directory is an empty cache. Two texts share a digest with probability 2^-64 per
pair (~3e-8 over a 1M-memory start-up), which would give one memory another's terms until
it is next indexed.

On disk: ``facts/`` beside the other derived indexes, six ``.npy`` arrays (sorted digests,
offsets into the terms, the dated flags, the vocabulary of term ids, each term's position in
it and its count) and a manifest, read memory-mapped (a start-up holds no second copy of
them) and replaced whole (written to ``facts.tmp`` first).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from memorose.retrieval.terms import PACKED_DTYPE, pack
from memorose.retrieval.timeline import TenantTimeline

log = logging.getLogger(__name__)

FORMAT = 2
#: A text the cache's writer packed; a cache whose probe packs differently now came from
#: another analyser (tokens, stems) and is ignored.
PROBE = "Ana's cafés: running 12 km on 2024-05-12, naïvely at 6:30 — 42 times!"

Known = tuple[bool, bytes]  # (dated, packed terms) of a text


class FactsCache:
    """Facts of texts by digest, as read from disk (``load``); empty when there were none.

    The packed terms are stored as a vocabulary of the term ids it holds and, per text, the
    vocabulary position and count of each term (2 or 4 + 1 bytes a term instead of 8): a
    term id is a random 56-bit hash, so the words themselves do not compress."""

    ARRAYS = ("digests", "offsets", "dated", "vocabulary", "codes", "counts")

    def __init__(
        self,
        digests: np.ndarray,
        offsets: np.ndarray,
        dated: np.ndarray,
        vocabulary: np.ndarray,
        codes: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        # Plain views of the memory-mapped arrays: a slice of a ``np.memmap`` is a new memmap
        # object, a quarter of a 1M-memory start-up's lookups.
        self.digests = digests.view(np.ndarray)  # uint64, sorted, unique
        self.offsets = offsets.view(np.ndarray)  # int64, len + 1: the terms of i are [o[i], o[i+1])
        self.dated = dated.view(np.ndarray)  # bool
        self.vocabulary = vocabulary.view(np.ndarray)  # uint64 term ids (terms.py)
        self.codes = codes.view(np.ndarray)  # uint16 or uint32 positions in the vocabulary
        self.counts = counts.view(np.ndarray)  # uint8
        self.hits = 0
        self.misses = 0

    @classmethod
    def empty(cls) -> FactsCache:
        nothing = np.zeros(0, np.uint64)
        return cls(
            nothing,
            np.zeros(1, np.int64),
            np.zeros(0, bool),
            nothing,
            np.zeros(0, np.uint16),
            np.zeros(0, np.uint8),
        )

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
            cache = cls(*(np.load(root / f"{name}.npy", mmap_mode="r") for name in cls.ARRAYS))
            cache._check(int(manifest["count"]))
            return cache
        except FileNotFoundError:
            return cls.empty()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("facts cache in %s unreadable (%s): start-up analyses every text", root, exc)
            return cls.empty()

    def _check(self, n: int) -> None:
        """Raise ValueError where the arrays do not fit together (a damaged cache)."""
        if not (len(self.digests) == len(self.dated) == n and len(self.offsets) == n + 1):
            raise ValueError("array lengths disagree with the manifest")
        words = len(self.codes)
        if len(self.counts) != words or (n and (int(self.offsets[0]) != 0 or int(self.offsets[-1]) != words)):
            raise ValueError("offsets disagree with the terms")
        if words and int(self.codes.max()) >= len(self.vocabulary):
            raise ValueError("a term outside the vocabulary")

    def lookup(self, digests: list[int]) -> list[Known | None]:
        """(dated, packed terms) of each digest, None where the cache has none."""
        out: list[Known | None] = [None] * len(digests)
        n = len(self.digests)
        hits = 0
        if n and digests:
            keys = np.array(digests, np.uint64)
            at = np.minimum(np.searchsorted(self.digests, keys), n - 1)
            found = np.flatnonzero(self.digests[at] == keys)
            rows = at[found]
            hits = len(rows)
            starts, ends = self.offsets[rows], self.offsets[rows + 1]
            lengths = ends - starts
            # Every hit's words at once: positions start, start + 1, ... of each hit in turn.
            total = int(lengths.sum())
            first = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
            positions = first + np.arange(total)
            words = (self.vocabulary[self.codes[positions]] << np.uint64(8)) | self.counts[positions]
            packed = words.astype(PACKED_DTYPE).tobytes()
            bounds = (np.concatenate(([0], np.cumsum(lengths))) * PACKED_DTYPE.itemsize).tolist()
            dated = self.dated[rows].tolist()
            for j, (i, flag) in enumerate(zip(found.tolist(), dated, strict=True)):
                out[i] = (flag, packed[bounds[j] : bounds[j + 1]])
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
    np.cumsum([len(t) >> 3 for t in terms], out=offsets[1:])
    vocabulary, codes, counts = _encoded(terms)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = (unique, offsets, dated, vocabulary, codes, counts)
    for name, array in zip(FactsCache.ARRAYS, arrays, strict=True):
        np.save(tmp / f"{name}.npy", array)
    manifest = {"format": FORMAT, "probe": pack(PROBE).hex(), "count": len(unique)}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(root, ignore_errors=True)  # a crash here leaves no cache: texts are analysed
    tmp.rename(root)
    return len(unique)


#: Texts encoded at a time by ``_encoded``: bounds what a write holds besides its result
#: (1M texts hold ~15M terms; sorting them at once took 0.6 GB and 9 s).
ENCODE_CHUNK = 65_536


def _words(terms: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(terms), PACKED_DTYPE)


def _encoded(terms: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vocabulary of the term ids, each word's position in it, each word's count) of the
    packed terms of ``terms``, in two passes over chunks of texts."""
    chunks = [terms[i : i + ENCODE_CHUNK] for i in range(0, len(terms), ENCODE_CHUNK)]
    seen = [np.unique(_words(chunk) >> np.uint64(8)) for chunk in chunks]
    vocabulary = np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.uint64)
    dtype = np.uint16 if len(vocabulary) <= 1 << 16 else np.uint32
    codes, counts = [np.zeros(0, dtype)], [np.zeros(0, np.uint8)]
    for chunk in chunks:
        words = _words(chunk)
        codes.append(np.searchsorted(vocabulary, words >> np.uint64(8)).astype(dtype))
        counts.append((words & np.uint64(0xFF)).astype(np.uint8))
    return vocabulary.astype(np.uint64), np.concatenate(codes), np.concatenate(counts)
