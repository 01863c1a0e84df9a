"""Otter, the Chatterwerks bot: arithmetic, the date and the time.

Pure functions, no I/O. Arithmetic is parsed by a small tokenizer and a
precedence-climbing parser and computed exactly with Fraction; user text is
never evaluated as code. Every step is bounded (input length, nesting depth,
number size) so any message is answered quickly and with little memory.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import zoneinfo
from fractions import Fraction

__all__ = ["WELCOME_TEMPLATE", "addressed_question", "answer", "welcome"]

# Limits. Chat questions are short, so refusing beyond these costs nothing real
# and keeps the worst case (time, memory, recursion) small for any input.
MAX_QUESTION_CHARS = 200
MAX_NESTING = 50  # parentheses and unary signs; well under the recursion limit
MAX_BITS = 33_220  # about 10,000 decimal digits, numerator and denominator together
MAX_ROOT_DEGREE = 64  # exact roots are tried only for small denominators of an exponent
FLOAT_LOG2_LIMIT = 1000  # a float result must stay well inside the double range
MAX_PRINTED_DIGITS = 500  # longer results are shown in scientific notation
MAX_EXACT_PLACES = 30  # longer terminating decimals are rounded instead
SIGNIFICANT_DIGITS = 10  # for results that are rounded

WELCOME_TEMPLATE = (
    "Welcome to Chatterwerks, {username}! I'm Otter, the resident bot. "
    'Say "Hey Otter, help" to see what I can do.'
)

HELP_TEXT = (
    'I\'m Otter! Start a message with "Hey Otter" and ask me:\n'
    "- arithmetic: Hey Otter, what is (3 + 4) * 2.5?\n"
    "  (+ - * / ^ % and parentheses, or the words plus, minus, times, "
    "multiplied by, divided by, over, to the power of, squared, cubed, mod)\n"
    "- the date: Hey Otter, what's the date?\n"
    "- the time: Hey Otter, what time is it in Tokyo? (a city or a zone like Europe/Berlin)"
)
TOO_LONG = f"That's a bit long for me: please keep questions under {MAX_QUESTION_CHARS} characters."
NOT_UNDERSTOOD = 'Sorry, I don\'t understand that. Try "Hey Otter, help" to see what I can do.'
NOT_A_CALCULATION = (
    'I couldn\'t make sense of that calculation. Try something like "Hey Otter, (3 + 4) * 2.5".'
)
DIVIDE_BY_ZERO = "I can't divide by zero, not even with my otter tricks."
MODULO_BY_ZERO = "I can't take a remainder modulo zero."
TOO_BIG = "That number would be too big for me to work out (I stop at about 10,000 digits)."
TOO_DEEP = f"That's nested too deeply for me (at most {MAX_NESTING} levels)."
NEGATIVE_ROOT = (
    "I only know real numbers, so I can't raise a negative number to a fractional power."
)
UNKNOWN_PLACE = (
    'I don\'t know a place called "{place}". '
    "Try a city like Tokyo or a time zone like Europe/Berlin."
)

_ADDRESS = re.compile(r"\s*hey(?:\s*,\s*|\s+)otter\b\s*[,:!]?(.*)", re.IGNORECASE | re.DOTALL)
_HELP_REQUESTS = {"", "help", "help me", "what can you do"}
_DATE_TIME = re.compile(
    r"(?:what(?:'s|’s|s|\s+is)?\s+)?(?:the\s+)?(?:current\s+)?(?P<kind>date|time|day)"
    r"(?:\s+is\s+it)?(?:\s+(?:now|today))?"
    r"(?:\s+(?:in|at|for)\s+(?P<place>.+?))?(?:\s+(?:right\s+now|now|today))?",
    re.IGNORECASE,
)
_POLITE_PREFIX = re.compile(
    r"(?:(?:what|how\s+much)(?:'s|’s|s|\s+is)|calculate|compute|evaluate)(?![a-z])\s*",
    re.IGNORECASE,
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# City names are matched only in these regions, so legacy aliases such as
# "US/Eastern" or "Singapore" do not shadow the real zone of a city.
_GEOGRAPHIC_REGIONS = {
    "Africa", "America", "Antarctica", "Asia", "Atlantic",
    "Australia", "Europe", "Indian", "Pacific",
}  # fmt: skip


class _Refusal(Exception):
    """A question Otter declines; the message is the friendly reply."""


def addressed_question(text: str) -> str | None:
    """Return what follows "Hey Otter" at the start of `text`, or None if Otter isn't addressed."""
    match = _ADDRESS.match(text)
    return match[1].strip() if match else None


