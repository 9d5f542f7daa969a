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
import datetime as dt
import logging
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import zip_longest

from newsdesk.index.dates import Filters, ParsedQuestion, parse_question, strip_operators, today_of
from newsdesk.index.errors import LLMError
from newsdesk.index.service import Index
from newsdesk.index.settings import Settings
from newsdesk.index.types import Hit, SearchResult

from . import llm
from .answers import Answer, Citation, Turn
from .extractive import Extractor, build
from .i18n import ANSWER_KEYS, answer_language, catalogue, languages, t
from .render import describe_filters
from .verify import render_text, verify

log = logging.getLogger(__name__)

# the answer notices of every language that has them, from the message catalogue (bot/locales/<lang>.json)
MESSAGES = {lang: {key.split(".", 1)[1]: t(key, lang) for key in ANSWER_KEYS}
            for lang in sorted(languages()) if ANSWER_KEYS[0] in catalogue(lang)}

# A question that starts like a follow-up ("and where…", "what about…", "وأين…", "ومتى…"). In Arabic "و" (and) is
# written joined to the next word, so the joined forms are listed.
_FOLLOW_UP = re.compile(r"^\s*(?:and|but|also|what about|how about|و|ماذا عن|و(?:ماذا|ما|هل|كم|من|أين|اين|متى|كيف"
                        r"|لماذا|لم|أي|اي))\b", re.IGNORECASE)


def language(text: str) -> str:
    """The language of an answer's notices: the question's (``i18n.answer_language``), else English."""
    return answer_language(text)


