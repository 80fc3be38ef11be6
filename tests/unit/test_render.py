"""The shim's JSON numbers: int64 fields (nested and repeated too) as JSON numbers, whole
floats without a fraction, and 64-bit inputs a JSON reader cannot hold refused."""

from __future__ import annotations

import json

import pytest
from callvault.v1 import recordings_pb2 as pb

from service.errors import InvalidArgument
from service.rest.render import MAX_JSON_INT, parse_into, to_json


def test_nested_repeated_int64_counters_are_numbers() -> None:
    jobs = pb.ListSyncJobsResponse(
        items=[pb.SyncJob(id="j1", calls_seen=5, recordings_stored=4, bytes_stored=MAX_JSON_INT, failures=0)]
    )
    text = json.dumps(to_json(jobs))
    assert '"callsSeen": 5' in text and '"failures": 0' in text
    assert f'"bytesStored": {MAX_JSON_INT}' in text


def test_whole_floats_lose_their_fraction_and_others_keep_it() -> None:
    page = pb.ListRecordingsResponse(
        items=[pb.Recording(id="a", score=86.0, duration_seconds=2.5), pb.Recording(id="b")], total=2
    )
    data = to_json(page)
    assert json.dumps(data["items"][0]["score"]) == "86" and data["items"][0]["durationSeconds"] == 2.5
    assert "score" not in data["items"][1] and json.dumps(data["items"][1]["durationSeconds"]) == "0"
    assert json.dumps(data["total"]) == "2"


@pytest.mark.parametrize("value", [MAX_JSON_INT + 1, str(MAX_JSON_INT + 1), -(MAX_JSON_INT + 1), 1e300])
def test_int64_input_beyond_2_to_the_53_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_into(pb.DownloadRecordingRequest(), {"id": "x", "offset": value})
    assert raised.value.field == "offset"


def test_nested_int64_input_is_named_by_its_path() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_into(
            pb.ListSyncJobsResponse(), {"items": [{"callsSeen": 1}, {"bytesStored": MAX_JSON_INT + 1}]}
        )
    assert raised.value.field == "items.bytesStored"


def test_int64_input_up_to_2_to_the_53_parses() -> None:
    msg = pb.DownloadRecordingRequest()
    parse_into(msg, {"id": "x", "offset": MAX_JSON_INT, "length": str(-MAX_JSON_INT)})
    assert (msg.offset, msg.length) == (MAX_JSON_INT, -MAX_JSON_INT)
