"""The exceptions newsdesk raises, in one place.

Errors from third-party libraries (chromadb, openai, httpx, trafilatura) are wrapped at the module that talks
to them (``raise StoreError(...) from exc``), so the rest of the code and the front ends only ever see these.
Messages are one line, written for the person running newsdesk, and never contain secrets.

Hierarchy::

    NewsdeskError                 base of everything below
    ├── ConfigError               a setting is missing or malformed
    ├── InputError                an article source cannot be indexed (empty, binary, too big, undecodable…)
    │   └── FetchError            a URL could not be fetched (unreachable, refused private address, too big)
    ├── StoreError                the Chroma store failed or cannot be reached
    │   ├── EmbedderMismatchError the index was built with another embedder: run ``newsdesk index --rebuild``
    │   └── StoreDamagedError     the embedded store's files are damaged: ``newsdesk index --rebuild`` moves it aside
    ├── EmbeddingError            an embedder failed (model missing, OpenAI embeddings failed)
    └── LLMError                  the language model could not give a usable answer
        ├── LLMUnavailableError   it failed after the retries, timed out, or cannot be reached
        └── LLMResponseError      it answered, but not with valid ``cited_answer`` JSON
"""

from __future__ import annotations


class NewsdeskError(Exception):
    """Base class: every error newsdesk raises on purpose."""


class ConfigError(NewsdeskError):
    """A setting is missing or malformed."""


class InputError(NewsdeskError):
    """An article source cannot be indexed; the message says why in one line."""


class FetchError(InputError):
    """A URL could not be fetched."""


class StoreError(NewsdeskError):
    """The Chroma store failed or cannot be reached."""


class EmbedderMismatchError(StoreError):
    """The collection was built by a different embedder or dimension."""


class StoreDamagedError(StoreError):
    """The embedded store's database is damaged (truncated, overwritten, missing)."""


class EmbeddingError(NewsdeskError):
    """An embedder failed."""


class LLMError(NewsdeskError):
    """The language model could not give a usable answer."""


class LLMUnavailableError(LLMError):
    """The model failed after the retries, timed out, or cannot be reached."""


class LLMResponseError(LLMError):
    """The model answered with something that is not valid ``cited_answer`` JSON."""