def _carry_also(citations: Sequence[Citation], hits: Sequence[Hit]) -> None:
    """Each citation names the other outlets of its story ("also reported by"), as the hit it cites does."""
    also = {hit.chunk_id: hit.also for hit in hits}
    for citation in citations:
        citation.also = list(also.get(citation.chunk_id, []))


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
    def __init__(self, settings: Settings, index: Index | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.settings = settings
        self.index = index or Index(settings)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))  # "now" for "yesterday", "last week"…
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

    async def ask(self, question: str, history: Sequence[Turn] = (), k: int | None = None,
                  filters: Filters | None = None, *, on_progress: llm.Progress | None = None,
                  now: dt.datetime | None = None) -> Answer:
        """The verified answer to ``question``. ``filters`` (the command line's ``--since``, ``--until``,
        ``--source``) are completed by what the question asks for itself (``since:``, ``source:``, "yesterday",
        "أمس"…: ``read_question``, relative to ``now``, by default the engine's clock); the passages are then
        filtered in the store query, and the answer's notice says which articles it was limited to.
        ``on_progress`` (LLM mode): the model's reply is streamed and ``on_progress(text)`` awaited with its
        readable, unverified text so far, for a front end to show (and throttle) until it shows the returned
        answer instead; offline answers come whole, without it."""
        asked = self.read_question(question.strip(), history, now)
        filters = (filters or Filters()).merged(asked.filters)
        answer = await self._ask(question.strip(), asked.text, history, k or self.settings.top_k, filters,
                                 on_progress)
        return self._noted(answer, filters, asked.ignored)

    def read_question(self, question: str, history: Sequence[Turn] = (),
                      now: dt.datetime | None = None) -> ParsedQuestion:
        """The filters ``question`` asks for and the text to search for (``index.dates.parse_question``); a
        follow-up that asks for none keeps those of the question it follows."""
        today = today_of(now or self.clock())
        asked = parse_question(question, today)
        if not asked.filters.active and history and offline_standalone(asked.text, history) != asked.text:
            earlier = parse_question(history[-1].question, today).filters
            asked.filters = replace(earlier, latest=earlier.latest or asked.filters.latest)
        return asked

    def _noted(self, answer: Answer, filters: Filters, ignored: Sequence[str]) -> Answer:
        """The answer to a filtered question says which articles it was limited to (or that none matched)."""
        lang = language(answer.question)
        notes = []
        if filters.active:
            what = describe_filters(filters, lang)
            if answer.abstained and not answer.retrieved and not self.index.is_empty():
                answer.text = t("filter.none", lang, what=what)
            else:
                notes.append(t("filter.only", lang, what=what))
        if ignored:
            notes.append(t("filter.ignored", lang, values=", ".join(ignored)))
        if notes:
            answer.notice = " ".join([*notes, answer.notice] if answer.notice else notes)
        return answer

    async def _ask(self, question: str, text: str, history: Sequence[Turn], k: int, filters: Filters,
                   on_progress: llm.Progress | None) -> Answer:
        """``ask``, for ``text`` (the question without its filter operators) and ``filters``."""
        if self.client is None:
            standalone = strip_operators(offline_standalone(text, history))
            follow_up = text if standalone != text else None
            return await asyncio.to_thread(self._offline, question, standalone, k, follow_up, filters)
        standalone, follow_up = text, None
        if history:
            try:
                standalone = await llm.standalone_question(self.client, self.settings, text, history)
            except LLMError as exc:
                log.warning("could not rewrite the follow-up question: %s", exc)
                standalone = strip_operators(offline_standalone(text, history))
                follow_up = text if standalone != text else None  # for the offline fallback only
        result = await asyncio.to_thread(self.index.retrieve, standalone, k, filters)
        hits = result.hits
        if not hits:
            return self._abstain(question, standalone, "llm", empty=True)
        try:
            raw = await llm.complete_cited_answer(self.client, self.settings, standalone, hits, history,
                                                  on_progress=on_progress)
        except LLMError as exc:
            log.warning("language model failed, answering offline: %s", exc)
            return await self._fallback(question, standalone, result, follow_up, "fallback")
        checked = verify(raw, hits)
        _carry_also(checked.citations, hits)
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
        answer.retrieved = [h.chunk_id for h in hits]
        answer.proposed, answer.accepted, answer.repaired = checked.proposed, checked.accepted, checked.repaired
        return answer

    async def _fallback(self, question: str, standalone: str, result: SearchResult, follow_up: str | None,
                        reason: str) -> Answer:
        """The offline answer from the passages already retrieved, with the notice ``MESSAGES[..][reason]``."""
        answer = await asyncio.to_thread(self._extractive, question, standalone, [result], follow_up)
        answer.mode = "fallback"
        answer.notice = MESSAGES[language(question)][reason]
        return answer

    def ask_sync(self, question: str, history: Sequence[Turn] = (), k: int | None = None,
                 filters: Filters | None = None, now: dt.datetime | None = None, *,
                 on_progress: llm.Progress | None = None) -> Answer:
        """``ask`` from blocking code: runs its own event loop and closes the client it used."""
        async def run() -> Answer:
            try:
                return await self.ask(question, history, k, filters, now=now, on_progress=on_progress)
            finally:
                await self.aclose()

        return asyncio.run(run())

    def _offline(self, question: str, standalone: str, k: int, follow_up: str | None,
                 filters: Filters | None = None) -> Answer:
        """The offline answer, in one worker thread: retrieve, then choose the quotes."""
        return self._extractive(question, standalone, self._search(standalone, k, follow_up, filters), follow_up)

    def _search(self, question: str, k: int, follow_up: str | None = None,
                filters: Filters | None = None) -> list[SearchResult]:
        """The searches for ``question``: one, or for an offline follow-up (``question`` is ``follow_up`` read
        with the previous question) also one for the follow-up as written."""
        results = [self.index.retrieve(question, k, filters)]
        if follow_up and follow_up != question:
            results.append(self.index.retrieve(follow_up, k, filters))
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
            return replace(self._abstain(question, standalone, "extractive"), retrieved=[h.chunk_id for h in hits])
        sentences, citations = build(chosen)
        intro = MESSAGES[language(question)]["extractive"]
        body = "\n".join(f"[{s.citations[0]}] «{s.text}»" for s in sentences)
        return Answer(question=question, text=f"{intro}\n{body}", sentences=sentences, citations=citations,
                      mode="extractive", abstained=False, standalone_question=standalone,
                      retrieved=[h.chunk_id for h in hits])

    def _abstain(self, question: str, standalone: str, mode: str, empty: bool = False) -> Answer:
        if empty and not self.index.is_empty():
            empty = False
        text = MESSAGES[language(question)]["empty" if empty else "abstain"]
        return Answer(question=question, text=text, sentences=[], citations=[], mode=mode, abstained=True,
                      standalone_question=standalone)
