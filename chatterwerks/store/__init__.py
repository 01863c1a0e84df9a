"""All database access of the chat, split by concern: accounts (users and
sessions), channels (memberships, read markers, what a poll compares its
cursor with) and messages.

Every function runs named statements from sql/queries/ and checks the
asker's membership inside the same statement or transaction, so a handler
cannot forget it. Refusals are domain errors (errors.NotFound, Forbidden,
Conflict, Invalid) that know nothing of HTTP; the error middleware answers
them. A non-member gets the same NotFound as for a channel that does not
exist.
"""
