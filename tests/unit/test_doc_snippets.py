"""Every YAML block of README.md and docs/*.md is marked with what it is (docs/DEVELOPING.md,
"Config snippets in the docs"), and every authz config snippet among them validates, or is
refused when it is marked as a deliberately invalid example."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- check: (config|excerpt|rule|none)( invalid)?(?: \(([^)]*)\))? -->")
KEY = base64.b64encode(b"docs-snippet-key-0123456789abcde").decode()  # 32 bytes: any key
BASE: dict[str, Any] = {
    "project": "docs",
    "auth": {"secrets": [{"kid": "main", "alg": "HS256", "secret": KEY, "primary": True}]},
    "crypto": {"keys": [{"id": "k1", "key": KEY}]},
    "databases": {"main": {"type": "sqlite", "path": "app.db"}},
}


@dataclass
class Snippet:
    where: str
    kind: str | None  # config | excerpt | rule | none; None: not marked
    invalid: bool
    text: str


def snippets() -> Iterator[Snippet]:
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "```yaml":
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            m = MARK.search(before)
            yield Snippet(
                f"{doc.relative_to(ROOT)}:{i + 1}",
                m.group(1) if m else None,
                bool(m and m.group(2)),
                "\n".join(lines[i + 1 : end]),
            )


SNIPPETS = list(snippets())
CHECKED = [s for s in SNIPPETS if s.kind not in (None, "none")]


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra


def config_of(s: Snippet) -> dict[str, Any]:
    """The whole config the snippet stands for."""
    raw = yaml.safe_load(s.text)
    if s.kind == "config":
        return raw
    if s.kind == "excerpt":
        return _merge(BASE, raw)
    rule = raw["rule"] if isinstance(raw.get("rule"), dict) else raw
    endpoint = {"method": "GET", "path": "/v1/things/{id}", "rule": rule}
    return _merge(BASE, {"services": {"docs": {"endpoints": {"example": endpoint}}}})


def _env(text: str) -> dict[str, str]:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    return {n: "postgresql://127.0.0.1/app" if n.endswith("DSN") else KEY for n in names}


def test_every_yaml_block_says_what_it_is():
    unmarked = [s.where for s in SNIPPETS if s.kind is None]
    assert not unmarked, f"mark these YAML blocks (docs/DEVELOPING.md): {unmarked}"
    assert len(CHECKED) >= 15  # the docs hold many snippets; none may slip out of the check


@pytest.mark.parametrize("snippet", CHECKED, ids=[s.where for s in CHECKED])
def test_config_snippet(snippet: Snippet, tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_of(snippet)))
    report = validate_file(path, env=_env(snippet.text))
    if snippet.invalid:
        assert report.problems, f"{snippet.where} is marked invalid but validates"
    else:
        assert not report.problems, f"{snippet.where}: {report.problems}"


def test_the_check_refuses_a_broken_snippet(tmp_path: Path):
    broken = Snippet("x", "rule", False, "{rule: match, type: string, eval: '=>', f1: a, f2: b}")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_of(broken)))
    assert validate_file(path, env={}).problems


def test_no_file_refers_to_documents_outside_the_repository():
    """The repository stands alone: its docs and code cite its own documents only."""
    import subprocess

    outside = [n + s for n in ("RULES", "DESIGN") for s in (".md", " §")] + ["../" + "shared/"]
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{name.decode()}: {o}" for o in outside if o.encode() in data]
    assert not found, found
