"""The search query language (GET /api/search, docs/api.md): parsing a query
into words, phrases, a prefix and filters; the tsquery text built from them;
and the highlights of a hit.

    words        all must match, accents and case folded:  release notes
    "a phrase"   these words, in this order, side by side:  "release notes"
    from:NAME    by this user (repeat for any of several):   from:alice
    in:NAME      in this channel (quote a name with spaces): in:"design review"
    before:DATE  sent before that day (UTC), YYYY-MM-DD:     before:2026-12-01
    after:DATE   sent after that day (UTC), YYYY-MM-DD:      after:2026-11-01

A word is a run of letters and digits (with their combining marks);
everything else separates words. A chunk such as "example.com", "co-op" or
"10:30" is the phrase of its words. The last word of the query, when the
query does not end with a space, also matches as a prefix (results as you
type). Unknown "name:" operators are plain words, so "re: lunch" or "10:30"
search as written.

Why words are runs of letters and digits: that is all that ever reaches
to_tsquery, so its syntax (& | ! ( ) <-> : * ' \\) cannot be injected, and
it is also how the index splits text (sql/006_search.sql turns ASCII
punctuation into spaces before indexing).
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass

MAX_QUERY_LENGTH = 500  # code points
MAX_WORDS = 16  # words, counting those of phrases
MAX_FILTERS = 10  # from: and in: values, together
MAX_WORD_LENGTH = 100  # code points; PostgreSQL refuses words over 2047 bytes
PREFIX_MIN_LENGTH = 2  # a one-letter prefix would match most of the index

OPERATORS = ("from", "in", "before", "after")
# Letters and digits (Python's alnum, less "_") and the common combining marks.
_WORD = re.compile(
    r"(?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f])+"
)
_OPERATOR = re.compile(r"([A-Za-z]+):")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Letters unaccent folds that Unicode decomposition does not (unaccent.rules).
_EXTRA_FOLDS = str.maketrans(
    {"ø": "o", "ł": "l", "æ": "ae", "œ": "oe", "đ": "d", "ħ": "h", "ı": "i", "ŧ": "t",
     "þ": "th", "ð": "d", "ŀ": "l", "ĸ": "q", "ſ": "s"}
)  # fmt: skip


class QueryError(ValueError):
    """A query that cannot be parsed; position is a code-point offset into it."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"{message} (at position {position})")
        self.position = position
        self.reason = message


@dataclass(frozen=True)
class Query:
    """A parsed query. Words and phrases keep the user's spelling: PostgreSQL
    folds them with the index's own configuration."""

    words: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()
    # The last word typed, matched as a prefix; with the phrase words before
    # it when it ended a chunk such as "example.co".
    prefix: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    before: datetime.date | None = None
    after: datetime.date | None = None

    @property
    def has_text(self) -> bool:
        return bool(self.words or self.phrases or self.prefix)

    def tsquery(self) -> str | None:
        """The text for to_tsquery(config, text): every term ANDed, a phrase's
        words joined by <->, the prefix marked :*. None without text terms.
        Safe by construction: words are letters and digits only."""
        terms: list[str] = list(self.words)
        terms += ["(" + " <-> ".join(p) + ")" for p in self.phrases]
        if self.prefix:
            terms.append("(" + " <-> ".join((*self.prefix[:-1], self.prefix[-1] + ":*")) + ")")
        if not terms:
            return None
        text = " & ".join(terms)
        assert all(_WORD.fullmatch(w) for w in self.all_words()), text
        return text

    def all_words(self) -> list[str]:
        """Every word of the query, the prefix too (as typed)."""
        return [*self.words, *(w for p in self.phrases for w in p), *self.prefix]

    def before_time(self) -> datetime.datetime | None:
        """before:D: sent before D began (UTC)."""
        if self.before is None:
            return None
        return datetime.datetime.combine(self.before, datetime.time(), datetime.UTC)

    def after_time(self) -> datetime.datetime | None:
        """after:D: sent after D ended (UTC), that is from the next day on."""
        if self.after is None:
            return None
        start = datetime.datetime.combine(self.after, datetime.time(), datetime.UTC)
        if self.after == datetime.date.max:
            return datetime.datetime.max.replace(tzinfo=datetime.UTC)
        return start + datetime.timedelta(days=1)

    def highlights(self, text: str) -> list[list[int]]:
        """[start, end) code-point offsets of the words of `text` that the
        query's words, phrases and prefix match (accents and case folded),
        in order, overlaps merged."""
        if not self.has_text or not text:
            return []
        tokens = [(m.start(), m.end(), fold(m.group())) for m in _WORD.finditer(text)]
        words = {fold(w) for w in self.words}
        spans: list[tuple[int, int]] = []
        sequences = [tuple(fold(w) for w in p) for p in self.phrases]
        prefix = tuple(fold(w) for w in self.prefix)
        for i, (start, end, word) in enumerate(tokens):
            if word in words:
                spans.append((start, end))
            for sequence in sequences:
                if _matches_at(tokens, i, sequence):
                    spans.append((start, tokens[i + len(sequence) - 1][1]))
            if prefix and _matches_at(tokens, i, prefix, prefix_last=True):
                spans.append((start, tokens[i + len(prefix) - 1][1]))
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return merged


