"""What a service needs besides Kafka, built once from Settings at start: codec, keys, reference data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from cryptography.fernet import Fernet

from services.config import Settings
from services.domain.dates import wib_date
from services.domain.identity import participant_id
from services.domain.tariff import Tariff, TariffTable, load_tariffs
from services.reference import BankProfile, load_banks, load_offices, load_tariff_document

WIB_OFFSET_HOURS = 7


@dataclass
class ServiceContext:
    settings: Settings
    codec: Any  # services.avro.AvroCodec; typed loosely so the domain-only tests need no registry
    banks: dict[str, BankProfile]
    offices: frozenset[str]
    tariff_table: TariffTable
    participant_key: Callable[[str], str]
    encrypt_pii: Callable[[bytes], bytes]
    # Only notify_kbri reads PII back (the masked NIK and the passport lookup key); never logged.
    decrypt_pii: Callable[[bytes], bytes]
    extra: dict[str, Any] = field(default_factory=dict)

    def tariff_on(self, when: datetime) -> Tariff:
        return self.tariff_table.tariff_on(wib_date(when))


def build_context(settings: Settings, codec: Any) -> ServiceContext:
    fernet = Fernet(settings.pii_encryption_key.get_secret_value().encode())
    return ServiceContext(
        settings=settings,
        codec=codec,
        banks=load_banks(settings.banks_file),
        offices=frozenset(load_offices(settings.offices_file)),
        tariff_table=load_tariffs(load_tariff_document(settings.tariff_file)),
        participant_key=partial(
            participant_id,
            secret=settings.participant_key_secret.get_secret_value().encode(),
            digits=settings.customer_no_digits,
        ),
        encrypt_pii=fernet.encrypt,
        decrypt_pii=fernet.decrypt,
    )
