"""JourneyDB as published: `data/train/imgs/NNN.tgz` holding `NNN/<name>.jpg`, prompts in
`train_anno_realease_repath.jsonl` (`img_path` relative to imgs/), written here in that layout."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest

from onegen.pipelines.jobs.ingest import ingest_rows
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import detect_kind, list_items
from onegen.pipelines.sources.settings import SourceSpec
from tests.pipelines.test_source_helpers import jpeg


def write_tgz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def write_journeydb(root) -> None:
    """Two image archives and the prompts' jsonl in JourneyDB's layout, with a `../` member and a malformed line."""
    train = root / "data" / "train"
    (train / "imgs").mkdir(parents=True)
    write_tgz(train / "imgs" / "000.tgz", {"000/aa.jpg": jpeg(1), "000/bb.jpg": jpeg(2), "../evil.jpg": jpeg(3)})
    write_tgz(train / "imgs" / "001.tgz", {"001/cc.jpg": jpeg(4)})
    lines = [json.dumps({"img_path": "./000/aa.jpg", "prompt": "a red fox, watercolor"}),
             "{not json",
             json.dumps({"img_path": "./001/cc.jpg", "prompt": "a lighthouse at dusk --ar 16:9"})]
    (train / "train_anno_realease_repath.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def journeydb(tmp_path):
    write_journeydb(tmp_path / "JourneyDB")
    return tmp_path / "JourneyDB"


def test_detected_and_prompts_joined_by_img_path(journeydb):
    spec = SourceSpec(str(journeydb))
    assert detect_kind(spec) == "journeydb"
    items = list_items(spec)
    assert [i["member"] for i in items] == ["../evil.jpg", "000/aa.jpg", "000/bb.jpg", "001/cc.jpg"]
    assert {i["member"]: i["caption"] for i in items}["000/aa.jpg"] == "a red fox, watercolor"
    assert items[0]["meta"]["malformed_lines"] == 1


def test_rows_read_from_the_tgz_and_unsafe_member_refused(journeydb):
    spec = SourceSpec(str(journeydb), kind="journeydb")
    rows = ingest_rows(spec, ImageLimits(min_side=8), list_items(spec))
    by_member = {r["uri"].rsplit("#", 1)[1]: r for r in rows}
    assert by_member["../evil.jpg"]["reject_reason"] == "read_error"
    assert "unsafe tar member name" in by_member["../evil.jpg"]["reject_error"]
    assert by_member["001/cc.jpg"]["caption_original"] == "a lighthouse at dusk --ar 16:9"
    assert by_member["000/bb.jpg"]["caption_original"] is None and by_member["000/bb.jpg"]["reject_reason"] is None
    assert by_member["000/aa.jpg"]["image"] == jpeg(1)  # kept byte for byte


@pytest.mark.timeout(600)
def test_onegen_ingest_journeydb(journeydb, tmp_path, ray_local):
    from onegen.pipelines.cli.main import main
    from tests.pipelines.test_kill_resume import RAY

    out = tmp_path / "data"
    args = ["ingest", str(journeydb), "--out", str(out), "--min-side", "8", "--rows-per-part", "2", *RAY]
    assert main(args) == 0
    catalog = pq.read_table(out / "catalog" / "journeydb")
    assert catalog.num_rows == 3 and len(set(catalog.column("key").to_pylist())) == 3
    assert pq.read_table(out / "rejects" / "journeydb").column("reason").to_pylist() == ["read_error"]
    assert main(args) == 0  # rerun: committed parts skipped, nothing duplicated
    assert pq.read_table(out / "catalog" / "journeydb").num_rows == 3
