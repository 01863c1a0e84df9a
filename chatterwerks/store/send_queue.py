"""Sends, coalesced per channel under bursts (docs/architecture.md,
"Sending under bursts").

Sends to one channel commit one after another, whatever we do: each takes
the next seq under the channel row's lock. So when a send to a channel is
in flight from this process, the next ones wait here rather than in
PostgreSQL, and go together as one statement and one commit
(`send_messages`) when it is done. A commit, a channel row update, and a
wake of every listening connection then serve the whole batch, where each
message alone costs all three: PostgreSQL's CPU per message falls by two
thirds at four messages a batch (docs/benchmarks.md).

With no burst nothing waits: a send to a channel with nothing in flight
goes at once, as the one-message statement. Sends that do more (a thread
reply, an @mention, files, a question to Otter) always go alone. A message
the batch did not send (its author not a member, its key used before) is
sent alone after it, which answers it exactly as a send alone would have.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg

from chatterwerks import otter
from chatterwerks.db import QUERIES
from chatterwerks.store import messages

MAX_BATCH = 32  # messages a statement; a longer queue goes in several
Sent = tuple[str, bool]  # the message as JSON, and whether this send created it


@dataclass(slots=True)
class _Queued:
    author_id: int
    text: str
    idempotency_key: str | None
    future: asyncio.Future[Sent] = field(repr=False)


class SendQueue:
    """The sends of this process: `send()` is the one door."""

    def __init__(self, pool: asyncpg.Pool, otter_id: int) -> None:
        self._pool = pool
        self._otter_id = otter_id
        # channel id -> the sends queued behind the one in flight there. A
        # channel is a key here exactly while a send to it is in flight.
        self._lanes: dict[int, list[_Queued]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()  # set while no send is in flight
        self._drained.set()
        self.batches = 0  # statements that sent more than one message (tests, bench)

    async def send(
        self,
        channel_id: int,
        author_id: int,
        text: str,
        idempotency_key: str | None,
        reply_to: int | None = None,
        files: list[int] | None = None,
    ) -> Sent:
        """Sends a message as store.messages.send() does, with the same answer
        and the same errors."""
        lean = (
            reply_to is None
            and not files
            and "@" not in text
            and (author_id == self._otter_id or otter.addressed_question(text) is None)
        )
        if not lean:
            return await self._alone(channel_id, author_id, text, idempotency_key, reply_to, files)
        lane = self._lanes.get(channel_id)
        if lane is not None:
            future: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
            lane.append(_Queued(author_id, text, idempotency_key, future))
            return await future
        self._lanes[channel_id] = []
        self._drained.clear()
        try:
            return await self._alone(channel_id, author_id, text, idempotency_key)
        finally:
            self._after(channel_id)

    async def close(self, timeout: float = 10.0) -> None:
        """Lets the sends in flight and the queues behind them finish (their
        senders are owed an answer), then cancels what is left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        for task in list(self._flushes):
            task.cancel()
        await asyncio.gather(*self._flushes, return_exceptions=True)

    async def _alone(
        self,
        channel_id: int,
        author_id: int,
        text: str,
        idempotency_key: str | None,
        reply_to: int | None = None,
        files: list[int] | None = None,
    ) -> Sent:
        return await messages.send(
            self._pool,
            channel_id,
            author_id,
            text,
            idempotency_key,
            self._otter_id,
            reply_to,
            files,
        )

    def _after(self, channel_id: int) -> None:
        """The send in flight to a channel is done: the queue behind it goes
        next, else the channel is free."""
        if self._lanes[channel_id]:
            task = asyncio.create_task(self._flush(channel_id), name=f"sends-{channel_id}")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        else:
            self._free(channel_id)

    def _free(self, channel_id: int) -> None:
        del self._lanes[channel_id]
        if not self._lanes:
            self._drained.set()

    async def _flush(self, channel_id: int) -> None:
        lane = self._lanes[channel_id]
        batch: list[_Queued] = []
        try:
            while lane:
                batch, rest, keys = [], [], set()
                for queued in lane:
                    key = (queued.author_id, queued.idempotency_key)
                    # A key repeated in one batch would fail it all: the
                    # repeat waits for the next, where it finds the first.
                    if len(batch) < MAX_BATCH and (
                        queued.idempotency_key is None or key not in keys
                    ):
                        batch.append(queued)
                        keys.add(key)
                    else:
                        rest.append(queued)
                lane[:] = rest
                await self._send_batch(channel_id, batch)
        finally:
            self._free(channel_id)
            for queued in (*batch, *lane):  # unanswered only when cancelled at shutdown
                queued.future.cancel()  # (a no-op for those answered)

    async def _send_batch(self, channel_id: int, batch: list[_Queued]) -> None:
        sent: dict[int, str] = {}
        if len(batch) > 1:
            try:
                sent = await self._insert_many(channel_id, batch)
            except asyncpg.UniqueViolationError:
                # A key sent meanwhile from another process: the whole batch
                # rolled back. Each goes alone, and learns it was a repeat.
                sent = {}
            except Exception as exc:
                for queued in batch:
                    _settle(queued.future, exception=exc)
                return
        for place, queued in enumerate(batch, 1):
            if place in sent:
                _settle(queued.future, result=(sent[place], True))
                continue
            try:
                result = await self._alone(
                    channel_id, queued.author_id, queued.text, queued.idempotency_key
                )
            except Exception as exc:
                _settle(queued.future, exception=exc)
            else:
                _settle(queued.future, result=result)

    async def _insert_many(self, channel_id: int, batch: list[_Queued]) -> dict[int, str]:
        """Sends the batch in one statement: {place in the batch (1-based): the
        message as JSON} of those it sent."""
        rows = await self._pool.fetch(
            QUERIES.send_messages,
            channel_id,
            [queued.author_id for queued in batch],
            [queued.text for queued in batch],
            [queued.idempotency_key for queued in batch],
        )
        self.batches += 1
        return {row["ord"]: row["json"] for row in rows}


def _settle(
    future: asyncio.Future[Sent],
    *,
    result: Sent | None = None,
    exception: BaseException | None = None,
) -> None:
    """Answers a queued send, unless its sender has gone (then nobody asks)."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]
