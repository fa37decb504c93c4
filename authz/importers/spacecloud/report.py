"""What the import could not carry over exactly, and where Space Cloud behaved differently."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal, TextIO

# not-carried: left out or replaced; differs: Space Cloud decided differently (usually it failed
# open); rotate: a secret authz refuses; note: carried exactly, but worth knowing (exit code 0).
Kind = Literal["not-carried", "differs", "rotate", "note"]


class ImportStopped(Exception):
    """Input the import cannot read: exit 2, nothing written."""


@dataclass(frozen=True)
class Item:
    kind: Kind
    where: str  # the place in the Space Cloud input
    what: str  # what was found (and what Space Cloud did with it)
    now: str  # what authz does now, or what to do instead


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)

    def add(self, kind: Kind, where: str, what: str, now: str) -> None:
        self.items.append(Item(kind, where, what, now))

    @property
    def complete(self) -> bool:
        """Everything carried exactly (notes aside)."""
        return all(item.kind == "note" for item in self.items)

    def to_json(self, extra: dict[str, object]) -> str:
        return json.dumps({**extra, "items": [asdict(i) for i in self.items]}, indent=2) + "\n"

    def print_table(self, out: TextIO) -> None:
        if not self.items:
            print("import: everything was carried over", file=out)
            return
        for item in self.items:
            print(f"{item.kind:<11}  {item.where}\n{'':<13}{item.what}", file=out)
            print(f"{'':<13}-> {item.now}", file=out)
