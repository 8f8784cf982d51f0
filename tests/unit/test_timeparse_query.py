"""Time expressions and query analysis: what a query names beyond its keywords."""

from __future__ import annotations

from datetime import UTC, datetime

from memorose.retrieval.query import analyze_query, is_dated, mentioned_names
from memorose.retrieval.timeparse import DAY, parse_time

REF = datetime(2024, 3, 20, 15, 0, tzinfo=UTC).timestamp()  # a Wednesday


def ts(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=UTC).timestamp()


def ranges(text: str) -> list[tuple[str, float, float, str]]:
    return [
        (text[t.span[0] : t.span[1]], t.range.start, t.range.end, t.range.precision)
        for t in parse_time(text, REF)
    ]


def test_absolute_days_in_several_orders() -> None:
    assert ranges("What did she show on October 13, 2023?") == [
        ("October 13, 2023", ts(2023, 10, 13), ts(2023, 10, 14), "day")
    ]
    assert ranges("found on 1 February, 2023") == [
        ("1 February, 2023", ts(2023, 2, 1), ts(2023, 2, 2), "day")
    ]
    assert ranges("on 2023-05-07") == [("2023-05-07", ts(2023, 5, 7), ts(2023, 5, 8), "day")]


def test_months_and_years() -> None:
    assert ranges("in May 2023") == [("May 2023", ts(2023, 5, 1), ts(2023, 6, 1), "month")]
    assert ranges("in December 2023") == [("December 2023", ts(2023, 12, 1), ts(2024, 1, 1), "month")]
    assert ranges("back in 2022") == [("in 2022", ts(2022, 1, 1), ts(2023, 1, 1), "year")]
    [(_, _, _, precision)] = ranges("camping in June")
    assert precision == "month-any-year"
    june = parse_time("camping in June", REF)[0].range
    assert june.contains(ts(2021, 6, 15)) and june.contains(ts(2023, 6, 1))
    assert not june.contains(ts(2023, 7, 1))


def test_anchored_relative_replaces_its_anchor() -> None:
    [(text, start, end, precision)] = ranges("the puppy she got two weeks before August 11, 2023?")
    assert text == "two weeks before August 11, 2023"
    assert precision == "relative"
    assert end == ts(2023, 8, 11)
    assert start < ts(2023, 7, 28)  # at least the two weeks before
    [(text, _, end, _)] = ranges("What did she do last weekend before April 10, 2023?")
    assert end == ts(2023, 4, 10)


def test_relative_expressions_use_the_reference_time() -> None:
    [(_, start, end, _)] = ranges("what did I do yesterday")
    assert (start, end) == (ts(2024, 3, 19), ts(2024, 3, 20))
    [(_, start, end, _)] = ranges("the talk last week")
    assert (start, end) == (ts(2024, 3, 11), ts(2024, 3, 18))  # the previous Monday-to-Monday
    [(_, start, end, _)] = ranges("since last month")
    assert (start, end) == (ts(2024, 2, 1), ts(2024, 3, 1))
    [(_, start, end, _)] = ranges("moved 4 years ago")
    assert start < ts(2020, 3, 20) < end


def test_the_verb_may_is_not_a_month() -> None:
    assert ranges("She may 2 go, or may not") == []
    assert ranges("what happened in may") != []  # with a preposition it is the month


def test_distance_is_zero_inside_and_grows_outside() -> None:
    day = parse_time("on 13 October 2023", REF)[0].range
    assert day.distance_days(ts(2023, 10, 13) + 3600) == 0
    assert day.distance_days(ts(2023, 10, 16)) == 2.0  # two days after the day ended
    assert day.distance_days(ts(2023, 10, 12)) == 1.0
    assert day.distance_days(ts(2023, 10, 12) + DAY / 2) == 0.5


def test_query_analysis_moves_dates_out_of_the_keywords() -> None:
    q = analyze_query("What painting did Melanie show to Caroline on October 13, 2023?", REF)
    assert q.terms == ["paint", "melani", "show", "carolin"]
    assert len(q.times) == 1 and q.times[0].precision == "day"
    assert q.names == ["melanie", "caroline"]
    assert not q.asks_when
    assert analyze_query("When did Caroline go to the support group?", REF).asks_when
    assert analyze_query("How long ago was Mel's birthday?", REF).asks_when
    # A query made only of a date still has keywords to search with.
    assert analyze_query("May 2023", REF).terms == ["may", "2023"]


def test_names_skip_question_words_and_possessives() -> None:
    assert mentioned_names("What did Jon's sister tell Gina?") == ["jon", "gina"]
    assert mentioned_names("when did it happen") == []


def test_dated_statements() -> None:
    assert is_dated("I went to a support group yesterday")
    assert is_dated("We moved here in 2019")
    assert not is_dated("I love painting sunsets")


def test_dated_by_tokens_answers_as_the_expression_does() -> None:
    # is_dated looks the tokens up instead of running _TIME_WORDS; every answer must be the
    # expression's, on the corpus the benchmarks use and on the edges of a word boundary.
    from benchmarks.corpus import generate
    from memorose.retrieval.query import _TIME_WORDS

    edges = [
        "LAST Monday we met",
        "in 2019, then 2020s and 20190 and x2019 and 1999!",
        "the 1899 fair, the 2100 plan",
        "last_week and next_year",  # '_' is a word character to \b
        "see you _tomorrow_",
        "Ago.",
        "week-end or weekend",
        "ſince then",  # folds to "since" under re.I
        "Treffen am Montag, 2021 in München",
        "yesterday's game",
        "pastmonth monthly yearly",
        "",
        "a" * 45 + " today",
    ]
    texts = edges + [r.content for r in generate(3000, seed=11)]
    for text in texts:
        assert is_dated.__wrapped__(text) == bool(_TIME_WORDS.search(text)), text
