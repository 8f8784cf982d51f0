"""Model providers (embeddings, LLM). Vendors are loaded lazily by name."""
