"""Cut a time window out of an audio or video file.

Video is cut without re-encoding (PyAV stream copy), from the keyframe at or before the window's start
(a cut elsewhere could not decode), timestamps shifted to start at zero. Audio alone is decoded and
cut to the sample into 16-bit WAV: clean encodes it to FLAC next, so nothing is lost, and a copied
FLAC or MP4 header would still announce the whole file's length.
"""

from __future__ import annotations

import io

import av

from . import MediaError

# FFmpeg demuxer names to the muxer that writes the same container, and the file extension
MUXERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": ("mp4", "mp4"),
    "matroska,webm": ("matroska", "mkv"),
    "wav": ("wav", "wav"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "mp3"),
    "ogg": ("ogg", "ogg"),
    "avi": ("avi", "avi"),
}


def cut(data: bytes, start: float, end: float | None) -> tuple[bytes, str]:
    """The window [start, end) of a file (end None: to its end), and the extension of what is returned."""
    data, ext, _ = cut_from(data, start, end)
    return data, ext


def cut_from(data: bytes, start: float, end: float | None) -> tuple[bytes, str, float]:
    """`cut`, and where in the file the copy begins: `start` for sound, the keyframe at or before it for video."""
    try:
        src = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError("corrupt", f"FFmpeg cannot open it: {e}") from None
    with src:
        if src.format.name not in MUXERS:
            raise MediaError("unsupported_container", f"cannot cut a window out of {src.format.name}")
        muxer, ext = MUXERS[src.format.name]
        streams = [s for s in src.streams if s.type in ("audio", "video")]
        if not streams:
            raise MediaError("empty", "no audio or video stream to cut")
        # a file with a video track is cut at a keyframe, so that its first frame decodes
        video = next((s for s in streams if s.type == "video"), None)
        if video is None:
            return _cut_audio(src, streams[0], start, end), "wav", start
        out_buf = io.BytesIO()
        with av.open(out_buf, mode="w", format=muxer) as dst:
            copies = {s.index: dst.add_stream_from_template(s) for s in streams}
            begin = None  # where the copy starts: the keyframe at or before `start`
            try:
                src.seek(int(start * av.time_base), backward=True)
                for packet in src.demux(streams):
                    if packet.pts is None or packet.dts is None or packet.size == 0:
                        continue
                    t = float(packet.pts * packet.time_base)
                    if end is not None and t >= end:
                        continue
                    if begin is None:
                        if not (packet.stream is video and packet.is_keyframe):
                            continue
                        begin = t
                    if t < begin:
                        continue
                    offset = int(begin / packet.time_base)
                    packet.pts -= offset
                    packet.dts -= offset
                    packet.stream = copies[packet.stream.index]
                    dst.mux(packet)
            except av.error.FFmpegError as e:
                raise MediaError("corrupt", f"demux failed while cutting: {e}") from None
    if out_buf.tell() == 0:
        raise MediaError("empty", f"nothing in the window {start:g}-{end}")
    return out_buf.getvalue(), ext, begin


def _cut_audio(src, stream, start: float, end: float | None) -> bytes:
    rate = stream.codec_context.sample_rate or stream.rate
    layout = stream.codec_context.layout.name
    first, last = round(start * rate), None if end is None else round(end * rate)
    out_buf = io.BytesIO()
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    position = 0  # samples decoded so far
    with av.open(out_buf, mode="w", format="wav") as dst:
        out_stream = dst.add_stream("pcm_s16le", rate=rate, layout=layout)
        try:
            for frame in src.decode(stream):
                for chunk in resampler.resample(frame):
                    samples = chunk.to_ndarray()  # (1, n * channels), interleaved
                    n = chunk.samples
                    lo, hi = max(first - position, 0), n if last is None else min(last - position, n)
                    position += n
                    if hi <= lo:
                        continue
                    piece = av.AudioFrame.from_ndarray(
                        samples[:, lo * chunk.layout.nb_channels : hi * chunk.layout.nb_channels],
                        format="s16",
                        layout=layout,
                    )
                    piece.sample_rate = rate
                    for packet in out_stream.encode(piece):
                        dst.mux(packet)
                if last is not None and position >= last:
                    break
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed while cutting: {e}") from None
        for packet in out_stream.encode(None):
            dst.mux(packet)
    if position <= first:
        raise MediaError("empty", f"the audio ends at {position / rate:.3f} s, before the window's start {start:g} s")
    return out_buf.getvalue()
