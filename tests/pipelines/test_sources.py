"""Source listing and reading for every kind, and the one-line errors for bad sources."""

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onegen.pipelines.sources.kinds import detect_kind, list_items, read_items
from onegen.pipelines.sources.listing import list_parts
from onegen.pipelines.sources.names import SourceError
from onegen.pipelines.sources.settings import SourceSpec
from tests.conftest import encode, photo, write_photo_folder


def _read_all(spec, items):
    return {item["uri"]: data for item, data in read_items(spec, items)}


def test_folder_recursive_with_captions(tmp_path):
    names = write_photo_folder(tmp_path / "photos", count=6)
    (tmp_path / "photos" / "img001.txt").write_text("sidecar caption")
    spec = SourceSpec(str(tmp_path / "photos"))
    items = list_items(spec)
    assert detect_kind(spec) == "folder" and spec.source_name == "photos"
    assert sorted(i["uri"].split("photos/")[1] for i in items) == sorted(names)
    assert [i["uri"] for i in items] == sorted(i["uri"] for i in items)
    captions = {i["uri"].split("photos/")[1]: i["caption"] for i in items}
    assert captions["img001.jpg"] == "a crop of the coffee photo"  # metadata.jsonl wins over the sidecar
    assert captions["nested/img000.png"] is None  # index 0 has no metadata row
    data = _read_all(spec, items)
    assert all(d[:2] in (b"\xff\xd8", b"\x89P") for d in data.values())


def test_table_with_bytes_and_caption(tmp_path):
    images = [encode(photo("astronaut")[:64, :64]), encode(photo("coffee")[:64, :64]), None]
    table = pa.table({"jpg": pa.array(images, pa.binary()), "caption": ["one", "two", "three"]})
    pq.write_table(table, tmp_path / "rows.parquet")
    spec = SourceSpec(str(tmp_path / "rows.parquet"))
    items = list_items(spec)
    results = list(read_items(spec, items))
    assert [i["caption"] for i in items] == ["one", "two", "three"]
    assert results[0][1] == images[0] and results[1][1] == images[1]
    assert isinstance(results[2][1], Exception)  # an empty cell is this item's problem, not the job's


def test_jsonl_with_relative_uris(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(encode(photo("chelsea")[:64, :64]))
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "img/a.png", "text": "a cat"}) + "\n"
                                         + json.dumps({"path": "img/missing.png", "text": "gone"}) + "\n")
    spec = SourceSpec(str(tmp_path / "list.jsonl"))
    results = list(read_items(spec, list_items(spec)))
    assert results[0][1] == (tmp_path / "img" / "a.png").read_bytes() and results[0][0]["caption"] == "a cat"
    assert isinstance(results[1][1], OSError)


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars_and_hostile_member_names(tmp_path):
    image = encode(photo("rocket")[:64, :64], "JPEG")
    with tarfile.open(tmp_path / "data-000000.tar", "w") as tar:
        _add(tar, "s1.jpg", image)
        _add(tar, "s1.txt", b"a rocket")
        _add(tar, "s2.jpg", image)
        _add(tar, "s2.json", json.dumps({"caption": "json caption"}).encode())
        _add(tar, "../evil.jpg", image)
    spec = SourceSpec(str(tmp_path))
    assert detect_kind(spec) == "webdataset"
    items = list_items(spec)
    results = {item["member"]: (item, data) for item, data in read_items(spec, items)}
    assert results["s1.jpg"][1] == image and results["s1.jpg"][0]["caption"] == "a rocket"
    assert results["s2.jpg"][0]["caption"] == "json caption"
    assert isinstance(results["../evil.jpg"][1], ValueError)  # refused with a reason, never extracted
    assert not (tmp_path.parent / "evil.jpg").exists()


