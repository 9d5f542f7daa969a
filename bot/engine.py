"""The answer engine: a question (and the conversation so far) in, a typed ``Answer`` out.

Used by the CLI and the Telegram bot alike. It retrieves passages from the index, then either asks the
language model for a cited answer and verifies every quote (LLM mode, when ``OPENAI_API_KEY`` is set), or
quotes the best sentences itself (offline mode). The model saying the question is not answerable from the
passages abstains. When the model fails (any ``LLMError``: unavailable, or a reply that is not cited_answer
JSON) or its reply holds nothing that can be verified (no citation located in the passages), the offline
answer is given with a one-line notice that says which. Blocking work (embedding, Chroma) runs in a worker
thread, never on the event loop.

Each question is retrieved once (``Index.retrieve``): the offline answer reuses the question vectors and the
passages' sentences the search computed. The engine talks to the index, never to the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Sequence
from dataclasses import replace
from itertools import zip_longest

from newsdesk.index.errors import LLMError
from newsdesk.index.lexical import script_of
from newsdesk.index.service import Index
from newsdesk.index.settings import Settings
from newsdesk.index.types import Hit, SearchResult

from . import llm
from .answers import Answer, Turn
from .extractive import Extractor, build
from .verify import render_text, verify

log = logging.getLogger(__name__)

MESSAGES = {
    "en": {
        "extractive": "Offline answer: the passages that best match your question, quoted verbatim "
                      "(a set of quotes, not a written answer).",
        "abstain": "The indexed articles don't answer this question.",
        "empty": "No articles are indexed yet.",
        "fallback": "The language model could not answer just now, so here are quotes from the articles instead.",
        "unverifiable": "The language model's citations could not be checked against the articles, so here are "
                        "quotes from the articles instead.",
    },
    "ar": {
        "extractive": "إجابة دون اتصال: أكثر المقاطع صلة بسؤالك، مقتبسة حرفيا (مجموعة اقتباسات وليست إجابة مكتوبة).",
        "abstain": "المقالات المفهرسة لا تجيب عن هذا السؤال.",
        "empty": "لم تتم فهرسة أي مقالات بعد.",
        "fallback": "تعذر على النموذج اللغوي الإجابة الآن، لذا إليك اقتباسات من المقالات بدلا من ذلك.",
        "unverifiable": "تعذر التحقق من اقتباسات النموذج اللغوي في المقالات، لذا إليك اقتباسات من المقالات بدلا من "
                        "ذلك.",
    },
}

# A question that starts like a follow-up ("and where…", "what about…", "وأين…", "ومتى…"). In Arabic "و" (and) is
# written joined to the next word, so the joined forms are listed.
_FOLLOW_UP = re.compile(r"^\s*(?:and|but|also|what about|how about|و|ماذا عن|و(?:ماذا|ما|هل|كم|من|أين|اين|متى|كيف"
                        r"|لماذا|لم|أي|اي))\b", re.IGNORECASE)


def language(text: str) -> str:
    return "ar" if script_of(text) == "ar" else "en"


def offline_standalone(question: str, history: Sequence[Turn]) -> str:
    """Offline follow-ups: a short question or one that starts like a follow-up is read together with the
    previous question."""
    if not history:
        return question
    words = question.split()
    if _FOLLOW_UP.match(question) or len(words) <= 4:
        return f"{history[-1].question} {question}"
    return question


class Engine:
    def __init__(self, settings: Settings, index: Index | None = None) -> None:
        self.settings = settings
        self.index = index or Index(settings)
        self.extractor = Extractor(self.index.embedder)
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> client
        self._client = None  # the client used outside any event loop (not expected; kept for completeness)

    @property
    def client(self):
        """The async OpenAI client of the running event loop (None offline). An async client's connections
        belong to the loop that opened them, so each loop gets its own: ``ask_sync`` twice, or the CLI and a
        test in different loops, must not reuse connections of a closed loop."""
        if not self.settings.llm_enabled:
            return None
        from newsdesk.index.openai_client import make_async_client

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._client is None:
                self._client = make_async_client(self.settings)
            return self._client
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = make_async_client(self.settings)
        return client

    async def aclose(self) -> None:
        """Close the language model client of the running event loop, if one was opened."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    @property
    def mode(self) -> str:
        return "llm" if self.settings.llm_enabled else "extractive"

    async def ask(self, question: str, history: Sequence[Turn] = (), k: int | None = None) -> Answer:
        k = k or self.settings.top_k
        question = question.strip()
        if self.client is None:
            standalone = offline_standalone(question, history)
            follow_up = question if standalone != question else None
            return await asyncio.to_thread(self._offline, question, standalone, k, follow_up)
        standalone, follow_up = question, None
        if history:
            try:
                standalone = await llm.standalone_question(self.client, self.settings, question, history)
            except LLMError as exc:
                log.warning("could not rewrite the follow-up question: %s", exc)
                standalone = offline_standalone(question, history)
                follow_up = question if standalone != question else None  # for the offline fallback only
        result = await asyncio.to_thread(self.index.retrieve, standalone, k)
        hits = result.hits
        if not hits:
            return self._abstain(question, standalone, "llm", empty=True)
        try:
            raw = await llm.complete_cited_answer(self.client, self.settings, standalone, hits, history)
        except LLMError as exc:
            log.warning("language model failed, answering offline: %s", exc)
            return await self._fallback(question, standalone, result, follow_up, "fallback")
        checked = verify(raw, hits)
        if isinstance(raw, dict) and raw.get("answerable") is False:
            answer = self._abstain(question, standalone, "llm")
        elif not checked.sentences:
            log.warning("none of the language model's %d citation(s) held, answering offline", checked.proposed)
            answer = await self._fallback(question, standalone, result, follow_up, "unverifiable")
        else:
            answer = Answer(question=question, text=render_text(checked.sentences), sentences=checked.sentences,
                            citations=checked.citations, mode="llm", abstained=False,
                            standalone_question=standalone)
        answer.dropped = checked.dropped
        answer.proposed, answer.accepted, answer.repaired = checked.proposed, checked.accepted, checked.repaired
        return answer

    async def _fallback(self, question: str, standalone: str, result: SearchResult, follow_up: str | None,
                        reason: str) -> Answer:
        """The offline answer from the passages already retrieved, with the notice ``MESSAGES[..][reason]``."""
        answer = await asyncio.to_thread(self._extractive, question, standalone, [result], follow_up)
        answer.mode = "fallback"
        answer.notice = MESSAGES[language(question)][reason]
        return answer

    def ask_sync(self, question: str, history: Sequence[Turn] = (), k: int | None = None) -> Answer:
        """``ask`` from blocking code: runs its own event loop and closes the client it used."""
        async def run() -> Answer:
            try:
                return await self.ask(question, history, k)
            finally:
                await self.aclose()

        return asyncio.run(run())

    def _offline(self, question: str, standalone: str, k: int, follow_up: str | None) -> Answer:
        """The offline answer, in one worker thread: retrieve, then choose the quotes."""
        return self._extractive(question, standalone, self._search(standalone, k, follow_up), follow_up)

    def _search(self, question: str, k: int, follow_up: str | None = None) -> list[SearchResult]:
        """The searches for ``question``: one, or for an offline follow-up (``question`` is ``follow_up`` read
        with the previous question) also one for the follow-up as written."""
        results = [self.index.retrieve(question, k)]
        if follow_up and follow_up != question:
            results.append(self.index.retrieve(follow_up, k))
        return results

    @staticmethod
    def _merged(results: list[SearchResult]) -> list[Hit]:
        """The passages of the searches taken in turn, each once: up to k per search."""
        if len(results) == 1:
            return results[0].hits
        out: list[Hit] = []
        seen: set[str] = set()
        for row in zip_longest(*(r.hits for r in results)):
            for hit in row:
                if hit is not None and hit.chunk_id not in seen:
                    seen.add(hit.chunk_id)
                    out.append(replace(hit, rank=len(out) + 1))
        return out

    def _extractive(self, question: str, standalone: str, results: list[SearchResult],
                    follow_up: str | None = None) -> Answer:
        hits = self._merged(results)
        if not hits:
            return self._abstain(question, standalone, "extractive", empty=True)
        vectors = {r.query: r.qvec for r in results if r.qvec is not None}
        chosen = self.extractor.select(standalone, hits, follow_up=follow_up, query_vectors=vectors)
        if not chosen:
            return self._abstain(question, standalone, "extractive")
        sentences, citations = build(chosen)
        intro = MESSAGES[language(question)]["extractive"]
        body = "\n".join(f"[{s.citations[0]}] «{s.text}»" for s in sentences)
        return Answer(question=question, text=f"{intro}\n{body}", sentences=sentences, citations=citations,
                      mode="extractive", abstained=False, standalone_question=standalone)

    def _abstain(self, question: str, standalone: str, mode: str, empty: bool = False) -> Answer:
        if empty and not self.index.is_empty():
            empty = False
        text = MESSAGES[language(question)]["empty" if empty else "abstain"]
        return Answer(question=question, text=text, sentences=[], citations=[], mode=mode, abstained=True,
                      standalone_question=standalone)
