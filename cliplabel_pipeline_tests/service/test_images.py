"""POST /classify/image and multipart /classify/batch: the CLI's numbers, checked formats, limits."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from cliplabel_pipeline import cli

FIELDS = ("top1", "confidence", "cosine", "margin", "low_confidence")


def _png(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _cli_classify(capsys, paths, *extra) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["classify", *map(str, paths), "--model", extra[0], "--precision", "fp32", "--device", "cpu",
                     *extra[1:]]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_health_and_readiness_name_the_model(client, toy_model):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"] == toy_model and ready["concepts"] == 20


def test_readiness_counts_what_was_kept_and_what_was_flagged_and_by_which_rule(client, new_job, service_root):
    before = client.get("/readyz").json()["labelled"]["images"]
    job = service_root / new_job(n_objects=3, seed=4)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((job / "objects").glob("*.png"))]
    files.append(("files", ("source.png", (job / "source.png").read_bytes(), "image/png")))
    body = client.post("/classify/image", files=files).json()
    after = client.get("/readyz").json()["labelled"]["images"]
    flagged = [r for r in body["results"] if r["low_confidence"]]
    assert after["items"] - before["items"] == 4
    assert after["flagged"] - before["flagged"] == len(flagged) >= 1  # the whole picture matches no one shape
    assert after["kept"] - before["kept"] == 4 - len(flagged)
    for rule in ("confidence", "match"):
        assert after["flagged_by"][rule] - before["flagged_by"][rule] == sum(rule in r["flagged_by"] for r in flagged)
    assert after["flagged_by"]["review"] == 0 <= after["flagged_by_several"] <= after["flagged"]
    assert all(n <= after["flagged"] for n in after["flagged_by"].values())  # each rule counts flagged items


def test_readiness_answers_its_model_with_the_same_keys(client):
    from cliplabel_pipeline.service.schemas import Readiness

    ready = client.get("/readyz").json()
    assert list(ready) == ["status", "model", "precision", "device", "bank_version", "concepts", "labelled", "batches"]
    assert Readiness.model_validate(ready).model_dump(mode="json") == ready
    assert list(ready["batches"]) == ["count", "images", "mean_size", "decode_s", "encode_s"]
    assert ready["labelled"]["jobs"] is not None  # jobs run here, in the service's own worker


def test_uploaded_images_get_the_same_labels_and_scores_as_cliplabel_classify(client, new_job, service_root,
                                                                               toy_model, capsys):
    job = service_root / new_job(n_objects=4, seed=11)
    paths = [job / "source.png", *sorted((job / "objects").glob("*.png"))]
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    answer = client.post("/classify/image", files=files, data={"top_k": "4"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = _cli_classify(capsys, paths, toy_model, "--top-k", "4")
    assert [r["filename"] for r in body["results"]] == [p.name for p in paths]
    for got, want in zip(body["results"], expected):
        assert got["top1"] == want["top1"] and got["low_confidence"] == want["low_confidence"]
        for key in ("confidence", "cosine", "margin"):
            assert got[key] == pytest.approx(want[key], abs=1e-4)
        assert [x["name"] for x in got["labels"]] == [x["name"] for x in want["labels"]]
    assert body["model"] == toy_model and body["bank_version"].startswith("own-")


def test_a_request_s_own_labels_replace_the_bank_and_top_k_comes_from_the_query(client, new_job, service_root):
    job = service_root / new_job(n_objects=1, seed=3, labels=["red star"])
    files = {"files": ("star.png", (job / "objects" / "obj_00.png").read_bytes(), "image/png")}
    body = client.post("/classify/image?top_k=2&labels=blue circle, red star ,green square", files=files).json()
    result = body["results"][0]
    assert result["top1"] == "red star"
    assert len(result["labels"]) == 2 and {x["name"] for x in result["labels"]} <= {"blue circle", "red star", "green square"}
    assert body["bank_version"].startswith("user-")


def test_a_request_s_labels_that_name_nothing_drawn_flag_the_picture_by_match(client, new_job, service_root):
    """The issue's example over HTTP: toy shapes against "cat,dog,bird" are each flagged by match."""
    job = service_root / new_job(n_objects=3, seed=5)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((job / "masks").glob("*.png"))]
    body = client.post("/classify/image", files=files, data={"labels": "cat,dog,bird"}).json()
    assert len(body["results"]) == 3
    for result in body["results"]:
        assert result["low_confidence"] and "match" in result["flagged_by"], result
        assert result["match"] < 0.5


