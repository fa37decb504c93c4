"""Read Space Cloud configuration in either form its users have:

- `space-cli get all` output: YAML documents `{api, type, meta, spec}` (one file or a
  directory of them); the types read here are `project`, `db-config` and `remote-services`;
- the gateway's own config file: `{projects: {<id>: {projectConfig, dbConfigs,
  remoteServices, ...}}}` (keys of `dbConfigs`/`remoteServices` are resource ids; the alias or
  service id is in the entry, or is the key's last `--` part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.importers.spacecloud.report import ImportStopped

# `space-cli get all` types that hold nothing for remote services: reported, not carried.
OTHER_TYPES = {
    "secret", "db-rules", "db-schema", "db-prepared-query", "filestore-config",
    "filestore-configs", "filestore-rule", "eventing-config", "eventing-configs",
    "eventing-triggers", "eventing-rule", "eventing-schema", "service", "service-route",
    "ingress-global", "ingress-routes", "ingress-route", "auth-providers", "letsencrypt",
}  # fmt: skip
READ_TYPES = {"project", "db-config", "remote-services"}
# Sections of a gateway-config project that hold nothing for remote services.
OTHER_SECTIONS = (
    "dbRules", "dbPreparedQuery", "eventingRules", "eventingTriggers", "fileStoreRules",
    "ingressRoutes", "ingressRoute", "auths",
)  # fmt: skip


@dataclass
class Project:
    id: str
    config: dict[str, Any] = field(default_factory=dict)  # ProjectConfig
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)  # alias -> DatabaseConfig
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> Service
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, what) not read
    origin: dict[str, str] = field(default_factory=dict)  # "service:<id>" -> where it came from


def read_projects(paths: list[str]) -> dict[str, Project]:
    """Every project found in the files (directories: their *.yaml, *.yml, *.json)."""
    projects: dict[str, Project] = {}
    for path in _expand(paths):
        for i, doc in enumerate(_documents(path)):
            where = f"{path}" if i == 0 else f"{path}#{i}"
            if doc is None:
                continue  # `---` at the end of every `get all` file
            if not isinstance(doc, dict):
                raise ImportStopped(f"{where}: not a Space Cloud document (expected a mapping)")
            if "projects" in doc:
                _read_gateway(doc, where, projects)
            elif ("type" in doc and "spec" in doc) or "api" in doc:
                _read_spec_object(doc, where, projects)
            else:
                raise ImportStopped(
                    f"{where}: neither a `space-cli get all` document ({{api, type, meta, spec}})"
                    " nor a gateway config ({projects: ...})"
                )
    if not projects:
        raise ImportStopped("no Space Cloud project found in the input")
    return projects


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
            if not found:
                raise ImportStopped(f"{p}: no .yaml, .yml or .json files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ImportStopped(f"{p}: no such file or directory")
    return out


def _documents(path: Path) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ImportStopped(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ImportStopped(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ImportStopped(f"{path}: not valid YAML or JSON{at}") from None


def _project(projects: dict[str, Project], pid: Any, where: str) -> Project:
    if not isinstance(pid, str) or not pid:
        raise ImportStopped(f"{where}: missing project id")
    return projects.setdefault(pid, Project(pid))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportStopped(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _read_spec_object(doc: dict[str, Any], where: str, projects: dict[str, Project]) -> None:
    kind = doc.get("type")
    meta = _mapping(doc.get("meta"), f"{where}.meta")
    spec = doc.get("spec")
    if kind in OTHER_TYPES:
        project = _project(projects, meta.get("project"), f"{where}.meta.project")
        project.skipped.append((where, f"a `{kind}` document"))
        return
    if kind not in READ_TYPES:
        raise ImportStopped(
            f"{where}: unknown type {kind!r} (expected one of {', '.join(sorted(READ_TYPES))})"
        )
    spec = _mapping(spec, f"{where}.spec")
    if kind == "project":
        project = _project(projects, meta.get("project") or spec.get("id"), f"{where}.meta")
        project.config = spec
    elif kind == "db-config":
        project = _project(projects, meta.get("project"), f"{where}.meta.project")
        alias = meta.get("dbAlias")
        if not isinstance(alias, str) or not alias:
            raise ImportStopped(f"{where}.meta.dbAlias: missing")
        project.databases[alias] = spec
    else:
        project = _project(projects, meta.get("project"), f"{where}.meta.project")
        sid = meta.get("id")
        if not isinstance(sid, str) or not sid:
            raise ImportStopped(f"{where}.meta.id: missing service id")
        project.services[sid] = spec
        project.origin[f"service:{sid}"] = f"{where}: remote-services {sid}"


def _read_gateway(doc: dict[str, Any], where: str, projects: dict[str, Project]) -> None:
    for pid, body in _mapping(doc.get("projects"), f"{where}.projects").items():
        at = f"{where}: projects.{pid}"
        body = _mapping(body, at)
        project = _project(projects, pid, at)
        project.config = _mapping(body.get("projectConfig"), f"{at}.projectConfig")
        for key, db in _mapping(body.get("dbConfigs"), f"{at}.dbConfigs").items():
            db = _mapping(db, f"{at}.dbConfigs.{key}")
            project.databases[db.get("dbAlias") or str(key).split("--")[-1]] = db
        for key, svc in _mapping(body.get("remoteServices"), f"{at}.remoteServices").items():
            svc = _mapping(svc, f"{at}.remoteServices.{key}")
            sid = svc.get("id") or str(key).split("--")[-1]
            project.services[sid] = svc
            project.origin[f"service:{sid}"] = f"{at}.remoteServices.{key}"
        for section in OTHER_SECTIONS:
            if body.get(section):
                project.skipped.append((f"{at}.{section}", f"`{section}`"))
