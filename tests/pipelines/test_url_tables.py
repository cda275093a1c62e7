"""URL tables as the paper's sources publish them (LAION, COYO, PixelProse, Unsplash Lite), read through
the table source with every image behind a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onegen.pipelines.sources.kinds import detect_kind, iter_items, list_items, read_items
from onegen.pipelines.sources.settings import SourceSpec
from onegen.pipelines.sources.url_fetch import FetchFailed
from tests.conftest import encode, photo

IMAGES = {f"/img/{n}.jpg": encode(photo(name)[:96, :96], "JPEG")
          for n, name in enumerate(["astronaut", "coffee", "chelsea", "rocket"])}


class _Images(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = IMAGES.get(self.path)
        if self.path == "/page":
            body, status = b"<html>gone</html>", 200
        else:
            status = 200 if body is not None else 404
            body = body or b"missing"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _urls(server: str) -> list[str]:
    return [server + p for p in IMAGES] + [server + "/img/404.jpg", server + "/page"]


def _laion(server: str, path) -> None:
    urls = _urls(server)
    table = pa.table({"URL": urls, "TEXT": [f"laion {i}" for i in range(len(urls))],
                      "WIDTH": [96] * len(urls), "HEIGHT": [96] * len(urls), "punsafe": [0.01] * len(urls),
                      "pwatermark": [0.2] * len(urls), "AESTHETIC_SCORE": [5.5 + i for i in range(len(urls))]})
    pq.write_table(table, path, row_group_size=4)  # two row groups: the listing reads them one by one


def _coyo(server: str, path) -> None:
    urls = _urls(server)
    pq.write_table(pa.table({"id": list(range(len(urls))), "url": urls, "text": [f"coyo {i}" for i in range(len(urls))],
                             "width": [96] * len(urls), "height": [96] * len(urls),
                             "clip_similarity_vitl14": [0.3] * len(urls), "nsfw_score_opennsfw2": [0.0] * len(urls),
                             "watermark_score": [0.1] * len(urls), "aesthetic_score_laion_v2": [5.0] * len(urls)}), path)


def _pixelprose(server: str, path) -> None:
    urls = _urls(server)
    pq.write_table(pa.table({"uid": [f"u{i}" for i in range(len(urls))], "url": urls, "key": [str(i) for i in range(len(urls))],
                             "status": ["success"] * len(urls), "original_caption": [f"alt {i}" for i in range(len(urls))],
                             "vlm_model": ["gemini-1.0-pro-vision"] * len(urls),
                             "vlm_caption": [f"This image displays {i}" for i in range(len(urls))],
                             "aesthetic_score": [5.1] * len(urls), "watermark_class_score": [0.2] * len(urls)}), path)


def _unsplash(server: str, path) -> None:
    urls = _urls(server)
    lines = ["photo_id\tphoto_url\tphoto_image_url\tphoto_description\tai_description"]
    lines += [f"p{i}\thttps://unsplash.com/photos/p{i}\t{url}\tdesc {i}\tai {i}" for i, url in enumerate(urls)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, write, caption", [
    ("laion.parquet", _laion, "laion {}"),
    ("coyo.parquet", _coyo, "coyo {}"),
    ("pixelprose.parquet", _pixelprose, "alt {}"),
    ("photos.tsv000", _unsplash, "desc {}"),
])
def test_published_url_tables_are_listed_and_fetched(server, tmp_path, name, write, caption):
    write(server, tmp_path / name)
    spec = SourceSpec(str(tmp_path / name), fetch_retries=0)
    assert detect_kind(spec) == "table"
    items = list_items(spec)
    assert [i["caption"] for i in items] == [caption.format(n) for n in range(6)]
    assert [i["target"] for i in items] == _urls(server)
    results = [data for _, data in read_items(spec, items)]
    assert results[:4] == list(IMAGES.values())
    assert isinstance(results[4], FetchFailed) and results[4].reason == "http_404"
    assert results[5] == b"<html>gone</html>"  # refused later by the image checks: not_an_image


def test_a_url_table_is_listed_as_a_stream_and_its_parts_cut_row_groups(server, tmp_path):
    """The per-row listing (list_items; ingest lists a Parquet URL table by ranges instead:
    test_url_table_ranges.py): URL rows carry their own fields, so parts cut anywhere."""
    from onegen.pipelines.sources.listing import cut_parts

    _laion(server, tmp_path / "laion.parquet")  # row groups of 4 and 2 rows
    listed = iter_items(SourceSpec(str(tmp_path / "laion.parquet")))
    first = next(listed)  # a stream: the first item comes before the rest are listed
    items = [first, *list(listed)]
    uris = [item["uri"] for item in items]
    assert uris == sorted(uris) and [item["row"] for item in items] == list(range(6))
    assert all("row_group" not in item for item in items)
    assert [item["fields"]["AESTHETIC_SCORE"] for item in items] == [5.5 + i for i in range(6)]
    assert items[0]["fields"]["TEXT"] == "laion 0" and items[0]["fields"]["WIDTH"] == 96
    assert [len(part) for part in cut_parts(items, 3)] == [3, 3]  # the first part ends inside row group 0


def test_columns_given_by_flag_match_case_insensitively(server, tmp_path):
    _pixelprose(server, tmp_path / "pp.parquet")
    spec = SourceSpec(str(tmp_path / "pp.parquet"), caption_column="VLM_CAPTION", uri_column="URL")
    assert [i["caption"] for i in list_items(spec)][:2] == ["This image displays 0", "This image displays 1"]


def test_url_failures_land_in_the_rejects_with_their_reason(server, tmp_path, ray_local):
    from onegen.pipelines.cli.main import main

    _coyo(server, tmp_path / "coyo.parquet")
    root = tmp_path / "dataset"
    assert main(["ingest", str(tmp_path / "coyo.parquet"), "--out", str(root), "--rows-per-part", "4",
                 "--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]) == 0
    catalog = pq.read_table(root / "catalog" / "coyo")
    assert catalog.num_rows == 4 and set(catalog.column("caption_original").to_pylist()) == {f"coyo {i}" for i in range(4)}
    # the source's own columns are kept, typed and namespaced, for the rows that entered the catalog
    assert catalog.schema.field("source.aesthetic_score_laion_v2").type == pa.float64()
    assert catalog.schema.field("source.id").type == pa.int64()
    assert sorted(catalog.column("source.id").to_pylist()) == [0, 1, 2, 3]
    assert sorted(catalog.column("source.url").to_pylist()) == sorted(_urls(server)[:4])
    assert "source.image" not in catalog.schema.names
    rejects = pq.read_table(root / "rejects" / "coyo")
    assert sorted(rejects.column("reason").to_pylist()) == ["http_404", "not_an_image"]
    assert any("/img/404.jpg" in (e or "") for e in rejects.column("error").to_pylist())


@pytest.mark.timeout(600)
def test_a_url_ingest_killed_mid_download_and_rerun_equals_a_clean_run(server, tmp_path, ray_local):
    """The driver SIGKILLed at the second part's commit (other parts still downloading), then rerun:
    catalog and rejects equal a clean run's, row for row (parts are the unit of resume)."""
    from onegen.pipelines.cli.main import main
    from tests.pipelines.test_kill_resume import RAY, _parquet_rows, _run

    table = tmp_path / "laion.parquet"
    urls = _urls(server) * 3  # 18 rows: 6 parts of 3
    pq.write_table(pa.table({"URL": urls, "TEXT": [f"t{i}" for i in range(len(urls))]}), table)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(["ingest", str(table), "--out", str(clean), "--rows-per-part", "3", *RAY]) == 0
    job = ["ingest", str(table), "--out", str(killed), "--rows-per-part", "3"]
    assert _run(job, "before_rename:2:driver", tmp_path / "count") == -9
    assert len(list((killed / "catalog" / "laion").glob("*.parquet"))) < 6  # it died with parts left to do
    _run(job)
    for folder in ("catalog", "rejects"):
        assert _parquet_rows(killed / folder) == _parquet_rows(clean / folder)