def welcome(username: str) -> str:
    """The message Otter posts in Home when `username` registers."""
    return WELCOME_TEMPLATE.format(username=username)


def answer(question: str, now: datetime.datetime) -> str:
    """Otter's reply to `question`; `now` is the current time, aware (naive counts as UTC)."""
    text = " ".join(question.split())
    if len(text) > MAX_QUESTION_CHARS:
        return TOO_LONG
    text = text.rstrip("?.= ")  # not "!": "5!" must not silently become 5
    if text.lower() in _HELP_REQUESTS:
        return HELP_TEXT
    match = _DATE_TIME.fullmatch(text)
    if match:
        return _date_or_time(match["kind"].lower(), match["place"], now)
    return _calculate(text)


# --- date and time -------------------------------------------------------------


def _date_or_time(kind: str, place: str | None, now: datetime.datetime) -> str:
    found = _find_zone(place) if place else ("UTC", datetime.UTC)
    if found is None:
        return UNKNOWN_PLACE.format(place=place)
    zone_name, zone = found
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    local = now.astimezone(zone)
    if kind == "time":
        return f"It's {local:%H:%M} ({zone_name})."
    weekday, month = _WEEKDAYS[local.weekday()], _MONTHS[local.month - 1]
    return f"Today is {weekday}, {local.day} {month} {local.year} ({zone_name})."


def _find_zone(place: str) -> tuple[str, datetime.tzinfo] | None:
    key = _place_key(place)
    if key == "utc":  # needs no tz database
        return "UTC", datetime.UTC
    name = _zone_index().get(key)
    if name is None:
        return None
    try:
        return name, zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


@functools.cache
def _zone_index() -> dict[str, str]:
    """Map place keys to IANA names: full names first, then the city part of geographic ones."""
    names = sorted(zoneinfo.available_timezones())
    index = {_place_key(name): name for name in names}
    for name in names:
        region, _, city = name.rpartition("/")
        if region.split("/")[0] in _GEOGRAPHIC_REGIONS:
            index.setdefault(_place_key(city), name)
    return index


def _place_key(place: str) -> str:
    """Normalize a place name: "New York", "new_york" and "NEW  YORK" all become "new york"."""
    return " ".join(place.replace("_", " ").split()).lower()


# --- arithmetic: tokenizer ----------------------------------------------------------

Token = Fraction | str  # a number, or an operator / parenthesis in canonical form

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)
      | (?<![a-z])(?P<word>multiplied\s+by|divided\s+by|to\s+the\s+power\s+of
            |plus|minus|times|over|modulo|mod|squared|cubed)(?![a-z])
      | (?P<symbol>\*\*|[-+*/^%()×÷−])
    )""",
    re.VERBOSE,
)
_CANONICAL = {
    "plus": "+",
    "minus": "-",
    "−": "-",
    "times": "*",
    "multiplied by": "*",
    "×": "*",
    "divided by": "/",
    "over": "/",
    "÷": "/",
    "to the power of": "^",
    "**": "^",
    "mod": "%",
    "modulo": "%",
}


def _tokenize(expression: str) -> list[Token] | None:
    """Split `expression` into tokens, or None if it contains anything that isn't arithmetic."""
    text = expression.lower().strip()
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return None
        position = match.end()
        if match["number"]:
            tokens.append(_parse_number(match["number"]))
        else:
            word = " ".join((match["word"] or match["symbol"]).split())
            tokens.append(_CANONICAL.get(word, word))
    return tokens


def _parse_number(digits: str) -> Fraction:
    # Built from integers rather than float so that 0.1 is exactly 1/10.
    whole, _, decimals = digits.partition(".")
    return Fraction(
        int(whole or "0") * 10 ** len(decimals) + int(decimals or "0"), 10 ** len(decimals)
    )