def _matches_at(
    tokens: list[tuple[int, int, str]], i: int, sequence: tuple[str, ...], prefix_last: bool = False
) -> bool:
    if not sequence or i + len(sequence) > len(tokens):
        return False
    for j, wanted in enumerate(sequence):
        word = tokens[i + j][2]
        last = j == len(sequence) - 1
        if not (word.startswith(wanted) if prefix_last and last else word == wanted):
            return False
    return True


def fold(word: str) -> str:
    """A word as the index holds it (unaccent, then lower case), as near as
    Python gets: decomposed, combining marks dropped, case folded."""
    decomposed = unicodedata.normalize("NFKD", word)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().translate(_EXTRA_FOLDS)


def parse(q: str) -> Query:
    """Parses a query; raises QueryError with the position of the problem."""
    if len(q) > MAX_QUERY_LENGTH:
        raise QueryError(MAX_QUERY_LENGTH, f"A query has at most {MAX_QUERY_LENGTH} characters")
    for i, c in enumerate(q):
        if c == "\x00" or "\ud800" <= c <= "\udfff":
            raise QueryError(i, "The query contains a character that is not text")
    words: list[str] = []
    phrases: list[tuple[str, ...]] = []
    prefix: tuple[str, ...] = ()
    authors: list[str] = []
    channels: list[str] = []
    dates: dict[str, datetime.date] = {}
    count = 0
    i, n = 0, len(q)
    while i < n:
        if q[i].isspace():
            i += 1
            continue
        start = i
        operator = _OPERATOR.match(q, i)
        if operator and operator.group(1).lower() in OPERATORS:
            name = operator.group(1).lower()
            value, i = _value(q, operator.end(), name)
            if name in ("from", "in"):
                target = authors if name == "from" else channels
                target.append(_filter_value(name, value, operator.end()))
                if len(authors) + len(channels) > MAX_FILTERS:
                    raise QueryError(start, f"A query has at most {MAX_FILTERS} from: and in:")
            else:
                if name in dates:
                    raise QueryError(start, f"{name}: is given twice")
                dates[name] = _date(value, operator.end())
            continue
        if q[i] == '"':
            end = q.find('"', i + 1)
            if end < 0:
                raise QueryError(i, "This quote is never closed")
            found = _words(q, i + 1, end)
            i = end + 1
            if len(found) == 1:
                words.append(found[0])
            elif found:
                phrases.append(tuple(found))
        else:
            end = i
            while end < n and not q[end].isspace() and q[end] != '"':
                end += 1
            found = _words(q, i, end)
            i = end
            # The last chunk, still being typed: its last word is a prefix.
            typing = i == n and found and len(found[-1]) >= PREFIX_MIN_LENGTH
            if typing:
                prefix = tuple(found)
            elif len(found) == 1:
                words.append(found[0])
            elif found:
                phrases.append(tuple(found))
        count = len(words) + sum(map(len, phrases)) + len(prefix)
        if count > MAX_WORDS:
            raise QueryError(start, f"A query has at most {MAX_WORDS} words")
    query = Query(
        words=tuple(words),
        phrases=tuple(phrases),
        prefix=prefix,
        authors=tuple(authors),
        channels=tuple(channels),
        before=dates.get("before"),
        after=dates.get("after"),
    )
    if not query.has_text and not (authors or channels or dates):
        raise QueryError(0, "Search for at least one word, or use from:, in:, before: or after:")
    return query


def _words(q: str, start: int, end: int) -> list[str]:
    found = []
    for match in _WORD.finditer(q, start, end):
        if len(match.group()) > MAX_WORD_LENGTH:
            raise QueryError(match.start(), f"A word has at most {MAX_WORD_LENGTH} characters")
        found.append(match.group())
    return found


def _value(q: str, i: int, name: str) -> tuple[str, int]:
    """An operator's value at q[i:] (quoted or up to the next space) and the
    index after it."""
    if i < len(q) and q[i] == '"':
        end = q.find('"', i + 1)
        if end < 0:
            raise QueryError(i, "This quote is never closed")
        value, after = q[i + 1 : end], end + 1
    else:
        end = i
        while end < len(q) and not q[end].isspace():
            end += 1
        value, after = q[i:end], end
    if not value.strip():
        raise QueryError(i, f"{name}: needs a value, as in {_EXAMPLES[name]}")
    return value.strip(), after


_EXAMPLES = {
    "from": "from:alice",
    "in": "in:general",
    "before": "before:2026-01-31",
    "after": "after:2026-01-01",
}


def _filter_value(name: str, value: str, position: int) -> str:
    if name == "from":
        value = value.removeprefix("@")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{3,32}", value):
            raise QueryError(position, "from: takes a username (3 to 32 letters, digits, _ . -)")
    else:
        value = value.removeprefix("#")
        if not 1 <= len(value) <= 64:
            raise QueryError(position, "in: takes a channel name (1 to 64 characters)")
    return value


def _date(value: str, position: int) -> datetime.date:
    if _DATE.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise QueryError(position, "A date is written YYYY-MM-DD, as in 2026-01-31")