@pytest.mark.timeout(600)
def test_a_build_filters_on_the_source_s_own_scores(server, tmp_path, ray_local):
    """LAION's AESTHETIC_SCORE kept at ingest decides the build: `--filter 'source.aesthetic_score>=7.5'`."""
    from onegen.manifests.query import read_manifests
    from onegen.pipelines.cli.main import main
    from tests.pipelines.test_kill_resume import RAY

    _laion(server, tmp_path / "laion.parquet")  # scores 5.5, 6.5, ... for the rows in order
    root, shards = tmp_path / "d", tmp_path / "s"
    assert main(["ingest", str(tmp_path / "laion.parquet"), "--out", str(root), *RAY]) == 0
    assert main(["build", str(root), "--out", str(shards), "--tasks", "text2image",
                 "--filter", "source.aesthetic_score>=7.5", *RAY]) == 0
    kept = sorted(read_manifests(str(shards)).column("prompt").to_pylist())
    assert kept == ["[[text2image]] laion 2", "[[text2image]] laion 3"]  # 7.5 and 8.5; 5.5 and 6.5 skipped
    skipped = pq.read_table(shards / "skipped").column("reason").to_pylist()
    assert sorted(skipped) == ["filtered:source.aesthetic_score=5.5<7.5", "filtered:source.aesthetic_score=6.5<7.5"]
    # `manifest stats` shows the source's own columns, from the catalog parts' footers
    from onegen.manifests.query import shard_stats
    from onegen.manifests.stats_table import stats_table

    columns = shard_stats(str(shards))["source_columns"]["laion"]
    assert (columns["AESTHETIC_SCORE"]["min"], columns["AESTHETIC_SCORE"]["max"]) == (5.5, 8.5)
    assert columns["AESTHETIC_SCORE"]["rows"] == 4 and columns["AESTHETIC_SCORE"]["nulls"] == 0
    assert "TEXT" in columns and columns["TEXT"]["min"] is None  # text: no range shown
    line = next(x for x in stats_table(shard_stats(str(shards))).splitlines() if x.startswith("source laion columns:"))
    assert "AESTHETIC_SCORE 5.5..8.5" in line
