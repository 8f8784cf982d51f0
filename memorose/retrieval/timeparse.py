"""Time expressions in queries: "on 13 October, 2023", "in May 2023", "in June", "last week",
"two weeks before August 11, 2023", "yesterday".

A query that names a time wants memories whose valid time falls in it. Each expression becomes
a ``TimeRange`` (epoch seconds, UTC, end exclusive) plus the character span it covered, so the
words of a date ("october", "13", "2023") can be kept out of the keyword query, where they only
match turns that happen to contain the same numbers. Relative expressions are resolved against a
reference time (the request's ``as_of`` if any, else now); a month with no year matches that
month in any year. Ranges are used as a soft boost, never as a filter: a memory is often stated
days after what it describes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAY = 86400.0

#: First three letters of a month name -> its number (English, whatever the locale).
MONTHS = {
    name: i
    for i, name in enumerate(
        ["", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
    if name
}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "few": 3}
UNITS = {"day": 1, "week": 7, "weekend": 7, "month": 30, "year": 365}

_MONTH = (
    r"(?P<month>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAYNUM = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("dmy", re.compile(rf"\b{_DAYNUM}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.I)),
    ("mdy", re.compile(rf"\b{_MONTH}\s+{_DAYNUM},?\s+{_YEAR}\b", re.I)),
    ("iso", re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<mnum>[01]\d)-(?P<day>[0-3]\d)\b")),
    ("my", re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.I)),
    ("dm", re.compile(rf"\b{_DAYNUM}\s+(?:of\s+)?{_MONTH}\b", re.I)),
    ("md", re.compile(rf"\b{_MONTH}\s+{_DAYNUM}\b(?!\s*(?:,?\s*(?:19|20)\d\d|:))", re.I)),
    ("m", re.compile(rf"\b(?:in|during|since|by|of|early|late|mid|last|this|next)\s+{_MONTH}\b", re.I)),
    ("y", re.compile(rf"\b(?:in|during|since|of|year)\s+{_YEAR}\b", re.I)),
]
_RELATIVE = re.compile(
    r"\b(?:(?P<count>\d+|a|an|one|two|three|four|five|six|few)\s+)?(?P<unit>day|week|weekend|month|year)s?"
    r"\s+(?P<dir>before|after|ago|prior\s+to)\b",
    re.I,
)
_SIMPLE_RELATIVE = re.compile(
    r"\b(?P<which>last|this|past|next)\s+(?P<unit>day|week|weekend|month|year)\b|\b(?P<word>yesterday|today|tomorrow|recently)\b",
    re.I,
)


@dataclass(frozen=True)
class TimeRange:
    start: float
    end: float
    #: "day", "month", "year", "relative" or "month-any-year" (month of every year).
    precision: str
    month: int = 0

    def contains(self, ts: float) -> bool:
        if self.precision == "month-any-year":
            return datetime.fromtimestamp(ts, UTC).month == self.month
        return self.start <= ts < self.end

    def distance_days(self, ts: float) -> float:
        """0 inside the range, else days to its nearest edge."""
        if self.contains(ts):
            return 0.0
        if self.precision == "month-any-year":
            return 30.0
        return (self.start - ts) / DAY if ts < self.start else (ts - self.end) / DAY


@dataclass(frozen=True)
class TimeMatch:
    range: TimeRange
    span: tuple[int, int]


def _ts(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, tzinfo=UTC).timestamp()


def _month_range(year: int, month: int) -> tuple[float, float]:
    end = _ts(year + 1, 1, 1) if month == 12 else _ts(year, month + 1, 1)
    return _ts(year, month, 1), end


def _absolute(kind: str, m: re.Match[str]) -> TimeRange | None:
    groups = m.groupdict()
    month = int(groups["mnum"]) if groups.get("mnum") else MONTHS.get((groups.get("month") or "").lower()[:3])
    year = int(groups["year"]) if groups.get("year") else None
    try:
        if kind in ("dmy", "mdy", "iso") and month and year:
            start = _ts(year, month, int(groups["day"]))
            return TimeRange(start, start + DAY, "day")
        if kind == "my" and month and year:
            return TimeRange(*_month_range(year, month), "month")
        if kind in ("dm", "md", "m") and month:
            return TimeRange(0.0, 0.0, "month-any-year", month)
        if kind == "y" and year:
            return TimeRange(_ts(year, 1, 1), _ts(year + 1, 1, 1), "year")
    except ValueError:  # 31 February and friends
        return None
    return None


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in taken)


def parse_time(text: str, reference: float) -> list[TimeMatch]:
    """Every time expression in ``text``, longest patterns first, without overlaps."""
    found: list[TimeMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            span = m.span()
            if _overlaps(span, taken) or (m.groupdict().get("month") == "may" and kind in ("dm", "md")):
                continue  # lowercase "may" with no year is the verb far more often than the month
            rng = _absolute(kind, m)
            if rng is not None:
                found.append(TimeMatch(rng, span))
                taken.append(span)
    anchored = _anchored_relative(text, found, taken)
    # "two weeks before <date>" replaces <date>: the date is only its anchor.
    found = [t for t in found if not any(a.span[0] <= t.span[0] and t.span[1] <= a.span[1] for a in anchored)]
    found.extend(anchored)
    found.extend(_simple_relative(text, reference, taken))
    return sorted(found, key=lambda t: t.span)


def _anchored_relative(text: str, found: list[TimeMatch], taken: list[tuple[int, int]]) -> list[TimeMatch]:
    """'two weeks before <date>' / '3 days ago' (ago is handled with the reference elsewhere)."""
    out = []
    for m in _RELATIVE.finditer(text):
        direction = m.group("dir").lower()
        anchor = next((t for t in found if t.span[0] >= m.end() and t.span[0] - m.end() <= 2), None)
        if direction == "ago" or anchor is None or _overlaps(m.span(), taken):
            continue
        days = _amount(m.group("count")) * UNITS[m.group("unit").lower()]
        base = anchor.range.start
        # "before" the anchor: the stretch of that length ending at the anchor (and vice versa).
        if direction == "after":
            rng = TimeRange(anchor.range.end, anchor.range.end + days * DAY * 1.5, "relative")
        else:
            rng = TimeRange(base - days * DAY * 1.5, base, "relative")
        out.append(TimeMatch(rng, (m.start(), anchor.span[1])))
        taken.append(m.span())
    return out


def _amount(count: str | None) -> int:
    if not count:
        return 1
    return int(count) if count.isdigit() else NUMBERS.get(count.lower(), 1)


def _simple_relative(text: str, reference: float, taken: list[tuple[int, int]]) -> list[TimeMatch]:
    """'last week', 'yesterday', '3 days ago': resolved against the reference time."""
    out = []
    ref = datetime.fromtimestamp(reference, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = ref.timestamp()
    for m in _SIMPLE_RELATIVE.finditer(text):
        if _overlaps(m.span(), taken):
            continue
        word = (m.group("word") or "").lower()
        if word:
            offset = {"yesterday": -1, "today": 0, "tomorrow": 1}.get(word)
            if offset is None:  # "recently": the last two weeks
                rng = TimeRange(today - 14 * DAY, today + DAY, "relative")
            else:
                rng = TimeRange(today + offset * DAY, today + (offset + 1) * DAY, "day")
        else:
            rng = _last_unit(ref, m.group("which").lower(), m.group("unit").lower())
        out.append(TimeMatch(rng, m.span()))
    for m in _RELATIVE.finditer(text):
        if m.group("dir").lower() == "ago" and not _overlaps(m.span(), taken):
            days = _amount(m.group("count")) * UNITS[m.group("unit").lower()]
            centre = today - days * DAY
            slack = max(1.0, days * 0.25) * DAY
            out.append(TimeMatch(TimeRange(centre - slack, centre + slack + DAY, "relative"), m.span()))
    return out


def _last_unit(ref: datetime, which: str, unit: str) -> TimeRange:
    """'last week' = the previous calendar week, 'this month' = the current one, etc."""
    step = {"last": -1, "past": -1, "this": 0, "next": 1}[which]
    if unit == "year":
        year = ref.year + step
        return TimeRange(_ts(year, 1, 1), _ts(year + 1, 1, 1), "year")
    if unit == "month":
        month_index = ref.year * 12 + ref.month - 1 + step
        year, month = divmod(month_index, 12)
        return TimeRange(*_month_range(year, month + 1), "month")
    if unit in ("week", "weekend"):
        monday = ref - timedelta(days=ref.weekday()) + timedelta(weeks=step)
        start = monday.timestamp()
        return TimeRange(start, start + 7 * DAY, "relative")
    start = (ref + timedelta(days=step)).timestamp()
    return TimeRange(start, start + DAY, "day")