def test_content_not_an_image_is_415_whatever_its_name_says(client):
    answer = client.post("/classify/image", files={"files": ("photo.png", b"GIF89a not really", "image/png")})
    assert answer.status_code == 415
    assert answer.json()["detail"] == "photo.png: not a JPEG, PNG or WEBP image (checked by content)"


def test_a_gif_is_refused_by_content(client):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    answer = client.post("/classify/image", files={"files": ("a.png", buf.getvalue(), "image/png")})
    assert answer.status_code == 415 and "checked by content" in answer.json()["detail"]


def test_uploads_over_the_byte_or_pixel_limit_are_413(client, server):
    big = client.post("/classify/image", files={"files": ("big.bin", b"\x89PNG" + b"0" * server.settings.max_upload_bytes)})
    assert big.status_code == 413 and "byte limit" in big.json()["detail"]
    wide = client.post("/classify/image", files={"files": ("wide.png", _png((2000, 1000)), "image/png")})
    assert wide.status_code == 413
    assert wide.json()["detail"] == "wide.png: 2000x1000 = 2,000,000 pixels is over the 1,000,000-pixel limit"
    many = client.post("/classify/image", files=[("files", (f"{i}.png", _png(), "image/png")) for i in range(17)])
    assert many.status_code == 413 and "17 files" in many.json()["detail"]


def test_a_body_larger_than_any_request_may_be_is_cut_off_with_413(client, server):
    limit = server.settings.max_upload_bytes * 8 + 65536
    answer = client.post("/classify/image", content=b"x" * (limit + 10),
                         headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert answer.status_code == 413 and "byte limit" in answer.json()["detail"]


def test_a_broken_image_of_a_known_format_says_why_in_one_line(client):
    data = _png((64, 64))
    answer = client.post("/classify/image", files={"files": ("cut.png", data[:60], "image/png")})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith("no image could be read: cut.png: ") and "\n" not in detail


def test_one_broken_file_among_good_ones_is_listed_as_skipped(client):
    files = [("files", ("good.png", _png(), "image/png")), ("files", ("cut.png", _png((64, 64))[:60], "image/png"))]
    body = client.post("/classify/image", files=files).json()
    assert [r["filename"] for r in body["results"]] == ["good.png"]
    assert [s["filename"] for s in body["skipped"]] == ["cut.png"]


@pytest.mark.parametrize("query, words", [("top_k=0", "top_k must be between 1 and 100"),
                                          ("min_confidence=2", "min_confidence must be between 0 and 1"),
                                          ("top_k=many", "top_k must be a number")])
def test_bad_options_are_one_line_422s(client, query, words):
    answer = client.post(f"/classify/image?{query}", files={"files": ("a.png", _png(), "image/png")})
    assert answer.status_code == 422 and words in answer.json()["detail"]


def test_no_files_is_a_one_line_error_not_a_list(client):
    answer = client.post("/classify/image", data={"top_k": "2"})
    assert answer.status_code == 422 and answer.json()["detail"] == "files must be given"


@pytest.mark.parametrize("query, words", [("min_confidence=-1", "min_confidence must be between 0 and 1, got -1"),
                                          ("min_match=1.5", "min_match must be between 0 and 1, got 1.5"),
                                          ("min_match=x", "min_match must be a number, got 'x'")])
def test_a_cleanups_bad_threshold_has_the_same_words(client, query, words):
    answer = client.post(f"/classify/cleanup/no-such-job?{query}")
    assert answer.status_code == 422 and answer.json()["detail"] == words


def test_concurrent_requests_are_merged_into_shared_batches(server, new_job, service_root):
    job = service_root / new_job(n_objects=6, seed=5)
    images = sorted((job / "objects").glob("*.png"))
    with server.client() as c:
        alone = {p.name: c.post("/classify/image", files={"files": (p.name, p.read_bytes())}).json()["results"][0]
                 for p in images}
    before = server_stats(server)

    def one(i: int) -> dict:
        p = images[i % len(images)]
        with server.client() as c:
            return c.post("/classify/image", files={"files": (p.name, p.read_bytes())}).json()["results"][0]

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(48)))
    after = server_stats(server)
    for r in results:
        assert r["top1"] == alone[r["filename"]]["top1"]
        assert r["confidence"] == pytest.approx(alone[r["filename"]]["confidence"], abs=1e-4)
    assert after.images - before.images == 48
    assert after.batches - before.batches < 48, "concurrent requests were encoded one by one"