def test_hf_dataset_on_disk(tmp_path):
    import datasets

    photos = [photo("astronaut")[:64, :64], photo("coffee")[:64, :64]]
    dataset = datasets.Dataset.from_dict({"image": [encode(p) for p in photos], "text": ["x", "y"]})
    dataset = dataset.cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "hf"))
    spec = SourceSpec(str(tmp_path / "hf"))
    assert detect_kind(spec) == "hf"
    items = list_items(spec)
    results = list(read_items(spec, items))
    assert [i["caption"] for i in items] == ["x", "y"]
    assert results[1][1] == encode(photos[1])


def test_fingerprint_changes_with_input(tmp_path):
    write_photo_folder(tmp_path / "p", count=3)
    spec = SourceSpec(str(tmp_path / "p"))
    before = list_parts(spec, 256).fingerprint  # what the ingest job record holds
    assert list_parts(spec, 256).fingerprint == before
    (tmp_path / "p" / "extra.png").write_bytes(encode(photo("coins")[:64, :64]))
    assert list_parts(spec, 256).fingerprint != before


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nope", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
        (lambda p: pq.write_table(pa.table({"a": [1]}), p / "t.parquet") or p / "t.parquet", "no image bytes column"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(SourceError) as error:
        list_items(SourceSpec(str(make(tmp_path))))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_folder_is_walked_in_uri_order_and_the_nearest_metadata_names_the_caption(tmp_path):
    import fsspec

    from onegen.pipelines.sources.folder import iter_folder
    from onegen.pipelines.sources.names import CAPTION_COLUMNS, IMAGE_EXTENSIONS

    root = tmp_path / "photos"
    # names whose directory-by-directory order differs from their full paths' order ("-" < "." < "/")
    for name in ("a.png", "a/x.png", "a-b/y.png", "a b/z.png", "A.png", "a/deep/w.PNG", "a.b/v.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(photo("coffee")[:32, :32]))
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a/x.png", "text": "from the root"}) + "\n"
                                         + json.dumps({"file_name": "a/deep/w.PNG", "text": "root, deep"}) + "\n")
    (root / "a" / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "from a/"}) + "\n")
    (root / "a-b" / "y.txt").write_text("sidecar\r\n")
    items = list(iter_folder(str(root), IMAGE_EXTENSIONS, CAPTION_COLUMNS))
    fs, stripped = fsspec.core.url_to_fs(str(root))
    listed = sorted(fs.unstrip_protocol(p) for p in fs.find(stripped) if p.lower().endswith(IMAGE_EXTENSIONS))
    assert [i["uri"] for i in items] == listed  # exactly the order of a sorted whole listing
    captions = {i["path"].split("photos/")[1]: i["caption"] for i in items}
    assert captions == {"A.png": None, "a b/z.png": None, "a-b/y.png": None, "a.b/v.jpg": None, "a.png": None,
                        "a/deep/w.PNG": "root, deep", "a/x.png": "from a/"}
    # a sidecar is named by the listing and read with the image, by the worker
    assert [i["caption_sidecar"] for i in items if i["caption_sidecar"]] == [str(root / "a-b" / "y.txt")]
    read = {item["path"].split("photos/")[1]: item["caption"] for item, _ in read_items(SourceSpec(str(root)), [
        {**i, "kind": "folder"} for i in items])}
    assert read["a-b/y.png"] == "sidecar" and read["a/x.png"] == "from a/" and read["A.png"] is None
    first = items[0]
    assert first["size"] == first["file_size"] == (root / "A.png").stat().st_size
    assert first["file_mtime"] == str(fs.info(first["path"])["mtime"])  # what by-reference catalogs compare


def test_an_unreadable_caption_sidecar_is_that_item_s_read_error(tmp_path):
    write_photo_folder(tmp_path / "photos", count=2)
    (tmp_path / "photos" / "nested" / "img000.txt").write_bytes(b"\xff\xfe not utf-8 \xc3")  # next to img000.png
    spec = SourceSpec(str(tmp_path / "photos"))
    read = {item["uri"].rsplit("/", 1)[1]: data for item, data in read_items(spec, list_items(spec))}
    assert isinstance(read["img000.png"], UnicodeDecodeError)  # becomes a read_error reject, with the text
    assert isinstance(read["img001.jpg"], bytes)
