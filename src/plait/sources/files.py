"""The configuration directory: YAML files that hold the mesh's Istio config (``--config-dir``).

The store keeps the last good set of Resources. Edits made by hand are picked up
by `poll()`; if the directory no longer validates, the previous configuration stays
in force and the problems are kept for the user to see. `apply` and `delete`
validate the whole resulting configuration first, then write every file, so a
rejected request changes nothing. Objects written by the store live in
``<dir>/<namespace>/<kind>-<name>.yaml``; an object that a user's file holds is
rewritten in place (other documents of that file are kept).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from plait.api.checks import check_references
from plait.api.errors import Problem
from plait.api.kubeyaml import load_documents
from plait.api.loader import LoadResult, load_paths, yaml_files
from plait.api.resources import Resource, Source

Key = tuple[str, str, str]
SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass
class Change:
    """What an apply/delete/reload did: keys created, updated, deleted (or the problems that stopped it)."""

    created: list[Key] = field(default_factory=list)
    updated: list[Key] = field(default_factory=list)
    deleted: list[Key] = field(default_factory=list)
    unchanged: list[Key] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def keys(self) -> set[Key]:
        return set(self.created) | set(self.updated) | set(self.deleted)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def diff(old: dict[Key, Resource], new: dict[Key, Resource]) -> Change:
    change = Change()
    for key, resource in new.items():
        if key not in old:
            change.created.append(key)
        elif old[key] != resource:
            change.updated.append(key)
        else:
            change.unchanged.append(key)
    change.deleted = [key for key in old if key not in new]
    return change


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".plait-", suffix=".tmp", delete=False) as f:
        f.write(text)
        temp = f.name
    os.replace(temp, path)


def _dump(documents: list[dict]) -> str:
    return yaml.dump_all(documents, Dumper=SafeDumper, sort_keys=False)


class FileStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.resources: dict[Key, Resource] = {}
        self.problems: list[Problem] = []  # why the directory's current contents are not in force
        self._stamp: tuple = ()

    # ------------------------------------------------------------ reading

    def _fingerprint(self) -> tuple:
        files = yaml_files(self.directory) if self.directory.exists() else []
        return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)

    def load(self) -> Change:
        """Read the directory; keep the previous configuration if it has errors."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stamp = self._fingerprint()
        result: LoadResult = load_paths([self.directory])
        if result.errors:
            self.problems = result.problems
            return Change(problems=result.problems)
        new = {r.key: r for r in result.resources}
        change = diff(self.resources, new)
        change.problems = result.warnings
        self.resources, self.problems = new, result.warnings
        return change

    def poll(self) -> Change | None:
        """Reload if any file changed since the last look; None when nothing did."""
        if self._fingerprint() == self._stamp:
            return None
        return self.load()

    # ------------------------------------------------------------ writing

    def _candidate(self, upserts: list[Resource], deletes: list[Key]) -> tuple[dict[Key, Resource], list[Problem]]:
        """The configuration after the change, and its problems: every error, and the warnings
        about the objects being changed (a dangling reference elsewhere is old news)."""
        candidate = dict(self.resources)
        for key in deletes:
            candidate.pop(key, None)
        for r in upserts:
            candidate[r.key] = r
        touched = {(r.kind, r.namespace, r.name) for r in upserts}
        problems = [
            p
            for p in check_references(list(candidate.values()))
            if p.severity == "error" or (p.kind, p.namespace, p.name) in touched
        ]
        return candidate, problems

    def apply(self, resources: list[Resource], *, dry_run: bool = False) -> Change:
        """Create or update objects: all of them, or (on any error) none."""
        keys = [r.key for r in resources]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            return Change(
                problems=[Problem(message=f"{k[0]} {k[1]}/{k[2]} appears twice in the input") for k in repeated]
            )
        candidate, problems = self._candidate(resources, [])
        change = diff({k: v for k, v in self.resources.items() if k in keys}, {k: candidate[k] for k in keys})
        change.problems = problems
        if change.ok and not dry_run:
            self._persist(upserts=[r for r in resources if r.key in change.keys], deletes=[])
        return change

    def delete(self, keys: list[Key], *, dry_run: bool = False) -> Change:
        missing = [k for k in keys if k not in self.resources]
        if missing:
            return Change(
                problems=[
                    Problem(
                        message="not found in the mesh's configuration",
                        file="delete request",
                        kind=k[0],
                        namespace=k[1],
                        name=k[2],
                    )
                    for k in missing
                ]
            )
        _, problems = self._candidate([], keys)
        change = Change(deleted=list(keys), problems=problems)
        if change.ok and not dry_run:
            self._persist(upserts=[], deletes=keys)
        return change

    def _own_path(self, r: Resource) -> Path:
        return self.directory / r.namespace / f"{r.kind.lower()}-{r.name}.yaml"

    def _persist(self, upserts: list[Resource], deletes: list[Key]) -> None:
        """Write the changed objects (in place in the file that holds them, else in the store's own
        file); only the files concerned are read and written."""
        by_file: dict[Path, dict[Key, dict | None]] = {}
        for key in deletes:
            by_file.setdefault(Path(self.resources[key].source.file), {})[key] = None
        placed = {}
        for r in upserts:
            current = self.resources.get(r.key)
            path = Path(current.source.file) if current else self._own_path(r)
            by_file.setdefault(path, {})[r.key] = r.to_dict()
            placed[r.key] = dataclasses.replace(r, source=Source(file=str(path)))
        for path, edits in by_file.items():
            self._rewrite(path, edits)
        self._stamp = self._fingerprint()
        # Only what was written changes: an input equal to a stored object keeps the stored one
        # (whose source is the directory's file, never the file the input came from).
        self.resources = {k: v for k, v in self.resources.items() if k not in deletes} | placed

    def _rewrite(self, path: Path, edits: dict[Key, dict | None]) -> None:
        """Replace, remove or append documents in one file; every other document is kept as written
        (comments included) and only the documents that may be edited are parsed."""
        chunks = _DOCUMENT_SEPARATOR.split(path.read_text()) if path.exists() else []
        kept, seen = [], set()
        for chunk in chunks:
            key = _edited_key(chunk, edits)
            if key is None:
                kept.append(chunk if chunk.endswith("\n") else chunk + "\n")
                continue
            seen.add(key)
            if edits[key] is not None:
                kept.append(_dump([edits[key]]))
        kept += [_dump([doc]) for key, doc in edits.items() if key not in seen and doc is not None]
        kept = [chunk for chunk in kept if chunk.strip()]
        if kept:
            _write_atomically(path, "---\n".join(kept))
        elif path.exists():
            path.unlink()


_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?\n", re.M)


def _edited_key(chunk: str, edits: dict[Key, dict | None]) -> Key | None:
    """The key of the object this YAML document defines, if it is one being edited."""
    if not any(key[2] in chunk for key in edits):
        return None
    try:
        docs = load_documents(chunk)
        doc = docs[0] if len(docs) == 1 else None
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    meta = doc.get("metadata") or {}
    key = (doc.get("kind"), meta.get("namespace") or "default", meta.get("name"))
    return key if key in edits else None
