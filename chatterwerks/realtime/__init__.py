"""Delivery: how a committed change reaches the long-polls of this process.

One narrow door, the Hub (hub.py): events.py registers a poll's waiter, asks
the hub to read what lies past a cursor, and sleeps until woken. Behind it:

- listener.py: the one LISTEN connection, kept up whatever fails;
- waiters.py: the parked polls, and when to wake them (bursts batched);
- cache.py: recent messages per channel, one database read for many polls;
- view.py: the read-through view of a user's memberships and channels, that
  answers read(user, cursor) from the caches when it can.

Nothing here writes; all SQL is in the store.
"""

from chatterwerks.realtime.hub import APPLICATION_NAME, Hub
from chatterwerks.realtime.view import Cursor, Position

__all__ = ["APPLICATION_NAME", "Cursor", "Hub", "Position"]
