from services.catalogue import ALL_TOPICS, CORE_MEMBER_RECORDS, MEMBERS, Encoding, by_name, dlq
from services.config import Settings


def test_every_topic_name_is_unique_and_documented() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    for spec in ALL_TOPICS:
        assert spec.doc, spec.name
        assert spec.key, spec.name
        assert "nik" not in spec.key.lower() or "hash" in spec.key.lower(), spec.name


def test_avro_topics_name_their_schema_and_the_schema_file_exists() -> None:
    schemas_dir = Settings().schemas_dir
    for spec in ALL_TOPICS:
        if spec.encoding is Encoding.AVRO:
            assert spec.value_schema, spec.name
            if spec.value_schema in {"sinergi.FxRate", "sinergi.Case", "sinergi.CaseUpdate"}:
                continue  # schemas arrive with the reconciliation and KBRI issues
            assert (schemas_dir / f"{spec.value_schema}.avsc").is_file(), spec.value_schema


def test_member_topic_is_compacted_and_core_topic_keeps_history() -> None:
    assert MEMBERS.config()["cleanup.policy"] == "compact"
    assert CORE_MEMBER_RECORDS.config()["cleanup.policy"] == "delete"


def test_every_processing_stage_has_a_dead_letter_topic() -> None:
    for stage in ("normalize_enrollments", "normalize_payments", "reconcile"):
        assert by_name(dlq(stage).name).encoding is Encoding.BYTES


def test_one_update_topic_per_registered_office() -> None:
    from services.catalogue import office_update_topics, office_updates_topic
    from services.reference import load_offices
    from services.topics import catalogue

    offices = load_offices(Settings().offices_file)
    specs = office_update_topics(offices)
    assert [s.name for s in specs] == sorted(office_updates_topic(code) for code in offices)
    assert all(s.partitions == 1 and s.encoding is Encoding.JSON for s in specs)
    assert office_updates_topic("KDEI_TAIPEI") == "kbri.updates.KDEI_TAIPEI.v1"
    names = [s.name for s in catalogue(Settings())]
    assert len(names) == len(set(names)) == len(ALL_TOPICS) + len(offices)
