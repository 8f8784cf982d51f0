"""Tantivy BM25 index over L1 memories and not-yet-consolidated L0 events.

Derived: rebuilt from RocksDB on demand. Documents hold terms produced by the project's own
analyzer (``retrieval.text``) joined by spaces and indexed with Tantivy's whitespace
tokenizer, so index and query analysis can never drift apart. Queries are built from Query
objects (tenant term AND optional stream term AND any of the query terms); user text never
reaches Tantivy's query parser.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import tantivy

from memorose.retrieval.text import analyze

KIND_MEMORY = "m"
KIND_EVENT = "e"


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("doc_key", stored=True, tokenizer_name="raw", index_option="basic")
    sb.add_text_field("tenant", tokenizer_name="raw", index_option="basic")
    sb.add_text_field("stream", tokenizer_name="raw", index_option="basic")
    sb.add_text_field("kind", tokenizer_name="raw", index_option="basic")
    sb.add_text_field("ref", stored=True, tokenizer_name="raw", index_option="basic")
    sb.add_unsigned_field("seq", indexed=True, fast=True)
    sb.add_text_field("text", tokenizer_name="whitespace", index_option="freq")
    return sb.build()


def doc_key(kind: str, tenant_id: str, ref: str) -> str:
    return f"{kind}/{tenant_id}/{ref}"


class FullTextIndex:
    """One Tantivy index for all tenants; every query is tenant-filtered."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        self._writer: Any = self.index.writer(heap_size=64 * 1024 * 1024, num_threads=1)
        self._lock = threading.Lock()
        #: Moves with every commit (what searchers see changes): caches of counts key on it.
        self.generation = 0

    # -- writes (indexer thread only) -------------------------------------------------
    def upsert(
        self, kind: str, tenant_id: str, stream_id: str, ref: str, text: str | list[str], seq: int = 0
    ) -> None:
        """Replace the document of ``ref`` (or add it)."""
        self._writer.delete_documents_by_term("doc_key", doc_key(kind, tenant_id, ref))
        self.add(kind, tenant_id, stream_id, ref, text, seq)

    def add(
        self, kind: str, tenant_id: str, stream_id: str, ref: str, text: str | list[str], seq: int = 0
    ) -> None:
        """Add a document the caller knows is not in the index (a new event): no
        delete-by-term, which was a fifth of batch ingest's indexing cost. ``text``: the
        text, or ``analyze(text)`` when the caller has it already (the timeline's facts
        need it too)."""
        fields = {
            "doc_key": doc_key(kind, tenant_id, ref),
            "tenant": tenant_id,
            "stream": stream_id,
            "kind": kind,
            "ref": ref,
            "text": " ".join(analyze(text) if isinstance(text, str) else text),
            "seq": seq,
        }
        # One call that types every field by the schema (a third cheaper than keywords
        # plus ``add_unsigned``; this runs for every event on every node).
        self._writer.add_document(tantivy.Document.from_dict(fields, self.schema))

    def delete(self, kind: str, tenant_id: str, ref: str) -> None:
        self._writer.delete_documents_by_term("doc_key", doc_key(kind, tenant_id, ref))

    def delete_events(self, tenant_id: str, first_seq: int, last_seq: int) -> None:
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, self._term("tenant", tenant_id)),
                (tantivy.Occur.Must, self._term("kind", KIND_EVENT)),
                (
                    tantivy.Occur.Must,
                    tantivy.Query.range_query(
                        self.schema, "seq", tantivy.FieldType.Unsigned, first_seq, last_seq
                    ),
                ),
            ]
        )
        self._writer.delete_documents_by_query(query)

    def delete_tenant(self, tenant_id: str) -> None:
        self._writer.delete_documents_by_term("tenant", tenant_id)

    def clear(self) -> None:
        self._writer.delete_all_documents()

    def commit(self) -> None:
        with self._lock:
            self._writer.commit()
            self.index.reload()
            self.generation += 1

    # -- reads --------------------------------------------------------------------------
    def _term(self, field: str, value: str) -> tantivy.Query:
        return tantivy.Query.term_query(self.schema, field, value)

    def search(
        self,
        tenant_id: str,
        terms: list[str],
        *,
        stream_id: str | None = None,
        kind: str | None = None,
        limit: int = 10,
    ) -> list[tuple[str, str, float]]:
        """(kind, ref, bm25 score) of the best documents of this tenant."""
        if not terms:
            return []
        clauses = [(tantivy.Occur.Must, self._term("tenant", tenant_id))]
        if stream_id is not None:
            clauses.append((tantivy.Occur.Must, self._term("stream", stream_id)))
        if kind is not None:
            clauses.append((tantivy.Occur.Must, self._term("kind", kind)))
        text_query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, self._term("text", t)) for t in terms]
        )
        clauses.append((tantivy.Occur.Must, text_query))
        searcher = self.index.searcher()
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=False).hits
        out = []
        for score, address in hits:
            doc = searcher.doc(address)
            kind_ref = doc["doc_key"][0].split("/", 1)[0]
            out.append((kind_ref, doc["ref"][0], float(score)))
        return out

    def close(self) -> None:
        """Release the writer (and its directory lock) so the index can be reopened."""
        with self._lock:
            if self._writer is not None:
                self._writer.wait_merging_threads()
                self._writer = None

    def num_docs(self) -> int:
        return int(self.index.searcher().num_docs)
