"""Image cleaning on real photographs in the forms the web serves them: EXIF-rotated, CMYK, 16-bit,
palette and alpha PNGs, animated GIFs, blank frames, and the recipe's resize preset."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from tasks.media import MediaError
from tasks.media.image import ImagePreset, decode_image, largest_channel_std

from .realmedia import skimage_photos


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skimage_photos(("chelsea",))["chelsea"])  # 451 x 300, a cat


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def distance(a: Image.Image, b: Image.Image) -> int:
    return imagehash.phash(a) - imagehash.phash(b)


def test_an_exif_rotated_photo_is_published_upright_with_upright_facts(photo):
    # a camera held upright stores the pixels sideways and says so in EXIF: orientation 6 = turn 90° clockwise
    sideways = photo.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(sideways, quality=92, exif=exif))
    assert decoded.oriented and (decoded.width, decoded.height) == photo.size
    published = opened(decoded.data)
    assert published.size == photo.size and distance(published, photo) <= 2
    assert imagehash.hex_to_hash(decoded.phash) - imagehash.phash(photo) <= 2


def test_cmyk_16_bit_palette_and_alpha_images_become_faithful_rgb(photo):
    cmyk = opened(decode_image(encode(photo.convert("CMYK"), quality=95)).data)
    assert cmyk.mode == "RGB" and distance(cmyk, photo) <= 2
    assert abs(np.asarray(cmyk, np.float32).mean() - np.asarray(photo, np.float32).mean()) < 8

    grey = photo.convert("L")
    sixteen = Image.fromarray(np.asarray(grey, np.uint16) * 257)  # the same picture at 16 bits a sample
    assert sixteen.mode in ("I;16", "I")
    from_16 = opened(decode_image(encode(sixteen, "PNG")).data)
    assert (
        abs(np.asarray(from_16.convert("L"), np.float32).mean() - np.asarray(grey, np.float32).mean()) < 2
    )  # scaled, not clipped

    transparent = photo.convert("RGBA")
    transparent.putalpha(0)  # fully transparent: what shows is the background
    assert np.asarray(opened(decode_image(encode(transparent, "PNG")).data)).min() > 245  # white, not black

    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    assert opened(decode_image(encode(palette, "PNG", transparency=0)).data).mode == "RGB"


def test_an_animated_gif_gives_its_first_frame_or_a_reject(photo):
    frames = [photo.convert("P"), photo.rotate(180).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    first = opened(decode_image(gif.getvalue()).data)
    assert distance(first, photo) <= 4 and distance(first, photo.rotate(180)) > 10
    with pytest.raises(MediaError) as e:
        decode_image(gif.getvalue(), preset=ImagePreset(animated="reject"))
    assert e.value.code == "animated"


def test_blank_images_score_near_zero_and_photos_do_not(photo):
    assert decode_image(encode(photo)).pixel_std > 20
    assert decode_image(encode(Image.new("RGB", (300, 200), (40, 90, 160)))).pixel_std < 1
    noisy_grey = np.clip(np.random.default_rng(0).normal(128, 0.6, (200, 300)), 0, 255).astype(np.uint8)
    assert decode_image(encode(Image.fromarray(noisy_grey))).pixel_std < 2  # sensor noise on a blank frame


def test_the_blankness_score_is_the_largest_channel_std_of_the_pixels(photo):
    red_on_green = Image.new("RGB", (200, 100), (200, 0, 0))
    red_on_green.paste((0, 120, 0), (100, 0, 200, 100))  # about equally bright: blank in grey, not in colour
    for image in (photo, photo.convert("L"), red_on_green, Image.new("RGB", (30, 20), (9, 9, 9))):
        pixels = np.asarray(image, dtype=np.float64).reshape(image.height * image.width, -1)
        assert largest_channel_std(image) == pytest.approx(pixels.std(axis=0).max(), abs=1e-6)
    assert largest_channel_std(red_on_green) > 50


def test_the_resize_preset_shapes_the_pixels_and_the_phash_stays_the_whole_pictures(photo):
    big = photo.resize((photo.width * 3, photo.height * 3))  # 1353 x 900: draft mode decodes at 1/2
    preset = ImagePreset(short_side=256, center_crop=224, format="jpg", quality=90)
    decoded = decode_image(encode(big, quality=92), preset=preset)
    assert (decoded.width, decoded.height) == (224, 224) and opened(decoded.data).size == (224, 224)
    assert imagehash.hex_to_hash(decoded.phash) - imagehash.phash(big) <= 2  # of the whole, not the crop
    small = decode_image(encode(photo.resize((200, 133))), preset=ImagePreset(short_side=256))
    assert (small.width, small.height) == (200, 133)  # never scaled up
    # a draft that decodes at exactly the asked size leaves nothing to resize: still not the file's own bytes
    square = decode_image(encode(photo.resize((512, 512))), preset=ImagePreset(short_side=256))
    assert (square.width, square.height) == opened(square.data).size == (256, 256)


def test_an_rgb_jpeg_that_needs_nothing_is_published_byte_for_byte(photo):
    data = encode(photo, quality=90)
    assert decode_image(data).data == data
    assert decode_image(data, preset=ImagePreset(format="png")).data != data
