"""Avro schema compatibility: Apache Avro's reader/writer checker plus two stricter project rules.

Built on ``avro.compatibility.ReaderWriterCompatibilityChecker`` (the Python port of the Java checker
Confluent uses), with:

1. **Logical types must agree.** Avro resolution looks only at the underlying type, so ``decimal(18,2)``
   read as ``decimal(18,6)``, ``timestamp-millis`` read as ``timestamp-micros``, or ``date`` read as a
   plain ``int`` all pass the stock checker and silently change values. The Avro spec says decimals
   match only when scale and precision match; we extend that to every logical type.
2. **A reader of existing data must know every enum symbol that data may hold** (``strict_enums``).
   The stock checker lets an enum default cover symbols the reader lacks, which makes *removing* a
   symbol FULL-compatible: old records saying ``ACTIVE`` would be read as ``UNKNOWN``. With
   ``strict_enums`` the enum default still covers symbols *added* later (an old reader meeting new
   data, the forward direction), but not symbols removed from data that already exists.

Levels follow Confluent: BACKWARD (the new schema reads data of the latest), FORWARD (the latest reads
data of the new), FULL (both); ``*_TRANSITIVE`` checks every earlier version instead of the latest.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from enum import StrEnum

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
    SchemaType,
    check_schema_names,
    incompatible,
    merge,
)
from avro.errors import AvroException, IgnoredLogicalType

__all__ = [
    "CompatibilityLevel",
    "InvalidSchemaError",
    "check_compatibility",
    "incompatibilities",
    "parse",
]


class CompatibilityLevel(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def backward(self) -> bool:
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.value.startswith(("FORWARD", "FULL"))

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")


class InvalidSchemaError(ValueError):
    """Not a valid Avro schema."""


def parse(schema_str: str) -> avro.schema.Schema:
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredLogicalType)  # e.g. decimal scale > precision
        try:
            return avro.schema.parse(schema_str)
        except (AvroException, IgnoredLogicalType, ValueError, TypeError) as exc:
            raise InvalidSchemaError(str(exc)) from exc


_LOGICAL_PARAMS = ("precision", "scale")
_CONTAINERS = {SchemaType.RECORD, SchemaType.UNION, SchemaType.ARRAY, SchemaType.MAP, SchemaType.ENUM}


class _Checker(ReaderWriterCompatibilityChecker):
    def __init__(self, strict_enums: bool) -> None:
        super().__init__()
        self.strict_enums = strict_enums

    def calculate_compatibility(
        self, reader: avro.schema.Schema, writer: avro.schema.Schema, location: list[str]
    ) -> SchemaCompatibilityResult:
        if reader.type not in _CONTAINERS and writer.type not in _CONTAINERS:
            r_logical, w_logical = reader.get_prop("logicalType"), writer.get_prop("logicalType")
            if r_logical != w_logical:
                return incompatible(
                    SchemaIncompatibilityType.type_mismatch,
                    f"writer logical type {w_logical or writer.type} read as {r_logical or reader.type}",
                    location,
                )
            if r_logical is not None:
                for param in _LOGICAL_PARAMS:
                    if reader.get_prop(param) != writer.get_prop(param):
                        return incompatible(
                            SchemaIncompatibilityType.type_mismatch,
                            f"{r_logical} {param} {writer.get_prop(param)} read as {reader.get_prop(param)}",
                            location,
                        )
        if self.strict_enums and reader.type == SchemaType.ENUM and writer.type == SchemaType.ENUM:
            assert isinstance(reader, avro.schema.EnumSchema) and isinstance(writer, avro.schema.EnumSchema)
            result = check_schema_names(reader, writer, location)
            missing = sorted(set(writer.symbols) - set(reader.symbols))
            if missing:
                result = merge(
                    result,
                    incompatible(
                        SchemaIncompatibilityType.missing_enum_symbols,
                        f"reader enum {reader.fullname} lacks symbols {missing}",
                        [*location, "symbols"],
                    ),
                )
            return result
        return super().calculate_compatibility(reader, writer, location)


def _reader_reads_writer(reader: avro.schema.Schema, writer: avro.schema.Schema, *, strict_enums: bool) -> list[str]:
    result = _Checker(strict_enums).get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    locations = ", ".join(sorted(result.locations))
    return [f"{message} (at {locations})" for message in sorted(result.messages)]


def incompatibilities(
    new: avro.schema.Schema,
    earlier: Sequence[avro.schema.Schema],
    level: CompatibilityLevel = CompatibilityLevel.FULL_TRANSITIVE,
    *,
    strict_enums: bool = True,
) -> list[str]:
    """Why ``new`` may not follow ``earlier`` (oldest first) under ``level``; empty when it may."""
    if level is CompatibilityLevel.NONE or not earlier:
        return []
    against = list(earlier) if level.transitive else [earlier[-1]]
    problems: list[str] = []
    for i, old in enumerate(against):
        version = i + 1 if level.transitive else len(earlier)
        if level.backward:  # the new schema reads existing data: every symbol must be known
            problems += [
                f"new schema cannot read data written with version {version}: {msg}"
                for msg in _reader_reads_writer(new, old, strict_enums=strict_enums)
            ]
        if level.forward:  # existing readers meet new data: their enum defaults may cover new symbols
            problems += [
                f"version {version} cannot read data written with the new schema: {msg}"
                for msg in _reader_reads_writer(old, new, strict_enums=False)
            ]
    return problems


def check_compatibility(
    new_schema_str: str,
    earlier_schema_strs: Sequence[str],
    level: CompatibilityLevel = CompatibilityLevel.FULL_TRANSITIVE,
    *,
    strict_enums: bool = True,
) -> list[str]:
    """String form of ``incompatibilities``: the list of problems, empty when compatible."""
    return incompatibilities(
        parse(new_schema_str), [parse(s) for s in earlier_schema_strs], level, strict_enums=strict_enums
    )
