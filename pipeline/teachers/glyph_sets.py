"""Many-class glyph sets: 214 visually distinct characters of six scripts, split into disjoint class sets.

:data:`POOL` holds Latin capitals, the Latin small letters that are not a capital's shape at another size,
digits, Greek, Cyrillic, Armenian and Georgian letters and symbols that every DejaVu face on this
machine draws (Sans, Serif, Mono; condensed, bold, oblique, light). Look-alikes across scripts and cases
were removed by rendering every candidate in four faces and comparing the masks, as drawn and
scale-normalised to their bounding boxes: the Latin/Greek/Cyrillic twins (``A``/``Α``/``А``,
``O``/``Ο``/``О``/``Օ``), small letters that are their capital reduced (``c``, ``o``, ``s``, ``u``,
``v``, ``w``, ``x``, ``z``, ``ж``, ``д``, ``л``), ``l``/``I``/``1``/``І``, ``0``/``O``, ``З``/``3``,
``Ѕ``/``S``, ``Ј``/``J``, ``Ս``/``U``, ``У``/``y``, ``Λ``/``A``, ``Լ``/``L``, ``Ց``/``Յ``, ``þ``/``p``
(:data:`EXCLUDED`). What remains differs in shape detail (``Ш``/``Щ``, ``И``/``Й``, ``E``/``Ё``,
``O``/``Q``/``Θ``/``Ø``, ``h``/``ħ``), which is the point: the teacher must learn it.

:func:`glyph_set` deals the pool in a fixed shuffled order (so each set mixes scripts): set ``a`` is its
first 100 characters, set ``b`` the next 100 (disjoint from ``a``), and ``a[:k]`` the ``k``-class
subsets of ``a``.
"""

from __future__ import annotations

import functools
import random

POOL: str = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "abdefghijkmnpqrty"
    "23456789"
    "ΓΔΘΞΠΣΦΨΩ"
    "αβδεζηλμξσςτω"
    "БДЁЖИЙЛЦЧШЩЪЫЬЭЮЯбф"
    "ЉЊЂЋЏЄЇ"
    "&@#%$?!+=<>*§¶∇≠±÷∀∃¬←→↑↓©®€£¥¢ßæÆœŒøØÞðŁħŋ¿¡‰†‡"
    "ԱԲԳԴԵԶԷԸԹԺԻԽԾԿՀՁՂՃՄՅՆՇՈՉՊՋՌՎՏՐՒՓՔՖ"
    "აბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰ"
)
EXCLUDED: str = "cosuvwxzlЗ01ΛЅЈІОՕՍУжлдԼՑþ"  # look-alikes of a POOL character (see the module docs)
SET_SIZE = 100
_SHUFFLE_SEED = 28  # the pool's dealing order; fixed forever (changing it changes every many-class teacher)


@functools.lru_cache(maxsize=1)
def _dealt() -> tuple[str, ...]:
    order = list(POOL)
    random.Random(_SHUFFLE_SEED).shuffle(order)
    return tuple(order)


def glyph_set(which: str, classes: int) -> tuple[str, ...]:
    """The first ``classes`` characters of set ``which`` (``"a"`` or ``"b"``, disjoint, 100 each)."""
    sets = {"a": 0, "b": 1}
    if which not in sets:
        raise ValueError(f"glyph set: expected 'a' or 'b', got {which!r}")
    if not 1 <= classes <= SET_SIZE:
        raise ValueError(f"classes: must be in [1, {SET_SIZE}], got {classes}")
    start = sets[which] * SET_SIZE
    return _dealt()[start : start + classes]
