"""Video with PyAV (FFmpeg): decode every video frame and the audio track in one demux pass.

Durations come from frame timestamps, not frame count / nominal rate, so variable-frame-rate video
and streams that start late measure right. Truncation is judged against what the file declares:
the video stream's frame count where it has one (MP4), else the container's duration, compared
with the end of the longest decoded stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import av

from . import MediaError
from .audio import TRUNCATION_TOLERANCE, open_container
from .fingerprint import KeyframeHashes, SoundFingerprint

# FFmpeg demuxer name -> the extension we publish under (its matroska demuxer also reads WebM,
# and .mkv names both correctly)
_EXTENSIONS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi"}


@dataclass
class DecodedVideo:
    data: bytes
    ext: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    video_codec: str
    audio_codec: str | None
    sample_rate: int | None
    audio_duration_s: float | None
    keyframe_phashes: list[str]  # one frame a second
    fingerprint: list[int]  # raw Chromaprint of the audio track; empty without one


class _Span:
    """First start and last end, in seconds, of the frames of one stream."""

    def __init__(self):
        self.start: float | None = None
        self.end: float | None = None

    def add(self, start: float | None, length: float) -> None:
        if start is None:  # no timestamp: continue from the previous frame
            start = self.end or 0.0
        self.start = start if self.start is None else min(self.start, start)
        self.end = start + length if self.end is None else max(self.end, start + length)

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else self.end - self.start


def decode_video(data: bytes) -> DecodedVideo:
    with open_container(data) as container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"container {container.format.name} has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        ext = _EXTENSIONS.get(container.format.name)
        if ext is None:
            raise MediaError("unsupported_container", container.format.name)
        nominal_fps = float(video.average_rate or video.guessed_rate or 0)
        declared_frames = video.frames or 0
        # the container's duration, compared with where the decoded streams end: Matroska states an
        # end time, other formats a span; against the absolute end both err towards keeping the file
        declared_end = container.duration / av.time_base if container.duration else None
        rate = audio.codec_context.sample_rate if audio is not None else None

        frames, width, height = 0, 0, 0
        video_span, audio_span = _Span(), _Span()
        keyframes, sound = KeyframeHashes(), SoundFingerprint()
        frame_s = 1 / nominal_fps if nominal_fps else 0.0
        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if packet.stream is video:
                        frames += 1
                        width, height = frame.width, frame.height
                        video_span.add(frame.time, frame_s)
                        keyframes.feed(frame, (frame.time if frame.time is not None else video_span.end - frame_s)
                                       - video_span.start)
                    elif rate:
                        audio_span.add(frame.time, frame.samples / rate)
                        sound.feed(frame)
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {frames} frames: {e}") from None

    if frames == 0 or nominal_fps <= 0:
        raise MediaError("empty", "no video frames decoded")
    if declared_frames and frames < TRUNCATION_TOLERANCE * declared_frames:
        raise MediaError("truncated", f"decoded {frames} of {declared_frames} declared frames")
    if not declared_frames and declared_end:
        decoded_end = max(s.end for s in (video_span, audio_span) if s.end is not None)
        if decoded_end < TRUNCATION_TOLERANCE * declared_end - frame_s:
            raise MediaError("truncated", f"streams end at {decoded_end:.3f}s of a declared {declared_end:.3f}s")
    duration = video_span.seconds
    return DecodedVideo(
        data=data,
        ext=ext,
        width=width,
        height=height,
        fps=frames / duration if duration else nominal_fps,
        num_frames=frames,
        duration_s=duration,
        video_codec=video.codec_context.name,
        audio_codec=audio.codec_context.name if audio is not None else None,
        sample_rate=rate,
        audio_duration_s=audio_span.seconds if audio is not None else None,
        keyframe_phashes=keyframes.hashes,
        fingerprint=sound.result() if audio is not None else [],
    )