def server_stats(server):
    from dataclasses import replace

    return replace(server.app.state.service.classifier.batcher.stats)


def test_the_batch_endpoint_takes_many_images_as_multipart(client, new_job, service_root):
    job = service_root / new_job(n_objects=3, seed=9)
    paths = sorted((job / "objects").glob("*.png"))
    answer = client.post("/classify/batch?top_k=1", files=[("files", (p.name, p.read_bytes())) for p in paths])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["filename"] for r in results] == [p.name for p in paths]
    assert all(len(r["labels"]) == 1 for r in results)


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (its data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(100_000, 100_000), (1, 2**31 - 1)])
def test_a_decompression_bomb_is_413_before_a_pixel_is_decoded(client, size):
    answer = client.post("/classify/image", files={"files": ("bomb.png", _bomb_png(*size), "image/png")})
    w, h = size
    assert answer.status_code == 413  # in the service's words, the size as the header has it (not Pillow's text)
    assert answer.json()["detail"].startswith(f"bomb.png: {w}x{h} = {w * h:,} pixels is over the "), answer.json()


def test_more_form_parts_than_the_parser_allows_is_413(client):
    files = [("files", (f"{i}.png", b"x", "image/png")) for i in range(1001)]
    answer = client.post("/classify/image", files=files)
    assert answer.status_code == 413 and answer.json()["detail"].startswith("Too many")


def test_an_option_sent_as_a_file_part_is_refused_not_read_as_text(client):
    files = [("files", ("a.png", _png(), "image/png")), ("labels", ("l.txt", b"cat,dog", "text/plain"))]
    answer = client.post("/classify/batch", files=files)
    assert answer.status_code == 422 and "labels must be a plain value" in answer.json()["detail"]


@pytest.mark.parametrize("where, name, value, words", [
    *[(where, *case) for where in ("query", "form") for case in [
        ("top_k", "101", "top_k must be between 1 and 100, got 101"),
        ("min_match", "-0.1", "min_match must be between 0 and 1, got -0.1"),
        ("min_confidence", "nan", "min_confidence must be between 0 and 1, got nan")]],
    ("query", "top_k", "2.5", "top_k must be a whole number, got 2.5"),
    ("form", "top_k", "2.5", "top_k must be a whole number, got 2.5"),
    ("form", "min_match", "most", "min_match must be a number, got 'most'"),
])
def test_a_bad_option_is_named_as_the_request_names_it(client, where, name, value, words):
    """The words of the settings' own bound (``CLIPLABEL_MIN_MATCH must be between 0 and 1, got -0.1``)."""
    files = {"files": ("a.png", _png(), "image/png")}
    answer = (client.post(f"/classify/image?{name}={value}", files=files) if where == "query"
              else client.post("/classify/image", files=files, data={name: value}))
    assert answer.status_code == 422 and answer.json()["detail"] == words
