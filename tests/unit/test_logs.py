import json
import logging

import pytest

from services import logs


def test_mask_text_hides_niks_accounts_and_passports() -> None:
    masked = logs.mask_text("nik 3602041211870001 va 880012345678901234 passport C1234567 ok")
    assert "3602041211870001" not in masked
    assert "880012345678901234" not in masked
    assert "C1234567" not in masked
    assert masked.endswith("ok")
    assert "0001" in masked  # last four digits stay, for support calls


def test_every_log_line_passes_the_masking_point(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json_output=True)
    log = logging.getLogger("sinergi.test")
    log.info("careless message with %s", "3602041211870001")
    logs.event(log, "structured", account="1234567890123", count=3)
    err = capsys.readouterr().err
    assert "3602041211870001" not in err
    assert "1234567890123" not in err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert lines[1]["msg"] == "structured" and lines[1]["count"] == "3"


def test_masking_leaves_decimal_measurements_alone_but_not_a_nik_ending_a_sentence() -> None:
    assert logs.mask_text("runtime=6.0123456789806s") == "runtime=6.0123456789806s"
    assert "3602041211870001" not in logs.mask_text("the nik was 3602041211870001.")


def test_event_ids_stay_whole_but_a_nik_next_to_one_is_still_masked() -> None:
    event_id = "96989420-54cd-5eb1-aade-1234562936ce"  # ten digits in a row in the last group
    masked = logs.mask_text(f"event_id={event_id} nik=3602041211870001")
    assert event_id in masked
    assert "3602041211870001" not in masked
