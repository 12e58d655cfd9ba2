"""Declarative key tables: the whole renaming engine used by every checkpoint converter.

A table is a tuple of `Rule`s. Each checkpoint key is renamed by the *first* rule whose `src` pattern
matches it completely. Patterns use named slots: `{i}`, `{j}` match block indices, `{rest}` matches the
remaining dotted path. A key no rule matches is an error, and so are two keys that land on one name.

The engine renames *names only*: converters stream tensors one at a time, so a 13B checkpoint never has
to sit in memory twice. Tables are written in one direction; `invert(rules)` derives the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

_SLOT = {"i": r"\d+", "j": r"\d+", "k": r"\d+", "rest": r".+"}


@dataclass(frozen=True)
class Rule:
    """Rename keys matching `src` to `dst`. `dst=None` drops the key on purpose (say why beside the rule)."""

    src: str
    dst: str | None

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        parts = re.split(r"\{(\w+)\}", self.src)
        pattern = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{_SLOT[p]})" for n, p in enumerate(parts))
        return re.compile(pattern)

    def match(self, key: str) -> dict[str, str] | None:
        m = self._regex.fullmatch(key)
        return m.groupdict() if m else None


class KeyMapError(KeyError):
    """A key no rule covers, or two keys that map to the same name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def rename(keys: Iterable[str], rules: tuple[Rule, ...]) -> dict[str, str]:
    """Map each source key to its new name ({new: old}); dropped keys are left out.

    Raises `KeyMapError` listing the first few unknown keys (and how many there were), or naming a collision.
    """
    out: dict[str, str] = {}
    unknown: list[str] = []
    for key in keys:
        for rule in rules:
            slots = rule.match(key)
            if slots is not None:
                break
        else:
            unknown.append(key)
            continue
        if rule.dst is None:
            continue
        new = rule.dst.format(**slots)
        if new in out:
            raise KeyMapError(f"two checkpoint keys map to {new!r}: {out[new]!r} and {key!r}")
        out[new] = key
    if unknown:
        raise KeyMapError(f"{len(unknown)} checkpoint keys match no conversion rule, e.g. {unknown[:5]}")
    return out


def rules_used(keys: Iterable[str], rules: tuple[Rule, ...]) -> set[int]:
    """Indices of the rules that fire on `keys` (tests use this to find dead rules)."""
    used = set()
    for key in keys:
        for n, rule in enumerate(rules):
            if rule.match(key) is not None:
                used.add(n)
                break
    return used


def invert(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """The inverse table. Only pure renames invert; a rule that drops keys has no inverse and is skipped."""
    return tuple(Rule(r.dst, r.src) for r in rules if r.dst is not None)


def apply(sd: Mapping[str, object], rules: tuple[Rule, ...]) -> dict[str, object]:
    """Rename the keys of an in-memory state dict (the values are not copied)."""
    return {new: sd[old] for new, old in rename(sd.keys(), rules).items()}
