"""A deterministic synthetic corpus: varied short memories (people, places, numbers, dates)
and the short questions a user would ask about them.

Each record comes from a template with slots; its queries reuse the record's own slot
values, so a query is "realistic" (short, drawn from the ingested vocabulary) and has a
known answer: the event it was drawn from (used as a sanity hit rate, not a quality claim).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def _words(text: str) -> list[str]:
    return text.split()


_FIRST = _words(
    "Alice Bruno Chiara Dmitri Elena Farid Greta Hiro Ines Jonas Kavya Liam Mei Nadia Omar "
    "Priya Quentin Rosa Sven Tariq Uma Viktor Wen Ximena Yusuf Zara Amara Bastian Camila "
    "Dario Esme Felix Ganesh Helga Ivan Jasmin Kenji Lucia Mateo Noor Olga Pavel Rania Soren "
    "Thea Ugo Valeria Wanda"
)
_SYLLABLES = _words("ka ro mi ten bel sa vor lin dru pe ha zu mo rek al fi gan tor is ne")
_PLACES = _words(
    "Lisbon Porto Kyoto Osaka Nairobi Lagos Quito Lima Oslo Bergen Tallinn Riga Vilnius "
    "Krakow Gdansk Seville Valencia Bilbao Lyon Nantes Ghent Utrecht Leipzig Dresden Graz "
    "Salzburg Turin Bologna Naples Palermo Izmir Tbilisi Yerevan Almaty Hanoi Manila Cebu "
    "Perth Hobart Dunedin Halifax Quebec Denver Austin Tucson Boise Memphis Savannah Cusco "
    "Medellin Recife Montevideo Valparaiso"
)
_JOBS = _words("nurse architect baker pilot teacher welder chemist lawyer editor plumber curator surveyor")
_ITEMS = _words("bicycle laptop kettle sofa camera telescope guitar lamp backpack drone piano tent")
_SHOPS = _words("market bazaar outlet boutique warehouse pharmacy bookstore hardware-store")
_RELATIONS = _words("sister brother cousin neighbour colleague aunt uncle grandmother roommate")
_PETS = _words("dog cat parrot rabbit tortoise hamster ferret goldfish")
_PROJECTS = _words("Atlas Borealis Cobalt Delta Ember Falcon Granite Harbor Iris Juniper Kestrel Lumen")
_FOODS = _words("sushi lasagne falafel ramen tacos paella curry pierogi dumplings risotto ceviche goulash")
_ALLERGENS = _words("peanuts shellfish gluten lactose pollen penicillin sesame soy")
_DOCUMENTS = _words("passport visa licence insurance lease permit membership")
_WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_MONTHS = _words("January February March April May June July August September October November December")
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_LANDMARKS = ("lake", "old harbour", "botanical garden", "stadium", "river park", "castle")

# (memory template, query templates). Slots: see _slots().
_TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "{name} moved to {place} on {date} and started working as {a_job}.",
        ("when did {first} move to {place}", "{name} job in {place}", "who works as {a_job} in {place}"),
    ),
    (
        "On {date} {name} paid {amount} dollars for a {item} at the {shop} in {place}.",
        ("how much did {first} pay for the {item}", "{first} {item} {shop}", "what did {name} buy"),
    ),
    (
        "{name}'s {relation} {other} has a {pet} called {petname} that is {n} years old.",
        ("what is the name of {other}'s {pet}", "{petname} the {pet}", "how old is {petname}"),
    ),
    (
        "The {project} project meeting with {name} was moved to {weekday} at {hour}:{minute}.",
        ("when is the {project} meeting", "{project} meeting {first}", "meeting on {weekday} with {first}"),
    ),
    (
        "{name} ran {n} kilometres around {landmark} in {place} in {minutes} minutes on {date}.",
        ("how far did {first} run", "{first} running {place}", "run around {landmark} in {minutes} minutes"),
    ),
    (
        "Flight {code} from {place} to {place2} departs on {date} at {hour}:{minute} with {name} aboard.",
        ("flight {code}", "when does {first} fly to {place2}", "flight from {place} to {place2}"),
    ),
    (
        "{name} prefers {food} over {food2} and is allergic to {allergen}.",
        ("what is {first} allergic to", "{first} favourite food", "who is allergic to {allergen}"),
    ),
    (
        "Reminder: {name} must renew the {document} before {date}, reference number {ref}.",
        ("when does {first}'s {document} expire", "{document} reference {ref}", "{name} {document} renewal"),
    ),
)


@dataclass(frozen=True)
class Record:
    event_id: str
    stream_id: str
    content: str
    queries: tuple[str, ...]


def _surname(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _slots(rng: random.Random) -> dict[str, object]:
    first = rng.choice(_FIRST)
    place, place2 = rng.sample(_PLACES, 2)
    food, food2 = rng.sample(_FOODS, 2)
    job = rng.choice(_JOBS)
    return {
        "first": first,
        "name": f"{first} {_surname(rng)}",
        "other": f"{rng.choice(_FIRST)} {_surname(rng)}",
        "place": place,
        "place2": place2,
        "date": f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(2015, 2026)}",
        "job": job,
        "a_job": ("an " if job[0] in "aeiou" else "a ") + job,
        "amount": rng.randint(5, 4000),
        "item": rng.choice(_ITEMS),
        "shop": rng.choice(_SHOPS),
        "relation": rng.choice(_RELATIONS),
        "pet": rng.choice(_PETS),
        "petname": _surname(rng),
        "n": rng.randint(2, 42),
        "project": rng.choice(_PROJECTS),
        "weekday": rng.choice(_WEEKDAYS),
        "hour": rng.randint(7, 20),
        "minute": f"{rng.choice((0, 15, 30, 45)):02d}",
        "landmark": "the " + rng.choice(_LANDMARKS),
        "minutes": rng.randint(18, 240),
        "code": "".join(rng.choices(_LETTERS, k=2)) + str(rng.randint(100, 9999)),
        "food": food,
        "food2": food2,
        "allergen": rng.choice(_ALLERGENS),
        "document": rng.choice(_DOCUMENTS),
        "ref": f"{rng.randint(0, 999_999):06d}",
    }


def generate(count: int, seed: int, id_prefix: str = "ev") -> list[Record]:
    """``count`` records, the same for the same seed; event ids ``<prefix>-<n>``."""
    rng = random.Random(seed)
    out: list[Record] = []
    for n in range(count):
        memory, queries = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
        slots = _slots(rng)
        out.append(
            Record(
                event_id=f"{id_prefix}-{n}",
                stream_id=f"s{rng.randrange(4)}",
                content=memory.format(**slots),
                queries=tuple(q.format(**slots) for q in queries),
            )
        )
    return out


def sample_queries(records: list[Record], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (query, event id it was drawn from) pairs."""
    rng = random.Random(seed)
    picks = [records[rng.randrange(len(records))] for _ in range(count)] if records else []
    return [(rng.choice(r.queries), r.event_id) for r in picks]
