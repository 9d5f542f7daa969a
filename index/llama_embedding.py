"""Our embedders as llama-index embeddings (batched), the form the indexing pipeline uses them in."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from .embedding import Embedder


class LlamaEmbedding(BaseEmbedding):
    """Our embedder as a llama-index embedding (batched), so llama-index components can use it."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(model_name=embedder.name, embed_batch_size=batch_size, **kwargs)
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.queries([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.passages(texts, bulk=True).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)
