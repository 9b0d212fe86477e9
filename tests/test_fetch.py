"""Collect from the web: image URLs, video and audio links, against a real HTTP server on loopback."""

from __future__ import annotations

import io
import json
import os

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.core import storage
from tasks.core.schema import SAMPLE_SCHEMA, scores_dict
from tasks.core.shards import ShardConfig
from tasks.fetch import FetchError
from tasks.fetch.cache import fetch_cache
from tasks.fetch.guard import AddressPolicy
from tasks.fetch.http import opted_out
from tasks.fetch.resize import ImageResizer
from tasks.media.image import decode_image
from tasks.recipe import Recipe
from tasks.sources import make_source
from tasks.stages.clean import CleanStage
from tasks.stages.collect import CollectStage, NetworkConfig, plan_collect

from .helpers import audio_bytes, build_in_process, image_bytes, real_photos, video_bytes
from .web import LOOPBACK


def collect(tmp_path, rows: list[dict], network: dict, name: str = "urls", cache: bool = True):
    """Plan a URL list and run the collect stage over it: (kept rows, reject rows by URL)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    uri = tmp_path / f"{name}.jsonl"
    uri.write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name=name, kind="urls", uri=str(uri))
    plan = plan_collect([source], "p", "r", ShardConfig(), 1, str(tmp_path / "plan"))
    stage = CollectStage(cache_dir=str(tmp_path / "cache") if cache else None, **network)
    stage.start_shard("shard-00000")
    out = stage.process(storage.read_parquet(plan.shards[0]))
    return out.kept.to_pylist(), {r["source_uri"]: r for r in out.rejected.to_pylist()}


def test_every_failure_is_a_reject_with_its_category(tmp_path, web):
    photo = real_photos()["coffee-0"]
    good = web.add("/coffee.jpg", body=photo, content_type="image/jpeg")
    cases = {
        web.url + "/missing.jpg": "fetch:http_404",
        web.add("/error.jpg", status=500, body=b"oops"): "fetch:http_500",
        web.add(
            "/page.jpg", body=b"<html><body>not a picture</body></html>", content_type="image/jpeg"
        ): "fetch:not_media",
        web.add("/slow.jpg", body=photo, delay_s=3): "fetch:timeout",
        web.add("/cut.jpg", body=photo[:1000], declared_length=len(photo)): "fetch:truncated",
        web.add("/noai.jpg", body=photo, headers={"X-Robots-Tag": "noai"}): "fetch:opted_out",
        web.add(
            "/to-metadata.jpg", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
        ): "fetch:blocked_address",
        web.add("/to-file.jpg", status=302, headers={"Location": "file:///etc/passwd"}): "fetch:bad_url",
    }
    rows = [{"url": good, "caption": "a cup of coffee"}] + [{"url": u, "caption": "x y"} for u in cases]
    kept, rejects = collect(tmp_path, rows, LOOPBACK)
    _, capped = collect(tmp_path / "cap", [{"url": good, "caption": "x y"}], {**LOOPBACK, "max_bytes": len(photo) - 1})
    assert capped[good]["reason"] == "fetch:too_large"

    assert [r["source_uri"] for r in kept] == [good] and kept[0]["media_bytes"] == photo
    assert kept[0]["media_ext"] == "jpg"
    assert {u: r["reason"] for u, r in rejects.items()} == cases
    assert len(kept) + len(rejects) == len(rows)


def test_the_next_batch_downloads_while_a_slow_one_finishes(tmp_path, web):
    """Batches of 4: the first holds a download that takes 1.5 s; the second batch's downloads start
    before it ends (no batch waits for the slowest of the one before) and the step keeps file order."""
    from tasks.build.engine import run_step

    photo = image_bytes((64, 48))
    urls = [web.add(f"/{i}.jpg", body=photo, delay_s=1.5 if i == 0 else 0) for i in range(8)]
    uri = tmp_path / "urls.jsonl"
    uri.write_text("\n".join(json.dumps({"url": u, "caption": f"photo {i}"}) for i, u in enumerate(urls)))
    plan = plan_collect([make_source(name="u", kind="urls", uri=str(uri))], "p", "r", ShardConfig(), 1, str(tmp_path))
    settings = CollectStage.Config(**{**LOOPBACK, "timeout_s": 5}).model_dump(mode="json")
    result = run_step("collect", [("collect", settings)], plan.shards[0], str(tmp_path / "out"), batch_items=4)
    assert result.stages[0].n_kept == 8
    slow_done = web.times["/0.jpg"][1]
    assert all(web.times[f"/{i}.jpg"][0] < slow_done for i in range(4, 8)), web.times
    assert [r["source_uri"] for r in storage.read_parquet(result.uri).to_pylist()] == urls


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["noai"],
        ["NoAI, noindex"],
        ["all"],
        ["mmetl: noai"],
        ["otherbot: noai"],
        ["otherbot: noai", "noimageai"],
        ["MMETL:noimageindex,nofollow"],
        [" mmetl : noai"],
        ["unavailable_after: 25 Jun 2010 15:00:00 PST"],
        ["noai:"],
    ],
)
def test_the_opt_out_rule_is_img2datasets(values):
    from email.message import Message

    from img2dataset.downloader import is_disallowed

    headers = Message()
    for value in values:
        headers["X-Robots-Tag"] = value
    directives = set(NetworkConfig().disallowed_header_directives)
    for token in ("mmetl", None):
        assert opted_out(headers, token, directives) == is_disallowed(headers, token, directives)


def test_private_addresses_are_refused_unless_listed(tmp_path, web):
    url = web.add("/coffee.jpg", body=real_photos()["coffee-0"])
    _, rejects = collect(tmp_path, [{"url": url, "caption": "a cup"}], {**LOOPBACK, "allow_hosts": []})
    assert rejects[url]["reason"] == "fetch:blocked_address" and web.hits["/coffee.jpg"] == 0
    policy = AddressPolicy(("10.0.0.0/8", "files.internal"))
    assert policy.allowed("x", "10.1.2.3") and policy.allowed("files.internal", "192.168.1.1")
    assert not policy.allowed("x", "169.254.169.254") and not policy.allowed("x", "::ffff:127.0.0.1")
    assert policy.allowed("example.org", "93.184.215.14")


def test_a_rerun_fetches_only_what_failed_transiently(tmp_path, web):
    photos = real_photos(turns=2)
    rows = [
        {"url": web.add(f"/{name}.jpg", body=data, fail_first=3 if i % 3 == 0 else 0), "caption": f"photo {name}"}
        for i, (name, data) in enumerate(photos.items())
    ]
    rows.append({"url": web.url + "/gone.jpg", "caption": "never there"})
    network = {**LOOPBACK, "retries": 1}
    kept, rejects = collect(tmp_path, rows, network)
    flaky = {f"/{name}.jpg" for i, name in enumerate(photos) if i % 3 == 0}
    assert {r["source_uri"] for r in kept} == {web.url + p for p in set(f"/{n}.jpg" for n in photos) - flaky}
    assert {r["reason"] for u, r in rejects.items() if "gone" not in u} == {"fetch:http_503"}
    first = dict(web.hits)
    kept_again, rejects_again = collect(tmp_path, rows, network)  # same cache: the rerun
    refetched = {p for p in web.hits if web.hits[p] > first.get(p, 0)}
    assert refetched == flaky  # not the successes, not the permanent 404
    assert len(kept_again) == len(photos) and list(rejects_again) == [web.url + "/gone.jpg"]


def test_downloads_are_resized_with_img2dataset_options_and_kept_upright(tmp_path, web):
    from skimage import data as skdata

    coffee = Image.fromarray(skdata.coffee())  # 600 x 400, landscape
    sideways = io.BytesIO()  # stored turned, with the EXIF tag that says how to show it: a phone's photo
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    coffee.transpose(Image.Transpose.ROTATE_90).save(sideways, format="JPEG", quality=95, exif=exif)
    plain = web.add("/coffee.jpg", body=real_photos()["coffee-0"])
    turned = web.add("/phone.jpg", body=sideways.getvalue())
    small = web.add("/small.png", body=image_bytes(size=(40, 30), fmt="PNG"))
    many = [web.add(f"/coffee-{i}.jpg", body=real_photos()["coffee-0"]) for i in range(60)]
    rows = [{"url": u, "caption": "a cup of coffee"} for u in (plain, turned, small, *many)]
    resize = {"image_size": 128, "resize_mode": "keep_ratio", "encode_format": "webp", "encode_quality": 90}
    stdout, stderr = os.fstat(1), os.fstat(2)
    kept, rejects = collect(tmp_path, rows, {**LOOPBACK, "resize": resize, "per_host": 16})
    assert not rejects and len(kept) == len(rows)
    # resizing on 16 threads left this process's stdout and stderr where they were
    assert [(s.st_dev, s.st_ino) for s in (os.fstat(1), os.fstat(2))] == [
        (s.st_dev, s.st_ino) for s in (stdout, stderr)
    ]
    kept = [r for r in kept if r["source_uri"] in (plain, turned, small)]
    images = {r["source_uri"]: Image.open(io.BytesIO(r["media_bytes"])) for r in kept}
    assert {u: (i.format, i.size) for u, i in images.items()} == {
        plain: ("WEBP", (192, 128)),
        turned: ("WEBP", (192, 128)),
        small: ("WEBP", (40, 30)),
    }  # smaller: kept
    assert all(r["media_ext"] == "webp" for r in kept)
    # the phone photo came out upright: its pixels match the plain copy's, not a turned one
    a, b = (np.asarray(images[u].convert("L"), dtype=float) for u in (plain, turned))
    assert np.abs(a - b).mean() < 8
    # measured in the same decode, before encoding: on a photograph, what clean would take of the published
    # bytes (the 40 x 30 noise picture's spread is not: lossy WebP smooths noise away)
    for row in kept:
        again = decode_image(row["media_bytes"])
        assert (row["width"], row["height"]) == (again.width, again.height)
        assert imagehash.hex_to_hash(row["phash"]) - imagehash.hex_to_hash(again.phash) <= 2
        if row["source_uri"] != small:
            assert scores_dict(row)["pixel_std"] == pytest.approx(again.pixel_std, abs=1)

    _, refused = collect(
        tmp_path / "bad",
        [{"url": web.add("/x.gif", body=b"GIF89a" + b"\0" * 40), "caption": "x y"}],
        {**LOOPBACK, "resize": resize},
    )
    assert [r["reason"] for r in refused.values()] == ["fetch:decode"]
    with pytest.raises(ValueError, match="compression level"):
        NetworkConfig(resize={"encode_format": "png", "encode_quality": 95})


def test_a_region_is_cut_from_the_picture_as_served_when_downloads_are_resized(tmp_path, web):
    """Visual Genome boxes are in the served picture's pixels: `network.resize` shrinks the whole image's
    download, and each region is cut from the picture as it came."""
    from .test_datasets import visual_genome_files

    photo = real_photos()["astronaut-0"]  # 512 x 512
    base = web.add("/VG_100K/1.jpg", body=photo).removesuffix("/VG_100K/1.jpg")
    uri = visual_genome_files(tmp_path)
    source = make_source(name="vg", kind="visual_genome", uri=uri, media_root=base, region_crops=True)
    plan = plan_collect([source], "p", "r", ShardConfig(), 1, str(tmp_path / "plan"))
    resize = {"image_size": 128, "resize_mode": "keep_ratio", "encode_format": "jpg", "encode_quality": 90}
    stage = CollectStage(cache_dir=str(tmp_path / "cache"), **LOOPBACK, resize=resize)
    stage.start_shard("shard-00000")
    kept = stage.process(storage.read_parquet(plan.shards[0])).kept.to_pylist()
    pictures = {r["region"] and tuple(r["region"]): Image.open(io.BytesIO(r["media_bytes"])) for r in kept}
    assert {box: p.size for box, p in pictures.items()} == {None: (128, 128), (170, 60, 120, 140): (120, 140),
                                                            (450, 400, 90, 150): (62, 112)}  # fmt: skip
    original = Image.open(io.BytesIO(photo)).convert("RGB")
    face = np.asarray(original.crop((170, 60, 290, 200)), dtype=float)
    assert np.abs(np.asarray(pictures[(170, 60, 120, 140)].convert("RGB"), dtype=float) - face).max() == 0


@pytest.mark.parametrize(
    "mode, bigger_only, size, white_bands",
    [
        ("keep_ratio", True, (192, 128), False),
        ("center_crop", True, (128, 128), False),
        ("keep_ratio_largest", True, (128, 85), False),
        ("border", True, (128, 128), True),
        ("keep_ratio", False, (192, 128), False),
    ],
)
def test_each_img2dataset_resize_mode_gives_its_shape(mode, bigger_only, size, white_bands):
    coffee = real_photos()["coffee-0"]  # 600 x 400
    resize = ImageResizer(
        image_size=128, resize_mode=mode, resize_only_if_bigger=bigger_only, encode_format="png", encode_quality=1
    )
    got = resize(coffee)
    image = Image.open(io.BytesIO(got["media_bytes"]))
    assert (image.format, image.size, got["media_ext"]) == ("PNG", size, "png")
    assert (got["measured"]["width"], got["measured"]["height"]) == size
    top_rows = np.asarray(image.convert("L"))[:20]
    assert (top_rows.min() == 255) == white_bands  # border: the 600 x 400 picture fitted, white above and below
    small = image_bytes(size=(40, 30), fmt="JPEG")
    assert Image.open(io.BytesIO(resize(small)["media_bytes"])).size == ((40, 30) if bigger_only else (171, 128))


def test_clean_keeps_what_the_download_measured_and_decodes_only_to_change_it(tmp_path, web, monkeypatch):
    from tasks import media

    urls = [web.add(f"/{name}.jpg", body=data) for name, data in list(real_photos().items())[:4]]
    rows, network = [{"url": u, "caption": "a photograph"} for u in urls], {**LOOPBACK, "resize": {"image_size": 128}}
    kept, _ = collect(tmp_path, rows, network)
    assert len(kept) == 4 and all(r["phash"] for r in kept)
    hits = dict(web.hits)
    from_the_log, _ = collect(tmp_path, rows, network)
    assert web.hits == hits and from_the_log == kept  # the download log keeps what was measured too
    decodes = []
    real_decode = media.kinds.image.decode_image
    monkeypatch.setattr(media.kinds.image, "decode_image", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))

    as_is = CleanStage().process(pa.Table.from_pylist(kept, schema=SAMPLE_SCHEMA))
    assert decodes == [] and as_is.kept.num_rows == 4
    assert as_is.kept.column("media_bytes").to_pylist() == [r["media_bytes"] for r in kept]
    assert as_is.kept.column("phash").to_pylist() == [r["phash"] for r in kept]

    smaller = CleanStage(image={"resize": {"short_side": 64}}).process(pa.Table.from_pylist(kept, schema=SAMPLE_SCHEMA))
    assert len(decodes) == 4 and set(smaller.kept.column("height").to_pylist()) == {64}
    as_png = CleanStage(image={"format": "png"}).process(pa.Table.from_pylist(kept, schema=SAMPLE_SCHEMA))
    assert len(decodes) == 8 and set(as_png.kept.column("media_ext").to_pylist()) == {"png"}


def test_an_animated_download_is_kept_as_served_for_clean_to_judge(tmp_path, web):
    from skimage import data as skdata

    frames = [Image.fromarray(skdata.astronaut()).rotate(angle) for angle in (0, 90, 180)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    url = web.add("/moving.gif", body=gif.getvalue())
    kept, rejects = collect(tmp_path, [{"url": url, "caption": "an astronaut"}], {**LOOPBACK, "resize": {}})
    assert not rejects and kept[0]["media_bytes"] == gif.getvalue() and kept[0]["phash"] is None
    table = pa.Table.from_pylist(kept, schema=SAMPLE_SCHEMA)
    rejected = CleanStage(image={"animated": "reject"}).process(table).rejected.to_pylist()
    assert [r["reason"] for r in rejected] == ["decode:animated"]
    first = CleanStage(image={"resize": {"short_side": 256}}).process(table).kept.to_pylist()
    assert (first[0]["width"], first[0]["height"], first[0]["media_ext"]) == (256, 256, "jpg")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_download_cache_keeps_whole_entries_only(tmp_path, where, request):
    folder = f"{request.getfixturevalue('s3')}/cache-{tmp_path.name}" if where == "s3" else str(tmp_path / "cache")
    cache = fetch_cache(folder)
    assert type(cache).__name__ == ("FetchObjects" if where == "s3" else "FetchLog")
    photos = list(real_photos().values())[:3]
    for i, data in enumerate(photos):
        cache.put(f"id{i}", f"http://h/{i}.jpg", {"media_bytes": data, "media_ext": "jpg", "meta": {"n": i}})
    cache.put_failure("gone", "http://h/gone.jpg", FetchError("http_404", "404 Not Found"))
    cache.close()
    if where == "local":  # a writer killed in the middle of an entry leaves a torn end
        (log,) = (tmp_path / "cache").glob("*.log")
        whole = log.read_bytes()
        with open(log, "ab") as f:
            f.write(whole[: len(whole) // 3])

    again = fetch_cache(folder)
    for i, data in enumerate(photos):
        assert again.get(f"id{i}") == {
            "uri": f"http://h/{i}.jpg",
            "media_bytes": data,
            "media_ext": "jpg",
            "meta": {"n": i},
        }
    assert again.get("gone") == {
        "uri": "http://h/gone.jpg",
        "failure": {"category": "http_404", "detail": "404 Not Found"},
    }
    assert again.get("never") is None
    assert again.entries()["id1"] == {"uri": "http://h/1.jpg", "media_ext": "jpg", "meta": {"n": 1}}
    assert set(again.entries()) == {"id0", "id1", "id2", "gone"}


def test_video_and_audio_links_come_through_yt_dlp(tmp_path, web):
    video = web.add("/clip.mp4", body=video_bytes(seconds=2.0, audio_seconds=2.0), content_type="video/mp4")
    page = web.add(
        "/watch.html",
        content_type="text/html",
        body=f'<html><head><title>A clip</title></head><body><video src="{video}"></video></body></html>'.encode(),
    )
    sound = web.add("/tone.flac", body=audio_bytes(seconds=12.0), content_type="audio/flac")
    lines = [
        {"url": page, "caption": "a page with a clip", "modality": "video"},
        {"url": sound, "caption": "a tone", "modality": "audio"},
    ]
    (tmp_path / "links.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    sources = [make_source(name="links", kind="urls", uri=str(tmp_path / "links.jsonl"), modality="video")]
    plan = plan_collect(sources, "p", "r", ShardConfig(), 1, str(tmp_path / "plan"))
    table = storage.read_parquet(plan.shards[0])
    rows = table.to_pylist()
    rows[1].update(modality="audio", clip_start_s=2.0, clip_end_s=7.0)  # an AudioCaps-style window
    stage = CollectStage(cache_dir=str(tmp_path / "cache"), **LOOPBACK)
    stage.start_shard("shard-00000")
    out = stage.process(pa.Table.from_pylist(rows, schema=table.schema))
    assert out.rejected.num_rows == 0, out.rejected.to_pylist()
    by_uri = {r["source_uri"]: r for r in out.kept.to_pylist()}
    assert by_uri[page]["media_ext"] == "mp4" and len(by_uri[page]["media_bytes"]) > 1000
    assert json.loads(by_uri[page]["meta"])["webpage_url"] == page  # found in the page by yt-dlp
    from tasks.media.audio import decode_audio

    assert 4.8 <= decode_audio(by_uri[sound]["media_bytes"]).duration_s <= 5.3  # cut to its 5 s window


def test_three_sources_of_three_modalities_build_one_version(tmp_path, web):
    photos = real_photos()
    coco_dir = tmp_path / "coco"
    (coco_dir / "train2017").mkdir(parents=True)
    names = list(photos)[:3]
    for i, name in enumerate(names):
        (coco_dir / "train2017" / f"{i:012d}.jpg").write_bytes(photos[name])
    (coco_dir / "captions.json").write_text(
        json.dumps(
            {
                "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(3)],
                "annotations": [
                    {"id": 10 * i + k, "image_id": i, "caption": f"{names[i]} seen from angle {k}"}
                    for i in range(3)
                    for k in range(5)
                ],
            }
        )
    )
    clotho_dir = tmp_path / "clotho" / "development"
    clotho_dir.mkdir(parents=True)
    (clotho_dir / "tone.wav").write_bytes(audio_bytes(seconds=2.0, fmt="wav"))
    (tmp_path / "clotho" / "captions.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        "tone.wav,a steady tone,a beep that lasts,a long high beep,an electronic tone,a sine wave hums\n"
    )
    clip = web.add("/v1.mp4", body=video_bytes(seconds=2.0, audio_seconds=2.0), content_type="video/mp4")
    (tmp_path / "webvid.csv").write_text(
        f"videoid,contentUrl,duration,page_dir,name\n1,{clip},PT00H00M02S,p,a short clip\n"
    )
    sources = (
        make_source(
            name="coco", kind="coco", uri=str(coco_dir / "captions.json"), media_root=str(coco_dir / "train2017")
        ),
        make_source(
            name="clotho", kind="clotho", uri=str(tmp_path / "clotho" / "captions.csv"), media_root=str(clotho_dir)
        ),
        make_source(name="webvid", kind="webvid", uri=str(tmp_path / "webvid.csv")),
    )
    recipe = Recipe(name="mix", sources=sources, network=LOOPBACK)
    layout, manifest = build_in_process(list(sources), str(tmp_path / "out"), recipe=recipe)
    assert manifest["samples"] == 5 and manifest["texts"] == 15 + 5 + 1
    index = [
        r for split in manifest["splits"] for r in pq.read_table(f"{layout.version}/{split}/index.parquet").to_pylist()
    ]
    assert sorted(r["modality"] for r in index) == ["audio", "image", "image", "image", "video"]
    assert {r["source"] for r in index} == {"coco", "clotho", "webvid"}


def test_download_failures_are_counted_by_source_and_host(tmp_path, web):
    photo = real_photos()["rocket-0"]
    rows = [
        {"url": web.add("/rocket.jpg", body=photo), "caption": "a rocket on its pad"},
        {"url": web.url + "/a.jpg", "caption": "missing one"},
        {"url": web.url + "/b.jpg", "caption": "missing two"},
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = make_source(name="web", kind="urls", uri=str(tmp_path / "list.jsonl"))
    layout, manifest = build_in_process(
        [source], str(tmp_path / "out"), recipe=Recipe(name="w", source=source, network=LOOPBACK)
    )
    stats = json.loads(storage.read_bytes(storage.join(layout.version, "stats.json")))
    assert manifest["samples"] == 1 and stats["fetch_failures_by_source"] == {"web": {"fetch:http_404": 2}}
    assert stats["top_failing_hosts"] == [["127.0.0.1", 2]]
