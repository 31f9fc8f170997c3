"""In-memory schema store behind the embedded registry: Confluent's id and version semantics.

- A schema's identity is its JSON with insignificant differences removed (whitespace, key order).
  Not Avro's Parsing Canonical Form: that drops ``logicalType``, ``default``, ``doc`` and
  ``aliases``, so ``decimal(18,2)`` and ``decimal(18,6)`` (or plain ``bytes``) would share one id.
- Ids are global: the same schema under two subjects has one id; versions count per subject from 1.
- Registering a schema the subject already has returns its id and adds no version (idempotent).
- A new schema must be compatible with the subject's earlier versions under the subject's level
  (default FULL_TRANSITIVE), else ``IncompatibleSchemaError``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.registry.compat import CompatibilityLevel, InvalidSchemaError, check_compatibility, parse
from services.avro import AvroError, load_schemas, topic_value_schemas, validate_schema, value_subject

__all__ = [
    "DEFAULT_LEVEL",
    "IncompatibleSchemaError",
    "InvalidSchemaError",
    "SchemaStore",
    "StoreError",
    "Version",
    "identity",
    "preload",
]

DEFAULT_LEVEL = CompatibilityLevel.FULL_TRANSITIVE


class StoreError(Exception):
    """An error with Confluent's HTTP status and error_code."""

    status = 500
    error_code = 50001

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SubjectNotFoundError(StoreError):
    status, error_code = 404, 40401


class VersionNotFoundError(StoreError):
    status, error_code = 404, 40402


class SchemaNotFoundError(StoreError):
    status, error_code = 404, 40403


class IncompatibleSchemaError(StoreError):
    status, error_code = 409, 409


class InvalidSchemaStoreError(StoreError):
    status, error_code = 422, 42201


class InvalidVersionError(StoreError):
    status, error_code = 422, 42202


class InvalidCompatibilityLevelError(StoreError):
    status, error_code = 422, 42203


def identity(schema_str: str) -> str:
    """The key two registrations of 'the same schema' share: compact JSON with sorted keys."""
    try:
        return json.dumps(json.loads(schema_str), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, TypeError) as exc:
        raise InvalidSchemaStoreError(f"Invalid schema: not JSON ({exc})") from exc


def _compact(schema_str: str) -> str:
    return json.dumps(json.loads(schema_str), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Version:
    subject: str
    version: int
    id: int
    schema: str

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema}