# --- arithmetic: parser and evaluation -------------------------------------------------

# Binary operators: precedence and right-associativity. Unary signs sit between
# * and ^ so that -2^2 = -(2^2) while 2 * -3 and 2^-1 still work.
_BINARY = {
    "+": (1, False),
    "-": (1, False),
    "*": (2, False),
    "/": (2, False),
    "%": (2, False),
    "^": (4, True),
}
_UNARY_PRECEDENCE = 3
_POSTFIX = {"squared": Fraction(2), "cubed": Fraction(3)}


class _Parser:
    """Precedence climbing over a token list, computing the value as it parses."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.position = 0
        self.depth = 0

    def parse(self) -> Fraction:
        value = self._expression(0)
        if self.position != len(self.tokens):
            raise _Refusal(NOT_A_CALCULATION)
        return value

    def _peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> Token | None:
        token = self._peek()
        self.position += 1
        return token

    def _expression(self, min_precedence: int) -> Fraction:
        # Every nesting (parenthesis, sign, right operand of ^) passes through here,
        # so counting here bounds the recursion.
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _Refusal(TOO_DEEP)
        value = self._operand()
        while isinstance(operator := self._peek(), str) and operator in _BINARY:
            precedence, right_associative = _BINARY[operator]
            if precedence < min_precedence:
                break
            self.position += 1
            right = self._expression(precedence if right_associative else precedence + 1)
            value = _apply(operator, value, right)
        self.depth -= 1
        return value

    def _operand(self) -> Fraction:
        item = self._take()
        if isinstance(item, Fraction):
            value = item
        elif item in ("+", "-"):
            value = self._expression(_UNARY_PRECEDENCE)
            value = -value if item == "-" else value
        elif item == "(":
            value = self._expression(0)
            if self._take() != ")":
                raise _Refusal(NOT_A_CALCULATION)
        else:
            raise _Refusal(NOT_A_CALCULATION)
        while isinstance(suffix := self._peek(), str) and suffix in _POSTFIX:
            self.position += 1
            value = _apply("^", value, _POSTFIX[suffix])
        return value


def _apply(operator: str, left: Fraction, right: Fraction) -> Fraction:
    if operator == "+":
        result = left + right
    elif operator == "-":
        result = left - right
    elif operator == "*":
        result = left * right
    elif operator == "/":
        if right == 0:
            raise _Refusal(DIVIDE_BY_ZERO)
        result = left / right
    elif operator == "%":
        if right == 0:
            raise _Refusal(MODULO_BY_ZERO)
        result = left % right
    else:
        result = _power(left, right)
    if result.numerator.bit_length() + result.denominator.bit_length() > MAX_BITS:
        raise _Refusal(TOO_BIG)
    return result


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    # Bases 0, 1 and -1 are answered directly: their results are tiny whatever the exponent.
    if base == 0:
        if exponent < 0:
            raise _Refusal(DIVIDE_BY_ZERO)
        return Fraction(1 if exponent == 0 else 0)
    if base == 1:
        return base
    if exponent.denominator == 1:
        if base == -1:
            return Fraction(-1 if exponent.numerator % 2 else 1)
        return _integer_power(base, exponent.numerator)
    if base < 0:
        raise _Refusal(NEGATIVE_ROOT)
    root = _exact_root(base, exponent.denominator)
    if root is not None:
        return _integer_power(root, exponent.numerator)
    return _float_power(base, exponent)


def _integer_power(base: Fraction, exponent: int) -> Fraction:
    # Estimate the size before computing it: |base| is not 0 or 1 here, so the
    # result has about |exponent| * log2(numerator * denominator) bits.
    # The first test keeps the float multiplication from overflowing.
    if abs(exponent) > MAX_BITS or abs(exponent) * _log2_size(base) > MAX_BITS:
        raise _Refusal(TOO_BIG)
    return base**exponent


def _log2_size(value: Fraction) -> float:
    return math.log2(abs(value.numerator)) + math.log2(value.denominator)


def _exact_root(value: Fraction, degree: int) -> Fraction | None:
    """The exact positive `degree`-th root of `value` > 0 if it is rational, else None."""
    if degree > MAX_ROOT_DEGREE:
        return None
    numerator = _integer_root(value.numerator, degree)
    denominator = _integer_root(value.denominator, degree)
    if numerator is None or denominator is None:
        return None
    return Fraction(numerator, denominator)


def _integer_root(number: int, degree: int) -> int | None:
    """The exact `degree`-th root of `number` >= 1, or None if it is not a perfect power."""
    # Integer Newton's method from above (floats would overflow for big numbers).
    root = 1 << -(-number.bit_length() // degree)
    while True:
        smaller = ((degree - 1) * root + number // root ** (degree - 1)) // degree
        if smaller >= root:
            break
        root = smaller
    return root if root**degree == number else None


def _float_power(base: Fraction, exponent: Fraction) -> Fraction:
    # An irrational result can only be approximated; a float is precise enough
    # for the digits shown, as long as the result lies well inside its range.
    if abs(exponent) > MAX_BITS:
        raise _Refusal(TOO_BIG)
    log2_result = float(exponent) * (math.log2(base.numerator) - math.log2(base.denominator))
    if abs(log2_result) > FLOAT_LOG2_LIMIT:
        raise _Refusal(TOO_BIG)
    return Fraction(2.0**log2_result)


# --- arithmetic: the reply ----------------------------------------------------------


def _calculate(text: str) -> str:
    prefix = _POLITE_PREFIX.match(text)
    expression = text[prefix.end() :] if prefix else text
    tokens = _tokenize(expression)
    if not tokens:
        return NOT_UNDERSTOOD
    try:
        value = _Parser(tokens).parse()
    except _Refusal as refusal:
        return str(refusal)
    exact = _exact_decimal(value)
    if exact is not None:
        return f"{expression.strip()} = {exact}"
    return f"{expression.strip()} ≈ {_rounded(value)}"


def _exact_decimal(value: Fraction) -> str | None:
    """`value` written out exactly, if it is a short enough terminating decimal."""
    # A terminating decimal with at most N places has a denominator dividing 10^N.
    if 10**MAX_EXACT_PLACES % value.denominator:
        return None
    places = next(p for p in range(MAX_EXACT_PLACES + 1) if 10**p % value.denominator == 0)
    scaled = abs(value.numerator) * 10**places // value.denominator
    # A cheap bound before str(): huge ints are slow to print (and Python
    # refuses past 4300 digits); a decimal digit takes under 4 bits.
    if scaled.bit_length() > 4 * MAX_PRINTED_DIGITS:
        return None
    digits = str(scaled)
    if len(digits) > MAX_PRINTED_DIGITS:
        return None
    if places:
        digits = digits.rjust(places + 1, "0")
        digits = f"{digits[:-places]}.{digits[-places:]}"
    return f"-{digits}" if value < 0 else digits


def _rounded(value: Fraction) -> str:
    """`value` rounded to SIGNIFICANT_DIGITS, in plain or scientific notation."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    exponent = _floor_log10(magnitude)
    scaled = magnitude * Fraction(10) ** (SIGNIFICANT_DIGITS - 1 - exponent)
    mantissa = math.floor(scaled + Fraction(1, 2))  # round half up
    if mantissa == 10**SIGNIFICANT_DIGITS:  # 9.9999999999 rounded up to 10.00000000
        mantissa //= 10
        exponent += 1
    digits = str(mantissa)
    if -7 < exponent < SIGNIFICANT_DIGITS:
        if exponent >= 0:
            whole, decimals = digits[: exponent + 1], digits[exponent + 1 :]
        else:
            whole, decimals = "0", "0" * (-exponent - 1) + digits
        text = f"{whole}.{decimals}".rstrip("0").rstrip(".")
    else:
        text = f"{digits[0]}.{digits[1:]}".rstrip("0").rstrip(".") + f" × 10^{exponent}"
    return f"-{text}" if value < 0 else text


def _floor_log10(value: Fraction) -> int:
    """floor(log10(value)) for value > 0, exact (the float estimate is only a start)."""
    exponent = math.floor(math.log10(value.numerator) - math.log10(value.denominator))
    while value < Fraction(10) ** exponent:
        exponent -= 1
    while value >= Fraction(10) ** (exponent + 1):
        exponent += 1
    return exponent