@dataclass
class SchemaStore:
    default_level: CompatibilityLevel = DEFAULT_LEVEL
    strict_enums: bool = True
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _by_id: dict[int, str] = field(default_factory=dict, repr=False)  # id -> schema as first registered
    _id_by_identity: dict[str, int] = field(default_factory=dict, repr=False)
    _subjects: dict[str, list[Version]] = field(default_factory=dict, repr=False)
    _levels: dict[str, CompatibilityLevel] = field(default_factory=dict, repr=False)

    # --- reads ------------------------------------------------------------------------------------------

    def schema_by_id(self, schema_id: int) -> str:
        with self._lock:
            try:
                return self._by_id[schema_id]
            except KeyError:
                raise SchemaNotFoundError("Schema not found") from None

    def versions_of_id(self, schema_id: int) -> list[Version]:
        with self._lock:
            self.schema_by_id(schema_id)
            return [v for versions in self._subjects.values() for v in versions if v.id == schema_id]

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(self._subjects)

    def versions(self, subject: str) -> list[Version]:
        with self._lock:
            try:
                return list(self._subjects[subject])
            except KeyError:
                raise SubjectNotFoundError(f"Subject '{subject}' not found.") from None

    def version(self, subject: str, version: str | int) -> Version:
        versions = self.versions(subject)
        number = self.parse_version(version)
        if number == -1:
            return versions[-1]
        for v in versions:
            if v.version == number:
                return v
        raise VersionNotFoundError(f"Version {number} not found.")

    @staticmethod
    def parse_version(version: str | int) -> int:
        if version == "latest":
            return -1
        try:
            number = int(version)
        except (TypeError, ValueError):
            number = 0
        if number == -1 or number >= 1:
            return number
        raise InvalidVersionError(
            f"The specified version '{version}' is not a valid version id. Allowed values are between "
            '[1, 2^31-1] and the string "latest"'
        )

    def lookup(self, subject: str, schema_str: str) -> Version:
        key = identity(schema_str)
        versions = self.versions(subject)
        for v in versions:
            if identity(v.schema) == key:
                return v
        raise SchemaNotFoundError("Schema not found")

    def level(self, subject: str | None = None) -> CompatibilityLevel:
        with self._lock:
            if subject is not None and subject in self._levels:
                return self._levels[subject]
            return self.default_level

    # --- compatibility and writes -------------------------------------------------------------------------

    def _validated(self, schema_str: str) -> str:
        identity(schema_str)
        try:
            parse(schema_str)
            validate_schema(schema_str)
        except (InvalidSchemaError, AvroError) as exc:
            raise InvalidSchemaStoreError(f"Invalid schema: {exc}") from exc
        return _compact(schema_str)

    def problems(self, subject: str, schema_str: str, version: str | int | None = None) -> list[str]:
        """Why ``schema_str`` may not join ``subject`` (empty: it may). ``version``: test against that
        one version only (Confluent's /compatibility/subjects/{s}/versions/{v}); None: all the level needs.
        """
        return self._problems(subject, self._validated(schema_str), version)

    def _problems(self, subject: str, compact: str, version: str | int | None = None) -> list[str]:
        with self._lock:
            level = self.level(subject)
            if version is None:
                earlier = [v.schema for v in self._subjects.get(subject, [])]
            else:
                if self.parse_version(version) == -1 and not self._subjects.get(subject):
                    return []  # nothing registered yet: anything is compatible
                earlier = [self.version(subject, version).schema]
                level = CompatibilityLevel(level.value.removesuffix("_TRANSITIVE"))
        return check_compatibility(compact, earlier, level, strict_enums=self.strict_enums)

    def register(self, subject: str, schema_str: str) -> int:
        compact = self._validated(schema_str)
        key = identity(compact)
        with self._lock:
            versions = self._subjects.get(subject, [])
            for v in versions:
                if identity(v.schema) == key:
                    return v.id
            problems = self._problems(subject, compact)
            if problems:
                raise IncompatibleSchemaError(
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f'"{subject}", details: {problems}'
                )
            schema_id = self._id_by_identity.get(key)
            if schema_id is None:
                schema_id = max(self._by_id, default=0) + 1
                self._by_id[schema_id] = compact
                self._id_by_identity[key] = schema_id
            number = versions[-1].version + 1 if versions else 1
            self._subjects[subject] = [*versions, Version(subject, number, schema_id, self._by_id[schema_id])]
            return schema_id

    def set_level(self, level: str, subject: str | None = None) -> CompatibilityLevel:
        try:
            parsed = CompatibilityLevel(str(level).upper())
        except ValueError:
            raise InvalidCompatibilityLevelError(f"Invalid compatibility level: {level}") from None
        with self._lock:
            if subject is None:
                self.default_level = parsed
            else:
                self._levels[subject] = parsed
        return parsed

    def delete_level(self, subject: str) -> CompatibilityLevel:
        with self._lock:
            return self._levels.pop(subject, self.default_level)


def preload(store: SchemaStore, schemas_dir: Path | str) -> dict[str, int]:
    """Register every local schema so its id exists at start; subject -> id.

    Under ``<topic>-value`` for each catalogue topic that carries it; a schema no topic carries yet is
    registered under its full name (Confluent's RecordNameStrategy subject).
    """
    schemas = load_schemas(schemas_dir)
    registered: dict[str, int] = {}
    by_topic = topic_value_schemas(schemas)
    for topic, full_name in by_topic.items():
        subject = value_subject(topic)
        registered[subject] = store.register(subject, schemas[full_name].schema_str)
    for full_name in sorted(set(schemas) - set(by_topic.values())):
        registered[full_name] = store.register(full_name, schemas[full_name].schema_str)
    return registered
